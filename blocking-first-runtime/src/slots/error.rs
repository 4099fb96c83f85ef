//! Why a capacity could not change.

use std::fmt;

/// Why [`Limit::set_capacity`](crate::limit::Limit::set_capacity) (or sizing a pool by a limit) failed; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityError {
    pub(super) name: &'static str,
    pub(super) kind: CapacityErrorKind,
}

/// What [`CapacityError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapacityErrorKind {
    /// A slot was taken or awaited: capacities change at start-up, before any body runs.
    InUse,
    /// The capacity asked for is above the largest one accepted.
    TooLarge {
        /// [`MAX_CAPACITY`](super::MAX_CAPACITY).
        max: usize,
    },
    /// A connection pool sized by this limit is alive; its size and the cap must agree.
    SizesPool,
    /// A pool cannot be sized by a limit without a cap.
    Unbounded,
}

impl CapacityError {
    /// What went wrong.
    pub fn kind(&self) -> CapacityErrorKind {
        self.kind
    }

    /// The name of the limit.
    pub fn limit_name(&self) -> &'static str {
        self.name
    }
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name;
        match self.kind {
            CapacityErrorKind::InUse => write!(
                f,
                "the capacity of limit `{name}` can only change while no body uses it: set it at \
                 start-up"
            ),
            CapacityErrorKind::TooLarge { max } => write!(
                f,
                "limit `{name}` cannot have more than {max} slots; use 0 for no cap"
            ),
            CapacityErrorKind::SizesPool => write!(
                f,
                "limit `{name}` sizes a connection pool, so its capacity cannot change while the \
                 pool is alive: set the capacity before building the pool"
            ),
            CapacityErrorKind::Unbounded => write!(
                f,
                "limit `{name}` has no cap, so it cannot size a connection pool: give it one \
                 (`Limit::new(\"{name}\", N)` or `set_capacity(N)`) before building the pool"
            ),
        }
    }
}

impl std::error::Error for CapacityError {}
