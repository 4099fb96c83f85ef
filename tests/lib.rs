//! The README's examples, as doc tests (run by `cargo test --workspace`): they use this
//! package's dev-dependencies, so the library's own examples need not build them.
#![doc = include_str!("../README.md")]
