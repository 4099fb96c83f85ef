//! The runtime behind [`#[blocking_first]`](https://docs.rs/blocking-first): a driver that polls
//! one body future on tokio's blocking pool while it runs blocking code and on the runtime while
//! it is in an `io!` region, caps on blocking concurrency, and process-wide counters.
//!
//! Depend on the `blocking-first` crate, which re-exports everything here.
#![warn(missing_docs)]

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
mod cancel;
mod clock;
mod driver;
mod exec;
/// Integrations with other crates, each behind the feature of that crate's name; re-exported at
/// the root of `blocking-first` (`blocking_first::pool`).
#[doc(hidden)]
pub mod integrations;
pub mod limit;
#[cfg(all(test, blocking_first_loom))]
mod loom;
mod mode;
pub mod observe;
pub mod parallel;
mod record;
mod slots;
mod span;
mod stats;
mod sync;
mod ticket;
mod unwind;
mod watchdog;
mod watcher;

pub use cancel::{Cancelled, check_cancelled, is_cancelled};
pub use stats::{Stats, reset_peak, stats};
