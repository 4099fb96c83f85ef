//! loom models of the run queue's protocol (how to run them: `src/loom.rs`): submit, idle claim,
//! linger, `retire_idle`, the kicks of an ending loop, of an inline slot given back and of a
//! loop dropped unstarted, and `withdraw`; on the real code of this module, with loom threads for
//! tokio's blocking pools (`runtimes_loom.rs`).
//!
//! Each model joins every thread, the pools' too, and then checks what the protocol promises:
//! every job ran (or, its runtime gone, was abandoned) exactly once, no job is left queued, no
//! loop is left, and every slot is free again. An idle loop's wait is one look and a yield, then
//! the linger's end (see `sync::thread`), so loom also tries every moment for a loop to linger
//! out. A limit's slots are tokio's semaphore, one indivisible step each (see `sync.rs`).

use std::sync::Arc;

use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;
use tokio::runtime::{Handle, Runtime};

use super::Limit;
use super::runtimes_loom::{CLOSING, join_pool_threads};
use super::{Job, Priority, Running, give_back_slot, retire_idle, start_loop, submit, withdraw};

/// What became of one job.
struct Tally {
    ran: AtomicUsize,
    abandoned: AtomicUsize,
    /// The most loops alive while it ran, and how many there may be.
    loops: AtomicUsize,
    max_loops: usize,
}

impl Tally {
    fn new(max_loops: usize) -> Arc<Tally> {
        Arc::new(Tally {
            ran: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            loops: AtomicUsize::new(0),
            max_loops,
        })
    }

    /// Ran exactly once (or, if `may_be_abandoned`, was abandoned instead), beside no more loops
    /// than allowed. (Checked here, not in the job: a loop catches what its job raises.)
    fn assert_once(&self, what: &str, may_be_abandoned: bool) {
        let (ran, abandoned) = (self.ran.load(SeqCst), self.abandoned.load(SeqCst));
        assert!(
            ran + abandoned == 1 && (may_be_abandoned || abandoned == 0),
            "{what}: ran {ran} times, abandoned {abandoned} times"
        );
        let loops = self.loops.load(SeqCst);
        assert!(
            loops <= self.max_loops,
            "{what} ran beside {loops} loops, at most {} allowed",
            self.max_loops
        );
    }
}

/// A job that only counts.
struct Counted {
    handle: Handle,
    tally: Arc<Tally>,
}

impl Job for Counted {
    fn run(self: Box<Self>, limit: &'static Limit, running: Running) {
        self.tally.loops.fetch_max(limit.exec.loops(), SeqCst);
        drop(running);
        self.tally.ran.fetch_add(1, SeqCst);
    }

    fn handle(&self) -> &Handle {
        &self.handle
    }

    fn key(&self) -> *const () {
        Arc::as_ptr(&self.tally).cast()
    }

    fn abandon(self: Box<Self>) {
        self.tally.abandoned.fetch_add(1, SeqCst);
    }
}

fn job(handle: &Handle, tally: &Arc<Tally>) -> Box<dyn Job> {
    Box::new(Counted {
        handle: handle.clone(),
        tally: tally.clone(),
    })
}

/// A runtime for the jobs' handles (under loom, nothing runs on it).
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

/// Starts a loop (its slot taken and counted, as `kick` does) with nothing queued: it goes idle
/// and lingers out unless it is claimed or retired first.
fn start_idle_loop(limit: &'static Limit, handle: &Handle) {
    {
        let mut queue = limit.exec.lock();
        assert!(limit.slots.take_loop_slot());
        queue.loops += 1;
    }
    assert!(start_loop(limit, handle));
}

/// Joins every pool thread (so every loop has ended), then checks that nothing is left: no job
/// queued, no loop, `free` slots.
fn assert_settled(limit: &Limit, free: usize) {
    join_pool_threads();
    let queue = limit.exec.lock();
    let queued = queue.started.len() + queue.fresh.len();
    assert_eq!(
        queued, 0,
        "{queued} jobs left queued with no loop to run them"
    );
    assert_eq!(
        (queue.loops, queue.idle.len()),
        (0, 0),
        "loops counted or idle"
    );
    let mut slots = 0;
    while limit.slots.take_loop_slot() {
        slots += 1;
    }
    assert_eq!(slots, free, "slots lost or made");
}

/// Two submitters race an idle loop that may linger out at any moment: each job runs once, on
/// the claimed loop or on a new one started with the slot the lingering one gives back.
#[test]
fn loom_submits_racing_a_lingering_loop_run_every_job_once() {
    let runtime = runtime();
    let handle = runtime.handle().clone();
    loom::model(move || {
        loom::lazy_static! {
            static ref LIMIT: Limit = Limit::new("loom-linger", 1);
        }
        let limit: &'static Limit = &LIMIT;
        start_idle_loop(limit, &handle);
        let (first, second) = (Tally::new(1), Tally::new(1));
        let submitter = {
            let job = job(&handle, &first);
            thread::spawn(move || submit(limit, job, Priority::Fresh, false).is_ok())
        };
        assert!(submit(limit, job(&handle, &second), Priority::Fresh, false).is_ok());
        assert!(submitter.join().unwrap());
        assert_settled(limit, 1);
        first.assert_once("first job", false);
        second.assert_once("second job", false);
    });
}

