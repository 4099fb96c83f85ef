//! The bodies in flight: a few sharded lists, so that bodies starting and ending on different
//! threads rarely meet on a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::mode::Shared;

const SHARDS: usize = 8;

static SHARDS_OF: [Mutex<Vec<Arc<Shared>>>; SHARDS] = [const { Mutex::new(Vec::new()) }; SHARDS];

fn shard(shared: &Arc<Shared>) -> &'static Mutex<Vec<Arc<Shared>>> {
    // Skip the low bits: neighbouring allocations of this size differ above them.
    &SHARDS_OF[(Arc::as_ptr(shared) as usize >> 6) % SHARDS]
}

fn lock(shard: &Mutex<Vec<Arc<Shared>>>) -> MutexGuard<'_, Vec<Arc<Shared>>> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lists a body that starts (once).
pub(crate) fn register(shared: &Arc<Shared>) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    shared
        .record
        .set_id(NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let mut list = lock(shard(shared));
    list.push(shared.clone());
    shared
        .record
        .registered
        .store(list.len(), Ordering::Relaxed);
}

/// Takes an ended body off the list (if it is on it).
pub(crate) fn deregister(shared: &Arc<Shared>) {
    let record = &shared.record;
    if record.registered.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut list = lock(shard(shared));
    // Read under the lock: another body's removal may have moved this one.
    let at = record.registered.swap(0, Ordering::Relaxed);
    if at == 0 {
        return;
    }
    let removed = list.swap_remove(at - 1);
    if let Some(moved) = list.get(at - 1) {
        moved.record.registered.store(at, Ordering::Relaxed);
    }
    drop(list);
    drop(removed);
}

/// Calls `each` with every listed body, one shard locked at a time.
pub(crate) fn for_each(mut each: impl FnMut(&Shared)) {
    for shard in &SHARDS_OF {
        for shared in lock(shard).iter() {
            each(shared);
        }
    }
}
