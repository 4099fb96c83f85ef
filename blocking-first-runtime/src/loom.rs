//! loom models of the runtime's concurrency protocols, run on the real code (built over loom's
//! primitives by `--cfg blocking_first_loom`, see `sync.rs`):
//!
//! ```sh
//! RUSTFLAGS="--cfg blocking_first_loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test -p blocking-first-runtime --release --lib --target-dir target/loom -- loom
//! ```
//!
//! tokio's blocking pool does not run under loom, so the models drive the protocol units
//! directly: `Shared` (wake/park), `run_stretch` (the hop loop), the ticket and count of
//! `parallel`, and `parallel::scope` itself, whose pool is loom threads. The run queue's models
//! (submit, idle claim, linger, retire, kicks, withdraw) are beside it, in `exec/loom.rs`, where
//! loops are loom threads (`exec/runtimes_loom.rs`) and a limit's slots stay tokio's semaphore,
//! one indivisible step each (`sync.rs`).

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use loom::sync::Mutex;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::thread;

use crate::driver::{Stretch, run_stretch};
use crate::mode::Shared;

static SITE: crate::observe::Site = crate::observe::Site::new("loom::model", file!(), line!());
use crate::parallel;
use crate::ticket::{Pending, Ticket, TicketState};

/// A one-way channel of `u8` messages with the usual waker registration: what a body awaits.
struct Channel {
    sent: AtomicUsize,
    waker: Mutex<Option<Waker>>,
}

impl Channel {
    fn new() -> Channel {
        Channel {
            sent: AtomicUsize::new(0),
            waker: Mutex::new(None),
        }
    }

