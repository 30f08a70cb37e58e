//! # HLC bounds: the hybrid logical clock stays close to physical time; the naive one does not
//!
//! Reproduces the claims of Kulkarni et al., "Logical Physical Clocks and Consistent
//! Snapshots in Globally Distributed Databases" (2014), on a simulated cluster:
//!
//! * the HLC's `l` never falls below the local physical clock `pt`, and never leads it by
//!   more than ε, the largest disagreement between two clocks;
//! * its counter `c` stays small, below the paper's bound `N·(ε+1)` (ε in clock ticks,
//!   here milliseconds), whatever the message rate;
//! * the paper's *naive* algorithm, which keeps one number `l` and bumps it on every event
//!   (`l = max(l+1, pt)` on send, `l = max(l+1, l_m+1, pt)` on receive), does not stay
//!   close: on a busy, fast network its `l − pt` grows without bound.
//!
//! The cluster: N nodes whose millisecond clocks disagree by up to ε (each is a random
//! fraction of ε ahead of true time, and they tick at the same rate); each node sends
//! messages to random peers at a given rate, over a network with sub-millisecond to
//! few-millisecond latency (one data centre). As the paper assumes, a node handles at most
//! one event (a send or a receive) per tick of its clock; anything more waits for the
//! next tick. Both clocks run side by side on the same schedule: the HLC is
//! `meridian::clocks::Hlc`, the naive clock is written out below.
//!
//! What to look for:
//!
//! * in the sweep table, `max l−pt` never exceeds ε and `max c` stays far below the bound,
//!   in every row; the naive column grows with the message rate instead;
//! * in the second table, the naive clock's lead over physical time keeps growing the
//!   longer the run, while the HLC's stays put.
//!
//! ```text
//! cargo run --release --example hlc_bounds
//! cargo run --release --example hlc_bounds -- --eps-ms 0,5,50 --rates 50,450
//! cargo run --release --example hlc_bounds -- --latency-us-min 2000 --latency-us-max 5000   # slower network: naive calms down
//! ```
//!
//! The last line, starting `SUMMARY`, repeats the key numbers for scripts and tests.

mod common;

use anyhow::{ensure, Result};
use clap::Parser;
use common::T0_MS;
use meridian::clocks::{Hlc, HlcTimestamp, PhysicalClock};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NODES_MAX: usize = 64;
/// A node cannot handle more than one event per millisecond tick, so beyond half that in
/// sends (each message is a send and a receive) its queue only grows.
const RATE_MAX: u64 = 500;

/// Check the HLC's bounds on l − pt and c, and watch the naive algorithm drift.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Clock uncertainties ε to sweep, in ms (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    eps_ms: Vec<u64>,
    /// Message rates to sweep, in messages per second sent by each node (comma-separated,
    /// at most 500: a node handles one event per ms).
    #[arg(long, value_delimiter = ',', default_value = "10,100,450")]
    rates: Vec<u64>,
    /// Simulated time per sweep row, in ms.
    #[arg(long, default_value_t = 2_000)]
    duration_ms: u64,
    /// Shortest network latency, in microseconds.
    #[arg(long, default_value_t = 100)]
    latency_us_min: u64,
    /// Longest network latency, in microseconds.
    #[arg(long, default_value_t = 2_000)]
    latency_us_max: u64,
    /// Checkpoints (ms of simulated time) for the naive-drift table, which replays the
    /// busiest row of the sweep (highest rate, largest ε) for longer.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,4000,8000,16000,32000"
    )]
    checkpoints_ms: Vec<u64>,
    /// Random seed: the same seed gives the same output, on any platform.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A millisecond clock reading shared true time (in µs) plus a fixed offset.
#[derive(Clone, Debug)]
struct SimClock {
    truth_us: Arc<AtomicU64>,
    offset_us: u64,
}

impl PhysicalClock for SimClock {
    fn now_ms(&self) -> u64 {
        T0_MS + (self.truth_us.load(Ordering::Relaxed) + self.offset_us) / 1000
    }
}

/// The naive algorithm of the paper: one number, bumped on every event.
#[derive(Debug, Default)]
struct NaiveClock {
    l: u64,
}

