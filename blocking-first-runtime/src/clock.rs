//! The runtime's clock: nanoseconds since its first read, as one `u64` that fits in an atomic.
//! Bodies' time splits, the adaptive limits' windows and the queue-time bounds all read it.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call: one clock read.
pub(crate) fn now() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
