// The README's and the guide's examples are compiled and run as the doc tests of the
// `blocking-first-tests` package (`tests/lib.rs`), whose dependencies (an HTTP client among them)
// the library's examples do not need to build.
//
// `guide_links.md` comes first: where README.md and the guide's pages, read on GitHub, link to
// `docs/*.md` files, the first definition of a link label wins, so on docs.rs the same links go
// to the guide's modules (checked by rustdoc) and to the benchmark results in the repository.
#![cfg_attr(
    not(doctest),
    doc = include_str!("guide_links.md"),
    doc = include_str!("../README.md")
)]
#![warn(missing_docs)]

/// Runs an `async fn`'s body as blocking code on tokio's blocking pool.
///
/// Inside the body, `io!(..)` marks async regions (run on the runtime, holding no thread while
/// they wait) and `parallel!(a, b)` runs blocking branches side by side. See the
/// [crate docs](crate) for the expansion and [the guide](guide) for the rest.
///
/// Arguments:
/// - `limit = PATH`: the `static` [`Limit`](limit::Limit) whose slots this function's blocking
///   code takes (default: [`limit::global()`]).
/// - `crate = path`: where this crate is, if it was renamed in `Cargo.toml`.
///
/// ```
/// use std::time::Duration;
///
/// use blocking_first::blocking_first;
/// use blocking_first::limit::Limit;
///
/// static DB: Limit = Limit::new("db", 4);
///
/// #[blocking_first(limit = DB)]
/// async fn word_count(text: String) -> usize {
///     // Blocking code: on tokio's blocking pool, at most 4 bodies at once.
///     let words = text.split_whitespace().count();
///     // Async code: on the runtime, holding no thread (and no slot) while it waits.
///     io!(tokio::time::sleep(Duration::from_millis(1)).await);
///     words
/// }
///
/// #[tokio::main]
/// async fn main() {
///     assert_eq!(word_count("one two three".into()).await, 3);
/// }
/// ```
pub use blocking_first_macros::blocking_first;

pub use blocking_first_runtime::limit;
pub use blocking_first_runtime::observe;
// `pool` (feature `r2d2`), present whenever the runtime has it; without it, nothing to import.
#[allow(unused_imports)]
pub use blocking_first_runtime::integrations::*;
pub use blocking_first_runtime::parallel;
pub use blocking_first_runtime::{Cancelled, check_cancelled, is_cancelled};
pub use blocking_first_runtime::{Stats, reset_peak, stats};

#[doc(hidden)]
pub use blocking_first_runtime::__private;

/// The guide: longer pages, whose examples are compiled and run as doc tests.
///
/// - [The main example](guide::example): the notes service, what it prints, what to try, where
///   each construct is; the hello and diesel examples.
/// - [Caps, connections and pools](guide::connections): sizing a `Limit`, `pool::Pool`,
///   connections across regions and in `parallel!` branches, the starvation detector.
/// - [Nested calls](guide::nested_calls): annotated functions awaited from blocking code, and
///   `Handle::block_on` in a branch.
/// - [Semantics and limits](guide::semantics): where each part runs, the rules of the
///   attribute, branches known at run time.
/// - [Under overload](guide::overload): a bounded queue and `ShedLayer`, measured.
/// - [Observing it in production](guide::observing): each body's time split in tracing,
///   metrics and a list of bodies in flight; the detectors; what it costs.
/// - [Adaptive caps](guide::adaptive): `Limit::adaptive` finds the concurrency a resource
///   serves best; the global limit adapts by default; shedding by time in queue.
/// - [Cancellation](guide::cancellation): `is_cancelled()` and `check_cancelled()` stop the
///   blocking work of a request whose client is gone; what cancels a handler in axum, measured.
/// - [Guarantees](guide::guarantees): what holds and what does not, each with the test that
///   checks it.
/// - [Benchmarks](guide::benchmarks): what a hop costs, and six ways to write one handler under
///   load.
/// - [Coming from `interact`, `spawn_blocking` or `block_in_place`](guide::coming_from): one
///   handler written each way.
///
/// Each page is a file under `docs/` in the repository. Its examples run as doc tests of the
/// `blocking-first-tests` package, which has their dependencies.
pub mod guide {
    #[cfg_attr(
        not(doctest),
        doc = include_str!("guide_links.md"),
        doc = include_str!("../docs/example.md")
    )]
    pub mod example {}

    #[cfg_attr(
        not(doctest),
        doc = include_str!("guide_links.md"),
        doc = include_str!("../docs/connections.md")
    )]
    pub mod connections {}

    #[cfg_attr(
        not(doctest),
        doc = include_str!("guide_links.md"),
        doc = include_str!("../docs/nested_calls.md")
    )]
    pub mod nested_calls {}

    #[cfg_attr(
        not(doctest),
        doc = include_str!("guide_links.md"),
        doc = include_str!("../docs/semantics.md")
    )]
    pub mod semantics {}

    #[cfg_attr(
        not(doctest),
        doc = include_str!("guide_links.md"),
        doc = include_str!("../docs/overload.md")
    )]
    pub mod overload {}

    #[cfg_attr(
        not(doctest),
        doc = include_str!("guide_links.md"),
        doc = include_str!("../docs/observing.md")
    )]
    pub mod observing {}

    #[cfg_attr(
        not(doctest),
        doc = include_str!("guide_links.md"),
        doc = include_str!("../docs/guarantees.md")
    )]
    pub mod guarantees {}

    #[cfg_attr(
        not(doctest),
        doc = include_str!("guide_links.md"),
        doc = include_str!("../docs/benchmarks.md")
    )]
    pub mod benchmarks {}

    #[cfg_attr(
        not(doctest),
        doc = include_str!("guide_links.md"),
        doc = include_str!("../docs/cancellation.md")
    )]
    pub mod cancellation {}

    #[cfg_attr(
        not(doctest),
        doc = include_str!("guide_links.md"),
        doc = include_str!("../docs/adaptive.md")
    )]
    pub mod adaptive {}

    #[cfg_attr(
        not(doctest),
        doc = include_str!("guide_links.md"),
        doc = include_str!("../docs/coming_from.md")
    )]
    pub mod coming_from {}
}

