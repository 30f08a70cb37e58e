//! Clock benches, each against its peer in the same run (so ratios survive a noisy machine):
//!
//! * `Hlc::now()` vs a bare `SystemTime::now()` and `uhlc::HLC::new_timestamp()`, on one
//!   thread and from two threads sharing one clock, on the system clock and on the opt-in
//!   coarse one (`CoarseSystemClock`);
//! * `Hlc::update()` vs uhlc's `update_with_timestamp`, on both clocks;
//! * `VectorClock` compare and merge vs `crdts::VClock` at 4, 16 and 64 replicas;
//! * `LamportClock::tick` vs a bare add.
//!
//! Before criterion, `Hlc::update` and uhlc's are also timed *paired* (alternating rounds,
//! the ratio taken per round; see `common/mod.rs`) and printed as a `paired` line: criterion
//! times one function after the other, so load from other users of the machine can skew
//! its ratio, and the paired one shows whether it did.
//!
//! Run: `cargo bench --bench clocks` (or `cargo xtask bench --bench clocks`).

use crdts::{CmRDT, CvRDT};
use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion};
use meridian::clocks::{CoarseSystemClock, Hlc, LamportClock, ReplicaId, SystemClock, VectorClock};
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

fn hlc_now(c: &mut Criterion) {
    let mut g = c.benchmark_group("hlc_now_1thread");
    g.bench_function("SystemTime::now", |b| {
        b.iter(|| black_box(SystemTime::now().duration_since(UNIX_EPOCH)))
    });
    let ours = Hlc::new(SystemClock, Duration::from_millis(500));
    g.bench_function("meridian", |b| b.iter(|| black_box(ours.now())));
    // The opt-in coarse source (CLOCK_REALTIME_COARSE, one kernel tick of resolution).
    let coarse = Hlc::new(CoarseSystemClock, Duration::from_millis(500));
    g.bench_function("meridian (coarse clock)", |b| {
        b.iter(|| black_box(coarse.now()))
    });
    let theirs = uhlc::HLC::default();
    g.bench_function("uhlc", |b| b.iter(|| black_box(theirs.new_timestamp())));
    g.finish();

    // Two threads hammer one shared clock; time per pair of concurrent calls.
    let mut g = c.benchmark_group("hlc_now_2threads");
    fn two_threads(iters: u64, f: &(dyn Fn() + Sync)) -> Duration {
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| (0..iters).for_each(|_| f()));
            (0..iters).for_each(|_| f());
        });
        start.elapsed()
    }
    g.bench_function("meridian", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                black_box(ours.now());
            })
        })
    });
    g.bench_function("uhlc", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                black_box(theirs.new_timestamp());
            })
        })
    });
    g.finish();
}

fn hlc_update(c: &mut Criterion) {
    let mut g = c.benchmark_group("hlc_update");
    let ours = Hlc::new(SystemClock, Duration::from_millis(500));
    let remote = Hlc::new(SystemClock, Duration::from_millis(500)).now();
    g.bench_function("meridian", |b| {
        b.iter(|| black_box(ours.update(black_box(remote))))
    });
    let coarse = Hlc::new(CoarseSystemClock, Duration::from_millis(500));
    g.bench_function("meridian (coarse clock)", |b| {
        b.iter(|| black_box(coarse.update(black_box(remote))))
    });
    let theirs = uhlc::HLC::default();
    let remote = uhlc::HLC::default().new_timestamp();
    g.bench_function("uhlc", |b| {
        b.iter(|| black_box(theirs.update_with_timestamp(black_box(&remote))))
    });
    g.finish();
}

/// Two clocks over `n` replicas that are concurrent only at their last entries, so a
/// comparison must walk everything.
fn vclocks(
    n: u64,
) -> (
    VectorClock,
    VectorClock,
    crdts::VClock<u64>,
    crdts::VClock<u64>,
) {
    let ours = |bump: u64| -> VectorClock {
        (0..n)
            .map(|r| (ReplicaId(r), 10 + r + u64::from(r == bump)))
            .collect()
    };
    let theirs = |bump: u64| -> crdts::VClock<u64> {
        let mut v = crdts::VClock::new();
        for r in 0..n {
            for _ in 0..10 + r + u64::from(r == bump) {
                v.apply(v.inc(r));
            }
        }
        v
    };
    (ours(n - 2), ours(n - 1), theirs(n - 2), theirs(n - 1))
}

fn vclock(c: &mut Criterion) {
    let mut g = c.benchmark_group("vclock_compare");
    for n in [4u64, 16, 64] {
        let (a, b, x, y) = vclocks(n);
        assert!(a.is_concurrent(&b) && x.concurrent(&y));
        g.bench_with_input(BenchmarkId::new("meridian", n), &n, |bch, _| {
            bch.iter(|| black_box(black_box(&a).partial_cmp(black_box(&b))))
        });
        g.bench_with_input(BenchmarkId::new("crdts", n), &n, |bch, _| {
            bch.iter(|| black_box(black_box(&x).partial_cmp(black_box(&y))))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("vclock_merge");
    for n in [4u64, 16, 64] {
        let (a, b, x, y) = vclocks(n);
        g.bench_with_input(BenchmarkId::new("meridian", n), &n, |bch, _| {
            bch.iter_batched_ref(
                || a.clone(),
                |a| a.merge(black_box(&b)),
                BatchSize::SmallInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("crdts", n), &n, |bch, _| {
            bch.iter_batched_ref(
                || x.clone(),
                |x| x.merge(black_box(y.clone())),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn lamport(c: &mut Criterion) {
    // 1000 events per iteration, so the harness's per-iteration cost does not dominate.
    let mut g = c.benchmark_group("lamport_tick_x1000");
    let mut clock = LamportClock::new(ReplicaId(1));
    g.bench_function("meridian", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                black_box(black_box(&mut clock).tick());
            }
        })
    });
    let mut n = 0u64;
    g.bench_function("bare_add", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                let v = black_box(&mut n);
                *v = v.saturating_add(1);
                black_box(*v);
            }
        })
    });
    g.finish();
}

/// `Hlc::update` and uhlc's `update_with_timestamp`, paired (see `common::paired`).
fn hlc_update_paired() {
    let ours = Hlc::new(SystemClock, Duration::from_millis(500));
    let remote = Hlc::new(SystemClock, Duration::from_millis(500)).now();
    let theirs = uhlc::HLC::default();
    let their_remote = uhlc::HLC::default().new_timestamp();
    common::paired(
        41,
        100_000,
        || {
            let _ = black_box(ours.update(black_box(remote)));
        },
        || {
            let _ = black_box(theirs.update_with_timestamp(black_box(&their_remote)));
        },
    )
    .print("hlc_update", "meridian", "uhlc");
}

criterion_group!(benches, hlc_now, hlc_update, vclock, lamport);

fn main() {
    hlc_update_paired();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
