//! The bodies in flight: a few sharded lists, so that bodies starting and ending on different
//! threads rarely meet on a lock.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::mode::Shared;

const SHARDS: usize = 8;

/// One shard: its bodies, and how many it has listed so far (for their ids).
struct Shard {
    bodies: Vec<Arc<Shared>>,
    listed: u64,
}

// A `const` item, not an inline `const { }` block (Rust 1.79), to repeat in the array: each
// element is a fresh copy, never shared.
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Mutex<Shard> = Mutex::new(Shard {
    bodies: Vec::new(),
    listed: 0,
});

static SHARDS_OF: [Mutex<Shard>; SHARDS] = [EMPTY; SHARDS];

fn shard_of(shared: &Arc<Shared>) -> usize {
    // Skip the low bits: neighbouring allocations of this size differ above them.
    (Arc::as_ptr(shared) as usize >> 6) % SHARDS
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    crate::sync::lock_std(shard)
}

/// Lists a body that starts (once). Its id comes from its shard's count, under the lock already
/// taken: no counter shared by every thread.
pub(crate) fn register(shared: &Arc<Shared>) {
    let at = shard_of(shared);
    let mut shard = lock(&SHARDS_OF[at]);
    shared
        .record
        .set_id(shard.listed * SHARDS as u64 + at as u64 + 1);
    shard.listed += 1;
    shard.bodies.push(shared.clone());
    shared
        .record
        .registered
        .store(shard.bodies.len(), Ordering::Relaxed);
}

/// Takes an ended body off the list (if it is on it).
pub(crate) fn deregister(shared: &Arc<Shared>) {
    let record = &shared.record;
    if record.registered.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut shard = lock(&SHARDS_OF[shard_of(shared)]);
    // Read under the lock: another body's removal may have moved this one.
    let at = record.registered.swap(0, Ordering::Relaxed);
    if at == 0 {
        return;
    }
    let removed = shard.bodies.swap_remove(at - 1);
    if let Some(moved) = shard.bodies.get(at - 1) {
        moved.record.registered.store(at, Ordering::Relaxed);
    }
    drop(shard);
    drop(removed);
}

/// Calls `each` with every listed body, one shard locked at a time.
pub(crate) fn for_each(mut each: impl FnMut(&Shared)) {
    for shard in &SHARDS_OF {
        for shared in &lock(shard).bodies {
            each(shared);
        }
    }
}
