//! Where dispatched branches run: the loops of the scope's limit.

use crate::limit::Limit;

/// Where dispatched branches run: the blocking loops of the scope's limit (in the loom models,
/// loom threads).
#[derive(Debug, Clone)]
pub(super) struct Pool {
    #[cfg(not(blocking_first_loom))]
    runtime: tokio::runtime::Handle,
}

impl Pool {
    #[cfg(not(blocking_first_loom))]
    pub(super) fn current() -> Option<Pool> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(Pool { runtime })
    }

    /// Runs `task` on a loop of `limit` if one is idle or can start now; `false` if none can
    /// (the task is dropped unrun and the caller runs the branch).
    #[cfg(not(blocking_first_loom))]
    pub(super) fn spawn(
        &self,
        limit: &'static Limit,
        task: impl FnOnce() + Send + 'static,
    ) -> bool {
        let job = Box::new(BranchJob {
            task,
            runtime: self.runtime.clone(),
            span: crate::span::Span::current(),
            body: crate::cancel::current_body(),
        });
        crate::exec::submit(limit, job, crate::exec::Priority::Branch, true).is_ok()
    }

    #[cfg(blocking_first_loom)]
    pub(super) fn current() -> Option<Pool> {
        Some(Pool {})
    }

    #[cfg(blocking_first_loom)]
    pub(super) fn spawn(
        &self,
        _limit: &'static Limit,
        task: impl FnOnce() + Send + 'static,
    ) -> bool {
        drop(loom::thread::spawn(task));
        true
    }
}

/// A branch as a loop's job.
#[cfg(not(blocking_first_loom))]
struct BranchJob<F> {
    task: F,
    runtime: tokio::runtime::Handle,
    /// The caller's span, current in the branch as in the rest of the body.
    span: crate::span::Span,
    /// The body whose branch this is: `is_cancelled` in the branch reads its cancellation.
    body: Option<std::sync::Arc<crate::mode::Shared>>,
}

#[cfg(not(blocking_first_loom))]
impl<F: FnOnce() + Send> crate::exec::Job for BranchJob<F> {
    fn run(self: Box<Self>, _limit: &'static Limit, running: crate::exec::Running) {
        let _runtime = self.runtime.enter();
        // A branch is blocking code of its body: an annotated function it awaits runs here,
        // under this loop's slot, as it would in the body (see `limit::in_stretch`).
        let _marked = crate::limit::InStretch::enter();
        let _entered = self.span.enter();
        let _body = crate::cancel::enter_body(self.body, Some(self.runtime.id()));
        (self.task)();
        drop(running);
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    fn key(&self) -> *const () {
        std::ptr::null()
    }

    fn abandon(self: Box<Self>) {
        // Dropped unrun: the branch's ticket stays queued, and its caller runs it.
    }
}
