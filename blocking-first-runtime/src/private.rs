//! What generated code calls. Not a public API: names and shapes may change in any release.

use std::future::Future;

pub use crate::driver::{Body, Drive, drive_body as drive};
pub use crate::mode::{EnterIo, LeaveIo, Mode};

/// Boxes the body. Its bound is the only place the body is required to be `Send`, so a body that
/// is not fails with this function's name in the error: the body moves between the runtime and
/// blocking threads, so anything it holds across an `io!` region or an `.await` must be `Send`.
pub fn body_must_be_send<F>(body: F) -> Body<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Body(Box::pin(body))
}

/// `parallel!` expands to these.
pub mod parallel {
    pub use crate::parallel::scope;

    /// Runs the last branch on the caller's thread (a function, so a branch that mutates what it
    /// borrows needs no `mut` binding).
    pub fn run_inline<T>(branch: impl FnOnce() -> T) -> T {
        branch()
    }
}
