//! The README's examples, as doc tests (run by `cargo test --workspace`): they use this
//! package's dev-dependencies, so the library's own examples need not build them.
#![doc = include_str!("../README.md")]

/// The guide's pages (`blocking_first::guide`), whose examples run here as doc tests for the
/// same reason.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../docs/example.md")]
    mod example {}

    #[doc = include_str!("../docs/connections.md")]
    mod connections {}

    #[doc = include_str!("../docs/nested_calls.md")]
    mod nested_calls {}

    #[doc = include_str!("../docs/semantics.md")]
    mod semantics {}

    #[doc = include_str!("../docs/overload.md")]
    mod overload {}

    #[doc = include_str!("../docs/observing.md")]
    mod observing {}

    #[doc = include_str!("../docs/guarantees.md")]
    mod guarantees {}

    #[doc = include_str!("../docs/benchmarks.md")]
    mod benchmarks {}

    #[doc = include_str!("../docs/coming_from.md")]
    mod coming_from {}

    #[doc = include_str!("../docs/cancellation.md")]
    mod cancellation {}

    #[doc = include_str!("../docs/adaptive.md")]
    mod adaptive {}
}
