//! What generated code calls. Not a public API: names and shapes may change in any release.

pub use crate::driver::{Body, Drive, drive_body as drive};
pub use crate::mode::{EnterIo, LeaveIo, Mode};
pub use crate::observe::Site;

/// `parallel!` expands to these.
pub mod parallel {
    pub use crate::parallel::scope;

    /// Runs the last branch on the caller's thread (a function, so a branch that mutates what it
    /// borrows needs no `mut` binding).
    pub fn run_inline<T>(branch: impl FnOnce() -> T) -> T {
        branch()
    }
}