impl NaiveClock {
    fn send(&mut self, pt: u64) -> u64 {
        self.l = (self.l + 1).max(pt);
        self.l
    }
    fn receive(&mut self, pt: u64, remote: u64) -> u64 {
        self.l = (self.l + 1).max(remote + 1).max(pt);
        self.l
    }
}

struct Node {
    clock: SimClock,
    hlc: Hlc<SimClock>,
    naive: NaiveClock,
    /// The last tick in which this node handled an event.
    last_tick: Option<u64>,
    /// Last stamps issued, to check that each node's stamps strictly increase.
    last_hlc: HlcTimestamp,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Send {
        from: usize,
    },
    Deliver {
        to: usize,
        hlc: HlcTimestamp,
        naive: u64,
    },
}

/// What one run measured.
#[derive(Debug, Default, Clone)]
struct Stats {
    events: u64,
    hlc_ahead_ms_max: u64,
    hlc_below_pt: u64,
    hlc_c_max: u16,
    /// Send not below receive, or a node's stamps not strictly increasing.
    hlc_order_violations: u64,
    hlc_rejected: u64,
    naive_ahead_ms_max: u64,
    /// (checkpoint ms, HLC max l − pt, naive max l − pt) over all nodes at that moment.
    checkpoints: Vec<(u64, u64, u64)>,
}

struct Config {
    nodes: usize,
    eps_ms: u64,
    rate: u64,
    duration_ms: u64,
    latency_us: (u64, u64),
    seed: u64,
}

