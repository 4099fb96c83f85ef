//! No library: this package only holds the compile-error tests in `tests/`.