    fn send(&self) {
        self.sent.fetch_add(1, SeqCst);
        let waker = self.waker.lock().unwrap().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ready once `count` messages were sent.
    fn poll_count(&self, count: usize, cx: &mut Context<'_>) -> Poll<()> {
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.sent.load(SeqCst) >= count {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The outer task's waker: records that it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, SeqCst);
    }
}

/// The hop loop and the driver's park, against wakes from another thread: a body waiting for two
/// messages always completes -- every wake is seen by the stretch, by the driver's `take_wake`,
/// or reaches the outer task because the body was parked.
#[test]
fn loom_wakes_during_a_stretch_or_a_park_are_never_lost() {
    loom::model(|| {
        let channel = Arc::new(Channel::new());
        let shared = Arc::new(Shared::new(crate::record::Record::new(
            &SITE,
            crate::limit::global(),
        )));
        let waker = Waker::from(shared.clone());
        let mut sender = Some({
            let channel = channel.clone();
            thread::spawn(move || {
                channel.send();
                channel.send();
            })
        });
        let mut body = std::pin::pin!(std::future::poll_fn({
            let channel = channel.clone();
            move |cx| channel.poll_count(2, cx)
        }));
        loop {
            // A stretch on a blocking thread...
            match run_stretch(body.as_mut(), &shared, &waker, None, None) {
                Stretch::Done(()) => break,
                Stretch::Back => {}
                Stretch::Cancelled => unreachable!("the driver is alive"),
            }
            // ...hands the body back; the driver parks it unless a wake came in meanwhile.
            let outer = Arc::new(Flag(AtomicBool::new(false)));
            if !shared.take_wake() && shared.park(&Waker::from(outer.clone())) {
                // Parked: once the sender is done, it must have woken the outer task, or the
                // body would never be polled again.
                if let Some(sender) = sender.take() {
                    sender.join().unwrap();
                }
                assert!(
                    outer.0.load(SeqCst),
                    "lost wake: the body is parked and nobody will wake it"
                );
            }
        }
        if let Some(sender) = sender.take() {
            sender.join().unwrap();
        }
    });
}

/// A ticket is won once: the pool task and the caller never both run a branch, and `wait` returns
/// only after the winner finished.
#[test]
fn loom_a_branch_is_run_by_exactly_one_side() {
    loom::model(|| {
        let ticket = Arc::new(Ticket::new(None));
        let runs = Arc::new(AtomicUsize::new(0));
        let pool = {
            let (ticket, runs) = (ticket.clone(), runs.clone());
            thread::spawn(move || {
                if ticket.start_on_pool().is_some() {
                    runs.fetch_add(1, SeqCst);
                    ticket.finish();
                }
            })
        };
        if ticket.claim() {
            runs.fetch_add(1, SeqCst);
            ticket.finish();
        }
        ticket.wait();
        assert_eq!(ticket.state(), TicketState::Finished);
        assert_eq!(runs.load(SeqCst), 1);
        pool.join().unwrap();
    });
}

/// `Pending` never lets the scope's end pass while a branch is unfinished, and always sends it
/// back to the list when a branch was announced after it looked.
#[test]
fn loom_settle_waits_for_every_added_branch() {
    loom::model(|| {
        let pending = Arc::new(Pending::new());
        let listed = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicBool::new(false));
        pending.add(); // a running branch...
        let branch = {
            let (pending, listed) = (pending.clone(), listed.clone());
            thread::spawn(move || {
                // ...that spawns another one, then ends.
                pending.add();
                listed.fetch_add(1, SeqCst);
                pending.announce();
                pending.finished();
            })
        };
        let mut seen = pending.announced();
        let mut claimed = 0;
        loop {
            // "Take the list": claim whatever was listed since.
            let now = listed.load(SeqCst);
            while claimed < now {
                claimed += 1;
                finished.store(true, SeqCst);
                pending.finished();
            }
            if pending.settle(seen) {
                break;
            }
            seen = pending.announced();
        }
        assert!(
            finished.load(SeqCst),
            "settled before the spawned branch finished"
        );
        branch.join().unwrap();
    });
}

/// The real `parallel::scope` (its pool: loom threads): a branch spawned by a branch after the
/// closure returned is waited for before `scope` returns.
#[test]
fn loom_scope_waits_for_a_branch_spawned_by_a_branch() {
    loom::model(|| {
        let late_done = AtomicBool::new(false);
        let data = [1, 2, 3];
        parallel::scope(|s| {
            s.spawn(|| {
                s.spawn(|| {
                    assert_eq!(data.iter().sum::<i32>(), 6);
                    late_done.store(true, SeqCst);
                });
            });
        });
        assert!(
            late_done.load(SeqCst),
            "scope returned before a branch's branch finished"
        );
    });
}

/// The real `parallel::scope`: a branch's branch that panics and finishes before the scope looks
/// again is still taken and re-raised (`settle` reports new branches before "all finished").
#[test]
fn loom_scope_reraises_the_panic_of_a_branch_spawned_by_a_branch() {
    quiet_expected_panics();
    loom::model(|| {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            parallel::scope(|s| {
                s.spawn(|| {
                    s.spawn(|| -> () { panic!("the inner branch panics") });
                });
            })
        }));
        assert!(outcome.is_err(), "the inner branch's panic was lost");
    });
}

/// Keeps the panics the models raise on purpose out of the output (loom re-runs them thousands
/// of times).
fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .unwrap_or_default();
            if !matches!(
                message,
                "a destructor panics" | "the caller panics" | "the inner branch panics"
            ) {
                default(info);
            }
        }));
    });
}

/// Panics when dropped.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("a destructor panics");
    }
}

/// The real `parallel::scope`: after the caller panicked, an unrun branch whose capture panics in
/// its destructor does not make `scope` unwind while another branch still runs.
#[test]
fn loom_scope_waits_for_running_branches_when_an_unrun_branch_panics_on_drop() {
    quiet_expected_panics();
    loom::model(|| {
        let (started, done) = (AtomicBool::new(false), AtomicBool::new(false));
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            parallel::scope(|s| {
                // Run by a pool thread, or dropped unrun after the panic below.
                s.spawn(|| {
                    started.store(true, SeqCst);
                    done.store(true, SeqCst);
                });
                let bomb = PanicOnDrop;
                s.spawn(move || drop(bomb));
                panic!("the caller panics");
            })
        }));
        assert!(outcome.is_err());
        assert!(
            !started.load(SeqCst) || done.load(SeqCst),
            "scope unwound while a branch was running"
        );
    });
}
