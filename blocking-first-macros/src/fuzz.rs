//! Adversarial input to the macro (filled in by the hardening tests).