/// An async region: `io!(..)` runs its expression (or `io!({ .. })` its block) on the tokio
/// runtime, holding no blocking thread while it waits. Its value is the expression's value.
/// `io! { .. }` works too, but rustfmt formats only the parenthesised form.
///
/// Only valid directly in the body of a [`#[blocking_first]`](blocking_first) function; the
/// attribute rewrites it. Anywhere else this fallback reports the misuse. Inside it, `.await`,
/// `?` and `return` work as in the function itself:
///
/// ```
/// use blocking_first::blocking_first;
///
/// async fn fetch(id: u32) -> Result<String, std::io::Error> {
///     tokio::task::yield_now().await;
///     Ok(format!("note {id}"))
/// }
///
/// #[blocking_first]
/// async fn title(id: u32) -> Result<String, std::io::Error> {
///     let text = io!(fetch(id).await?); // a `?` here returns from `title`
///     Ok(text.to_uppercase()) // blocking code again
/// }
///
/// #[tokio::main]
/// async fn main() {
///     assert_eq!(title(7).await.unwrap(), "NOTE 7");
/// }
/// ```
#[macro_export]
macro_rules! io {
    ($($region:tt)*) => {
        ::core::compile_error!(
            "`io!` is only valid in the body of a #[blocking_first] async fn, outside closures, \
             async blocks and other macros' arguments: add #[blocking_first] to the function, or \
             bind the region's value to a local first (`let v = io! { .. };`); if another \
             attribute such as #[axum::debug_handler] is above #[blocking_first], put \
             #[blocking_first] first"
        )
    };
}

/// Runs blocking branches side by side: `parallel!(a, b)` evaluates to `(a_value, b_value)`.
///
/// Only valid directly in the body of a [`#[blocking_first]`](blocking_first) function, outside
/// `io!`; the attribute rewrites it. In other blocking code use [`parallel::scope`] or
/// [`parallel::map`]. `parallel! { a, b }` works too, but rustfmt formats only the parenthesised
/// form. Branches borrow the function's locals:
///
/// ```
/// use blocking_first::blocking_first;
///
/// #[blocking_first]
/// async fn stats(numbers: Vec<u64>) -> (u64, u64) {
///     parallel!(
///         numbers.iter().sum::<u64>(), // both branches borrow `numbers`
///         numbers.iter().copied().max().unwrap_or(0),
///     )
/// }
///
/// #[tokio::main]
/// async fn main() {
///     assert_eq!(stats(vec![3, 1, 4]).await, (8, 4));
/// }
/// ```
#[macro_export]
macro_rules! parallel {
    ($($branches:tt)*) => {
        ::core::compile_error!(
            "`parallel!` is only valid in the body of a #[blocking_first] async fn, outside \
             closures, async blocks and other macros' arguments (if another attribute such as \
             #[axum::debug_handler] is above #[blocking_first], put #[blocking_first] first); \
             elsewhere in blocking code use `blocking_first::parallel::scope` or \
             `blocking_first::parallel::map`"
        )
    };
}
