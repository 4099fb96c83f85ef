//! How a stretch of blocking code gives the body back to its driver, or drops it when the driver
//! is gone: decided under one lock, so a body is never dropped by a driver on a runtime worker
//! because it arrived just as the driver was dropped.

use crate::sync::{self, Mutex};

/// Where a stretch leaves the body for its driver.
#[derive(Debug)]
pub(crate) struct Handoff<B> {
    state: Mutex<State<B>>,
}

#[derive(Debug)]
enum State<B> {
    /// Nothing left here (the body is on a blocking thread, or with the driver).
    Empty,
    /// A stretch left the body; the driver has not taken it yet.
    Left(B),
    /// The driver was dropped: nothing may be left here any more.
    Abandoned,
}

impl<B> Handoff<B> {
    pub(crate) fn new() -> Handoff<B> {
        Handoff {
            state: Mutex::new(State::Empty),
        }
    }

    /// The stretch's side: leaves `body` for the driver, or gives it back if the driver is gone,
    /// for the stretch to drop on its own (blocking) thread.
    pub(crate) fn leave(&self, body: B) -> Result<(), B> {
        let mut state = sync::lock(&self.state);
        match *state {
            State::Empty => {
                *state = State::Left(body);
                Ok(())
            }
            State::Abandoned => Err(body),
            State::Left(_) => unreachable!("a body is left once per stretch"),
        }
    }

    /// The driver's side, once the stretch ended: takes the body it left.
    pub(crate) fn take(&self) -> Option<B> {
        let mut state = sync::lock(&self.state);
        match std::mem::replace(&mut *state, State::Empty) {
            State::Left(body) => Some(body),
            other => {
                *state = other;
                None
            }
        }
    }

    /// The dropped driver's side: from now on a stretch keeps its body (and drops it). Returns a
    /// body already left, which the caller must drop off the runtime workers.
    pub(crate) fn abandon(&self) -> Option<B> {
        let mut state = sync::lock(&self.state);
        match std::mem::replace(&mut *state, State::Abandoned) {
            State::Left(body) => Some(body),
            _ => None,
        }
    }
}
