//! A background thread that looks at a list of limits on a period while any of them wants it,
//! and ends after a while with none: the starvation detector (`watchdog`) and the adaptive
//! limits' stall check (`exec::adaptive`) each have one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::sync::lock_std;

/// The list a watching thread looks at, and whether that thread runs.
pub(crate) struct Watcher<T: 'static> {
    name: &'static str,
    every: Duration,
    idle_exit: Duration,
    watched: Mutex<Vec<&'static T>>,
    running: AtomicBool,
}

impl<T: Sync> Watcher<T> {
    /// A thread named `name` that looks `every` so often and ends after `idle_exit` in which no
    /// look found anything to watch.
    pub(crate) const fn new(name: &'static str, every: Duration, idle_exit: Duration) -> Self {
        Watcher {
            name,
            every,
            idle_exit,
            watched: Mutex::new(Vec::new()),
            running: AtomicBool::new(false),
        }
    }

    /// Lists `item` (when given: the caller lists each item once) and makes sure the thread
    /// runs, as `body` (which calls [`Watcher::run`]).
    pub(crate) fn watch(&'static self, item: Option<&'static T>, body: fn(&'static Self)) {
        if let Some(item) = item {
            lock_std(&self.watched).push(item);
        }
        // SeqCst here and at the exit in `run` (and on what `wants` reads): a single order in
        // which either this swap sees the thread gone and starts one, or the exiting thread
        // sees what made this call.
        if !self.running.swap(true, Ordering::SeqCst) {
            let spawned = thread::Builder::new()
                .name(self.name.into())
                .spawn(move || body(self));
            if spawned.is_err() {
                // No thread to watch with: the next call tries again.
                self.running.swap(false, Ordering::SeqCst);
            }
        }
    }

    /// The thread's loop: `look` at the listed items every period; it returns whether any
    /// still wants watching. After `idle_exit` of looks that found none the thread ends, unless
    /// an item `wants` it by then (a call to `watch` that saw the thread still running).
    pub(crate) fn run(
        &'static self,
        wants: impl Fn(&T) -> bool,
        mut look: impl FnMut(&[&'static T]) -> bool,
    ) {
        let mut idle = Duration::ZERO;
        loop {
            thread::sleep(self.every);
            let items = lock_std(&self.watched).clone();
            idle = if look(&items) {
                Duration::ZERO
            } else {
                idle + self.every
            };
            if idle >= self.idle_exit {
                self.running.swap(false, Ordering::SeqCst);
                let wanted = lock_std(&self.watched).iter().any(|item| wants(item));
                if !wanted || self.running.swap(true, Ordering::SeqCst) {
                    return;
                }
                idle = Duration::ZERO;
            }
        }
    }
}
