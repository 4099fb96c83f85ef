//! What generated code calls. Not a public API: names and shapes may change in any release.

use std::future::Future;

pub use crate::driver::drive;
pub use crate::mode::Mode;

/// The identity function, whose bound makes a non-`Send` body fail with this function's name in
/// the error: the body moves between the runtime and blocking threads, so anything it holds across
/// an `io!` region or an `.await` must be `Send`.
pub fn body_must_be_send<F>(body: F) -> F
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    body
}

/// `parallel!` expands to these.
pub mod parallel {
    pub use crate::parallel::{run_inline, scope};
}
