//! `OrMap::inc` on an existing key allocates nothing; `update` (the general path) does.
//! Counted by a global allocator that counts this thread's allocations.

use meridian_clocks::ReplicaId;
use meridian_crdt::{CausalCounter, OrMap};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread-local may be gone while the thread exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn inc_on_an_existing_key_allocates_nothing() {
    let mut map: OrMap<u64, CausalCounter> = OrMap::new();
    for k in 0..1_000u64 {
        map.update(ReplicaId(k % 3 + 1), k, |c, m| c.inc(m, 1))
            .expect("fresh dot");
    }
    // Replica 1 updates keys it has and keys it has not touched yet (a new dot at an
    // existing key may grow that key's entry vector once).
    for k in 0..1_000u64 {
        map.inc(ReplicaId(1), k, 1).expect("fresh dot");
    }
    let mut deltas = Vec::with_capacity(3_000);
    let n = allocations_in(|| {
        for round in 0..3u64 {
            for k in 0..1_000u64 {
                deltas.push(map.inc(ReplicaId(1), (k * 7 + round) % 1_000, 1));
            }
        }
    });
    assert_eq!(n, 0, "inc allocated {n} times in 3000 calls");
    assert!(deltas.iter().all(Result::is_ok));
    assert_eq!(map.get(&0).map(CausalCounter::value), Some(1 + 1 + 3));

    let n = allocations_in(|| {
        let _ = map.update(ReplicaId(1), 5, |c, m| c.inc(m, 1));
    });
    assert!(n >= 2, "the general path allocates its delta ({n})");
}