/// What `Limit::set_capacity` does under the queue's lock, from `old` slots to `new`: takes back
/// every slot that no idle loop holds, all or none, and makes the new ones.
fn change_capacity(limit: &Limit, old: usize, idle: usize, new: usize) -> bool {
    let rest = old - idle;
    let taken = (0..rest)
        .take_while(|_| limit.slots.take_loop_slot())
        .count();
    if taken < rest {
        (0..taken).for_each(|_| limit.slots.give_back_loop_slot());
        return false;
    }
    (0..new).for_each(|_| limit.slots.give_back_loop_slot());
    true
}

/// `retire_idle` (a capacity change from 1 to 2) races a submit and the idle loop's linger:
/// either the change fails and changes nothing, or it succeeds and the job still runs, on a loop
/// of the new slots; no job is stranded, no slot lost.
#[test]
fn loom_retiring_idle_loops_racing_a_submit_strands_nothing() {
    let runtime = runtime();
    let handle = runtime.handle().clone();
    loom::model(move || {
        loom::lazy_static! {
            static ref LIMIT: Limit = Limit::new("loom-retire", 1);
        }
        let limit: &'static Limit = &LIMIT;
        start_idle_loop(limit, &handle);
        let change =
            thread::spawn(move || retire_idle(limit, |idle| change_capacity(limit, 1, idle, 2)));
        // A retired loop ends without its slot: it and one on the new slots may be alive at once.
        let tally = Tally::new(2);
        assert!(submit(limit, job(&handle, &tally), Priority::Fresh, false).is_ok());
        let changed = change.join().unwrap();
        assert_settled(limit, if changed { 2 } else { 1 });
        tally.assert_once("the job", false);
    });
}

/// A job of a runtime whose blocking pool shuts down gets a loop start there, which the pool
/// drops unstarted (before or after `start_loop` returns), while a live runtime's job queues
/// behind it: the slot comes back and the live job still runs (the other one runs too, on a loop
/// of the live runtime, or is abandoned). Before the fix, a loop the pool dropped after
/// `start_loop` returned gave its slot back without a kick: both jobs stayed queued, the slot
/// free, no loop coming until the limit's next submit.
#[test]
fn loom_a_loop_dropped_unstarted_strands_no_job() {
    let (alive, closing) = (runtime(), runtime());
    let (alive_handle, closing_handle) = (alive.handle().clone(), closing.handle().clone());
    loom::model(move || {
        loom::lazy_static! {
            static ref LIMIT: Limit = Limit::new("loom-unstarted", 1);
        }
        let limit: &'static Limit = &LIMIT;
        CLOSING.set(Some((closing_handle.id(), false)));
        let (live, dead) = (Tally::new(1), Tally::new(1));
        let submitter = {
            let job = job(&alive_handle, &live);
            thread::spawn(move || submit(limit, job, Priority::Fresh, false).is_ok())
        };
        assert!(submit(limit, job(&closing_handle, &dead), Priority::Fresh, false).is_ok());
        assert!(submitter.join().unwrap());
        assert_settled(limit, 1);
        live.assert_once("the live runtime's job", false);
        dead.assert_once("the closing runtime's job", true);
    });
}

/// An inline stretch gives its slot back (`give_back_slot`) as a job is submitted that found
/// every slot taken: the slot starts a loop for it, whichever comes first.
#[test]
fn loom_a_slot_given_back_inline_serves_a_job_queued_meanwhile() {
    let runtime = runtime();
    let handle = runtime.handle().clone();
    loom::model(move || {
        loom::lazy_static! {
            static ref LIMIT: Limit = Limit::new("loom-inline", 1);
        }
        let limit: &'static Limit = &LIMIT;
        assert!(limit.slots.take_loop_slot(), "the inline stretch's slot");
        let tally = Tally::new(1);
        let submitter = {
            let job = job(&handle, &tally);
            thread::spawn(move || submit(limit, job, Priority::Fresh, false).is_ok())
        };
        give_back_slot(limit);
        assert!(submitter.join().unwrap());
        assert_settled(limit, 1);
        tally.assert_once("the job", false);
    });
}

/// A body takes its job back (`withdraw`: its driver was dropped) as the loop started for it
/// looks for work: the job is withdrawn or run, exactly once, and the loop still ends.
#[test]
fn loom_a_job_is_withdrawn_or_run_never_both() {
    let runtime = runtime();
    let handle = runtime.handle().clone();
    loom::model(move || {
        loom::lazy_static! {
            static ref LIMIT: Limit = Limit::new("loom-withdraw", 1);
        }
        let limit: &'static Limit = &LIMIT;
        let tally = Tally::new(1);
        assert!(submit(limit, job(&handle, &tally), Priority::Fresh, false).is_ok());
        if withdraw(limit, Arc::as_ptr(&tally).cast()).is_some() {
            tally.ran.fetch_add(1, SeqCst); // taken back: the caller's instead of a loop's run
        }
        assert_settled(limit, 1);
        tally.assert_once("the job", false);
    });
}
