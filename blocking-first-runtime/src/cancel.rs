//! Cancellation as blocking code sees it: [`is_cancelled`], [`check_cancelled`], [`Cancelled`].
//!
//! A body's driver owns the body and knows when its caller let go (the handler's future was
//! dropped: the client went away, a timeout fired, the runtime shuts down). The body stops at its
//! next region boundary by itself; these let its blocking code stop sooner, between rows of a
//! long loop, at the cost of one thread-local read and one atomic load per check.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use tokio::runtime::Id;

use crate::exec::Dying;
use crate::mode::Shared;

/// The body whose code this thread runs now (a stretch of its blocking code, one of its
/// `parallel` branches, or its `io!` code being polled), and the shutdown of the runtime it
/// belongs to if this thread is one of that runtime's loops.
type Current = Option<(Arc<Shared>, Option<Dying>)>;

thread_local! {
    static BODY: RefCell<Current> = const { RefCell::new(None) };
}

/// Whether the body whose blocking code calls this was cancelled: its caller dropped the body's
/// future (a client that went away, a `TimeoutLayer` that fired, a task aborted), or the runtime
/// it runs on is shutting down.
///
/// True in the body's blocking code, in its `parallel!` / [`parallel::scope`] /
/// [`parallel::map`] branches, and in an annotated function it awaits (a nested body sees its
/// outermost caller's cancellation: the body that polled it first is its caller, so a body's
/// future shared between callers sees the first one's). False outside every body, and in a body
/// whose caller still waits. Once the caller has let go, it stays true.
///
/// A cancelled body stops by itself at its next `io!` region or `.await` that waits; this is for
/// the long blocking work in between. The caller is gone: whatever the body returns from here is
/// dropped, so returning early loses nothing.
///
/// ```
/// use blocking_first::{blocking_first, is_cancelled};
///
/// #[blocking_first]
/// async fn sum_of_squares(n: u64) -> Option<u64> {
///     let mut sum = 0u64;
///     for i in 0..n {
///         if i % 1024 == 0 && is_cancelled() {
///             return None; // nobody waits for the answer any more
///         }
///         sum = sum.wrapping_add(i * i);
///     }
///     Some(sum)
/// }
///
/// #[tokio::main]
/// async fn main() {
///     assert_eq!(sum_of_squares(4).await, Some(14));
///     assert!(!is_cancelled()); // outside every body
/// }
/// ```
///
/// [`parallel::scope`]: crate::parallel::scope
/// [`parallel::map`]: crate::parallel::map
#[must_use]
pub fn is_cancelled() -> bool {
    BODY.with_borrow(|current| {
        current.as_ref().is_some_and(|(body, dying)| {
            body.is_cancelled() || dying.as_ref().is_some_and(Dying::is_set)
        })
    })
}

/// `Err(Cancelled)` once [`is_cancelled`] is true, so that `?` stops the blocking work of a
/// body whose caller is gone.
///
/// ```
/// use blocking_first::{Cancelled, blocking_first, check_cancelled};
///
/// #[blocking_first]
/// async fn export(rows: Vec<String>) -> Result<String, Cancelled> {
///     let mut csv = String::new();
///     for row in rows {
///         check_cancelled()?; // the client left: stop, give the thread and the slot back
///         csv.push_str(&row);
///         csv.push('\n');
///     }
///     Ok(csv)
/// }
///
/// #[tokio::main]
/// async fn main() {
///     let csv = export(vec!["a,1".into(), "b,2".into()]).await;
///     assert_eq!(csv.unwrap(), "a,1\nb,2\n");
/// }
/// ```
///
/// # Errors
///
/// [`Cancelled`] if the body's caller dropped its future or its runtime is shutting down.
pub fn check_cancelled() -> Result<(), Cancelled> {
    if is_cancelled() {
        Err(Cancelled::default())
    } else {
        Ok(())
    }
}

/// The error of [`check_cancelled`]: the caller of the body stopped waiting for it.
///
/// Nobody sees a cancelled body's result, so what matters is that it converts: into
/// `Box<dyn Error + Send + Sync>` and `anyhow::Error` as any error does, and into an error enum of
/// yours with a `From` impl:
///
/// ```
/// use blocking_first::Cancelled;
///
/// #[derive(Debug)]
/// enum AppError {
///     Cancelled,
///     Db(String),
/// }
///
/// impl From<Cancelled> for AppError {
///     fn from(_: Cancelled) -> AppError {
///         AppError::Cancelled
///     }
/// }
///
/// let boxed: Box<dyn std::error::Error + Send + Sync> = Cancelled::default().into();
/// assert_eq!(boxed.to_string(), Cancelled::default().to_string());
/// assert!(matches!(AppError::from(Cancelled::default()), AppError::Cancelled));
/// # let _ = AppError::Db(String::new());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "cancelled: the caller of this #[blocking_first] function stopped waiting for it \
             (its future was dropped, or its runtime is shutting down)",
        )
    }
}

impl std::error::Error for Cancelled {}

/// The body whose code this thread runs now, for a branch or a nested body to inherit.
pub(crate) fn current_body() -> Option<Arc<Shared>> {
    BODY.with_borrow(|current| current.as_ref().map(|(body, _)| body.clone()))
}

/// Makes `body` the one whose code this thread runs, until dropped. `runtime`: the runtime it
/// belongs to, whose shutdown cancels it when this thread is one of that runtime's loops.
pub(crate) fn enter_body(body: Option<Arc<Shared>>, runtime: Option<Id>) -> InBody {
    let dying = runtime.and_then(crate::exec::dying);
    InBody(BODY.replace(body.map(|body| (body, dying))))
}

/// Guard from [`enter_body`]: puts the previous body back (also when a poll panics).
pub(crate) struct InBody(Current);

impl Drop for InBody {
    fn drop(&mut self) {
        let previous = self.0.take();
        // Into a local first: the body dropped by `replace` may be the last handle to a state
        // whose drop runs code that reads `BODY`.
        let current = BODY.replace(previous);
        drop(current);
    }
}