fn run(cfg: &Config, checkpoints_ms: &[u64]) -> Stats {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let truth_us = Arc::new(AtomicU64::new(0));
    let eps_us = cfg.eps_ms * 1000;
    let mut nodes: Vec<Node> = (0..cfg.nodes)
        .map(|i| {
            // The first two clocks sit at the extremes so that ε is really present.
            let offset_us = match i {
                0 => 0,
                1 => eps_us,
                _ => rng.gen_range(0..=eps_us),
            };
            let clock = SimClock {
                truth_us: truth_us.clone(),
                offset_us,
            };
            Node {
                // Remote stamps never lead by more than ε, so a larger lead is refused
                // and counted (it must not happen).
                hlc: Hlc::new(clock.clone(), Duration::from_millis(cfg.eps_ms)),
                clock,
                naive: NaiveClock::default(),
                last_tick: None,
                last_hlc: HlcTimestamp::ZERO,
            }
        })
        .collect();
    let mut stats = Stats::default();

    // Sends: a Poisson process per node. (t µs, sequence, action)
    let mut queue: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut actions: Vec<Action> = Vec::new();
    let push = |queue: &mut BinaryHeap<_>, actions: &mut Vec<Action>, t: u64, a: Action| {
        queue.push(Reverse((t, actions.len() as u64, actions.len())));
        actions.push(a);
    };
    let end_us = cfg.duration_ms * 1000;
    for from in 0..cfg.nodes {
        let mut t = 0.0f64;
        loop {
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            t += -u.ln() / cfg.rate as f64 * 1e6;
            if t >= end_us as f64 {
                break;
            }
            push(&mut queue, &mut actions, t as u64, Action::Send { from });
        }
    }
    let mut checkpoints = checkpoints_ms.iter().map(|c| c * 1000).peekable();

    while let Some(Reverse((t, _, idx))) = queue.pop() {
        while let Some(&cp) = checkpoints.peek() {
            if cp > t {
                break;
            }
            truth_us.store(cp, Ordering::Relaxed);
            let (mut h, mut n) = (0, 0);
            for node in &nodes {
                let pt = node.clock.now_ms();
                h = h.max(node.hlc.last().physical_ms().saturating_sub(pt));
                n = n.max(node.naive.l.saturating_sub(pt));
            }
            stats.checkpoints.push((cp / 1000, h, n));
            checkpoints.next();
        }
        truth_us.store(t, Ordering::Relaxed);
        let action = actions[idx];
        let j = match action {
            Action::Send { from } => from,
            Action::Deliver { to, .. } => to,
        };
        let node = &mut nodes[j];
        let pt = node.clock.now_ms();
        if node.last_tick.is_some_and(|last| last >= pt) {
            // Busy this tick: try again when the node's clock reaches the next one.
            let next = node.last_tick.unwrap_or(pt) + 1;
            let at = (next - T0_MS) * 1000 - node.clock.offset_us;
            push(&mut queue, &mut actions, at, action);
            continue;
        }
        let (hlc, naive) = match action {
            Action::Send { from } => {
                let hlc = node.hlc.now();
                let naive = node.naive.send(pt);
                let to = (from + rng.gen_range(1..cfg.nodes)) % cfg.nodes;
                let latency = rng.gen_range(cfg.latency_us.0..=cfg.latency_us.1);
                push(
                    &mut queue,
                    &mut actions,
                    t + latency,
                    Action::Deliver { to, hlc, naive },
                );
                (hlc, naive)
            }
            Action::Deliver {
                hlc: remote, naive, ..
            } => {
                let Ok(hlc) = node.hlc.update(remote) else {
                    stats.hlc_rejected += 1;
                    continue;
                };
                if hlc <= remote {
                    stats.hlc_order_violations += 1;
                }
                (hlc, node.naive.receive(pt, naive))
            }
        };
        node.last_tick = Some(pt);
        if hlc <= node.last_hlc {
            stats.hlc_order_violations += 1;
        }
        node.last_hlc = hlc;
        stats.events += 1;
        let l = hlc.physical_ms();
        if l < pt {
            stats.hlc_below_pt += 1;
        }
        stats.hlc_ahead_ms_max = stats.hlc_ahead_ms_max.max(l.saturating_sub(pt));
        stats.hlc_c_max = stats.hlc_c_max.max(hlc.logical());
        stats.naive_ahead_ms_max = stats.naive_ahead_ms_max.max(naive.saturating_sub(pt));
    }
    stats
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        (2..=NODES_MAX).contains(&args.nodes),
        "--nodes must be between 2 and {NODES_MAX}"
    );
    ensure!(!args.eps_ms.is_empty(), "--eps-ms needs at least one value");
    ensure!(
        args.eps_ms.iter().all(|&e| e <= 10_000),
        "--eps-ms values must be at most 10000"
    );
    ensure!(
        !args.rates.is_empty() && args.rates.iter().all(|&r| (1..=RATE_MAX).contains(&r)),
        "--rates values must be between 1 and {RATE_MAX} messages per second per node"
    );
    ensure!(
        (1..=600_000).contains(&args.duration_ms),
        "--duration-ms must be between 1 and 600000"
    );
    ensure!(
        args.latency_us_min <= args.latency_us_max,
        "--latency-us-min must not exceed --latency-us-max"
    );
    ensure!(
        args.checkpoints_ms
            .iter()
            .all(|&c| (1..=600_000).contains(&c)),
        "--checkpoints-ms values must be between 1 and 600000"
    );
    let n = args.nodes as u64;

    println!(
        "hlc_bounds: {} nodes, {} ms per run, latency {}-{} µs, seed {}",
        args.nodes, args.duration_ms, args.latency_us_min, args.latency_us_max, args.seed
    );
    println!(
        "Each row is one run. l−pt: how far the clock leads the node's own physical clock \
         (ms).\nThe paper proves HLC keeps 0 ≤ l−pt ≤ ε and c ≤ N·(ε+1); the naive \
         algorithm has no such bound.\n"
    );
    println!(
        "{:>6} {:>12} {:>8} │ {:>13} {:>7} {:>9} {:>10} {:>7} │ {:>15}",
        "ε ms",
        "msgs/s/node",
        "events",
        "HLC max l−pt",
        "max c",
        "N·(ε+1)",
        "l<pt, hb✗",
        "bounds",
        "naive max l−pt"
    );
    let mut all_ok = true;
    let (mut ahead_max, mut c_max, mut below, mut order, mut rejected) = (0, 0, 0, 0, 0);
    let mut slack_min = i64::MAX; // ε − max(l − pt), smallest over rows
    let mut c_slack_min = i64::MAX; // N·(ε+1) − max c, smallest over rows
    for (i, &eps) in args.eps_ms.iter().enumerate() {
        for (k, &rate) in args.rates.iter().enumerate() {
            let cfg = Config {
                nodes: args.nodes,
                eps_ms: eps,
                rate,
                duration_ms: args.duration_ms,
                latency_us: (args.latency_us_min, args.latency_us_max),
                seed: args.seed ^ ((i as u64) << 32 | k as u64),
            };
            let s = run(&cfg, &[]);
            let bound_c = n * (eps + 1);
            let ok = s.hlc_ahead_ms_max <= eps
                && u64::from(s.hlc_c_max) <= bound_c
                && s.hlc_below_pt == 0
                && s.hlc_order_violations == 0
                && s.hlc_rejected == 0;
            all_ok &= ok;
            ahead_max = ahead_max.max(s.hlc_ahead_ms_max);
            c_max = c_max.max(s.hlc_c_max);
            below += s.hlc_below_pt;
            order += s.hlc_order_violations;
            rejected += s.hlc_rejected;
            slack_min = slack_min.min(eps as i64 - s.hlc_ahead_ms_max as i64);
            c_slack_min = c_slack_min.min(bound_c as i64 - i64::from(s.hlc_c_max));
            println!(
                "{:>6} {:>12} {:>8} │ {:>13} {:>7} {:>9} {:>10} {:>7} │ {:>15}",
                eps,
                rate,
                s.events,
                s.hlc_ahead_ms_max,
                s.hlc_c_max,
                bound_c,
                format!(
                    "{}, {}",
                    s.hlc_below_pt,
                    s.hlc_order_violations + s.hlc_rejected
                ),
                if ok { "✓" } else { "✗ BROKEN" },
                if s.naive_ahead_ms_max > eps {
                    format!("{} (> ε)", s.naive_ahead_ms_max)
                } else {
                    s.naive_ahead_ms_max.to_string()
                }
            );
        }
    }

    // The naive clock over a longer run of the busiest schedule.
    let eps = *args.eps_ms.iter().max().expect("checked non-empty");
    let rate = *args.rates.iter().max().expect("checked non-empty");
    let mut checkpoints = args.checkpoints_ms.clone();
    checkpoints.sort_unstable();
    checkpoints.dedup();
    let duration_ms = *checkpoints.last().unwrap_or(&args.duration_ms);
    let cfg = Config {
        nodes: args.nodes,
        eps_ms: eps,
        rate,
        duration_ms,
        latency_us: (args.latency_us_min, args.latency_us_max),
        seed: args.seed,
    };
    let s = run(&cfg, &checkpoints);
    println!(
        "\nThe same schedule for longer (ε = {eps} ms, {rate} msgs/s per node): the largest \
         l − pt over the nodes, as time goes on.\n"
    );
    println!(
        "{:>10} │ {:>13} │ {:>15}",
        "time (ms)", "HLC l−pt", "naive l−pt"
    );
    for &(t, h, nv) in &s.checkpoints {
        let beyond = if nv > eps { " (> ε)" } else { "" };
        println!("{t:>10} │ {h:>13} │ {:>15}", format!("{nv}{beyond}"));
    }
    let growth = match (s.checkpoints.first(), s.checkpoints.last()) {
        (Some(a), Some(b)) if s.checkpoints.len() >= 2 => b.2 as i64 - a.2 as i64,
        _ => 0,
    };
    println!(
        "\nHLC: l − pt stayed within [0, ε] and c within N·(ε+1) in {} (largest c: {c_max}).",
        if all_ok { "every run" } else { "NOT every run" }
    );
    if growth > 0 {
        println!(
            "Naive: l − pt grew by {growth} ms between the first and last checkpoint, and keeps \
             growing as long as the messages keep coming: every hop that arrives within the \
             tick it was sent in adds 1 to l that physical time never pays back."
        );
    } else {
        println!(
            "Naive: l − pt did not grow on this schedule (try a higher rate or lower latency)."
        );
    }
    println!(
        "SUMMARY hlc_bounds_ok={} hlc_ahead_ms_max={ahead_max} hlc_eps_slack_ms_min={slack_min} \
         hlc_c_max={c_max} hlc_c_slack_min={c_slack_min} hlc_below_pt={below} \
         hlc_order_violations={order} hlc_rejected={rejected} naive_first_ms={} \
         naive_last_ms={} naive_growth_ms={growth}",
        all_ok,
        s.checkpoints.first().map_or(0, |c| c.2),
        s.checkpoints.last().map_or(0, |c| c.2),
    );
    Ok(())
}
