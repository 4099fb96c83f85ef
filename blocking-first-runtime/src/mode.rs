//! The mode handle a body uses to ask where it runs, and the state it shares with its driver.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::record::Record;
use crate::sync::{self, AtomicBool, Mutex, Ordering};

/// State shared by one body, its [`Mode`] handle and its driver.
///
/// It is also the waker every poll of the body gets, on whichever thread: all wakes go through
/// `woken`, so the driver can tell "pending because it waits" from "pending because it asked to move".
///
/// `woken` is only ever changed with read-modify-writes once the body has started ([`wake`],
/// [`take_wake`], [`park`]): a thread that clears it reads, in the same step, every wake before
/// it, and synchronises with the waker, so the poll that follows sees what the waker published.
///
/// [`wake`]: Wake::wake
/// [`take_wake`]: Shared::take_wake
/// [`park`]: Shared::park
#[derive(Debug)]
pub(crate) struct Shared {
    /// The body asked for async mode (it is inside an `io!` region).
    pub(crate) io: AtomicBool,
    /// The body is being polled on a blocking thread right now.
    pub(crate) on_blocking: AtomicBool,
    /// The body's waker fired since its last poll started.
    woken: AtomicBool,
    /// The driver was dropped: the body must not run any further.
    pub(crate) cancelled: AtomicBool,
    /// The body whose code first polled this one (it awaits this one, in its blocking code, a
    /// branch or its `io!` code): its cancellation is this body's too.
    parent: std::sync::OnceLock<Arc<Shared>>,
    /// The outer task's waker, present only while the body is parked with the driver.
    parked: Mutex<Option<Waker>>,
    /// Where the body's time goes, and where it is listed while in flight.
    pub(crate) record: Record,
    /// Connections of `blocking_first::pool` taken in this body's code and not given back: a
    /// stretch that ends with one held says so (only a connection that is `Send`, diesel's, can
    /// be held there; the others make that a compile error).
    pub(crate) conns: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// A body's state before its first poll: woken, so the first poll runs its opening code.
    pub(crate) fn new(record: Record) -> Shared {
        Shared {
            record,
            io: AtomicBool::new(false),
            on_blocking: AtomicBool::new(false),
            woken: AtomicBool::new(true),
            cancelled: AtomicBool::new(false),
            parent: std::sync::OnceLock::new(),
            parked: Mutex::new(None),
            conns: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Whether the body's caller let go of it, or the caller of a body that awaits it did.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
            || self
                .parent
                .get()
                .is_some_and(|parent| parent.is_cancelled())
    }

    /// At the body's first poll: the body whose code polls it (if any) is its parent.
    pub(crate) fn inherit(&self, parent: Option<Arc<Shared>>) {
        if let Some(parent) = parent {
            // Set once, by the first poll: a later poll from elsewhere changes nothing.
            let _ = self.parent.set(parent);
        }
    }

    /// Consumes a pending wake: returns whether one arrived since the last call.
    ///
    /// Called right before each poll of the body.
    pub(crate) fn take_wake(&self) -> bool {
        self.woken.swap(false, Ordering::AcqRel)
    }

    /// Whether a wake arrived since the last [`take_wake`](Shared::take_wake), without
    /// consuming it.
    pub(crate) fn is_woken(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }

    /// Registers the outer task's waker while the body waits with the driver.
    ///
    /// Returns `false` if a wake arrived in the meantime, in which case nothing stays registered
    /// and the caller must act on the wake itself (the lost-wakeup race): the wake is either seen
    /// by the `swap` below, or comes after it and then finds the waker registered.
    pub(crate) fn park(&self, waker: &Waker) -> bool {
        *sync::lock(&self.parked) = Some(waker.clone());
        if self.woken.swap(false, Ordering::AcqRel) {
            sync::lock(&self.parked).take();
            return false;
        }
        true
    }
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A read-modify-write, not a store: see the type's docs.
        self.woken.swap(true, Ordering::AcqRel);
        // Only a parked body needs its outer task woken; while it runs on a blocking thread the
        // hop loop sees `woken` itself.
        let parked = sync::lock(&self.parked).take();
        if let Some(waker) = parked {
            waker.wake();
        }
    }
}

/// The handle through which a body asks to run on the runtime (`io!`) or on the blocking pool.
///
/// `#[blocking_first]` creates one per call and uses it at every region boundary; user code does
/// not normally touch it.
#[derive(Debug, Clone)]
pub struct Mode {
    pub(crate) shared: Arc<Shared>,
}

impl Mode {
    /// Records that the body wants async mode from here on.
    ///
    /// Lazy: the body stays where it is until an `.await` really suspends, so a region that
    /// completes without waiting costs no thread hop. Never completes once the driver is dropped,
    /// which makes every region entry a point where a cancelled body stops.
    pub fn enter_io(&self) -> EnterIo<'_> {
        EnterIo { mode: self }
    }

    /// Returns the body to blocking mode.
    ///
    /// Free when the body never left its blocking thread; otherwise suspends once so the driver
    /// moves the body to the blocking pool. Never completes once the driver is dropped.
    pub fn leave_io(&self) -> LeaveIo<'_> {
        LeaveIo { mode: self }
    }

    /// Whether the body is currently in async mode (inside an `io!` region).
    pub fn is_io(&self) -> bool {
        self.shared.io.load(Ordering::Acquire)
    }
}

/// Future returned by [`Mode::enter_io`].
#[derive(Debug)]
#[must_use = "a region boundary does nothing unless awaited"]
pub struct EnterIo<'a> {
    mode: &'a Mode,
}

impl Future for EnterIo<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        let shared = &self.mode.shared;
        if shared.cancelled.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        shared.io.store(true, Ordering::Release);
        Poll::Ready(())
    }
}

/// Future returned by [`Mode::leave_io`].
#[derive(Debug)]
#[must_use = "a region boundary does nothing unless awaited"]
pub struct LeaveIo<'a> {
    mode: &'a Mode,
}

impl Future for LeaveIo<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shared = &self.mode.shared;
        if shared.cancelled.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        shared.io.store(false, Ordering::Release);
        if shared.on_blocking.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            // On the runtime: suspend once with a wake, so the driver sees "blocking mode, woken"
            // and moves the body to a blocking thread, where this poll then completes.
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}
