//! # Clock drift: why wall-clock order is not causal order
//!
//! A few nodes with imperfect physical clocks (an initial error, a rate error in parts per
//! million, and optional NTP corrections that step a clock, sometimes *backwards*) send
//! each other messages over links with random delay. Every event is stamped four ways:
//!
//! * **wall clock**: the node's physical clock in ms;
//! * **Lamport clock**: a counter (`meridian::clocks::LamportClock`);
//! * **vector clock**: one counter per node (`VectorClock`);
//! * **HLC**: a hybrid logical clock (`Hlc`), physical time plus a small counter.
//!
//! The simulation also knows the *true* causal order (happened-before), computed directly
//! from who sent what to whom, and grades each method against it.
//!
//! What to look for:
//!
//! * In the message table, rows where the wall clock says a message was received *before*
//!   (or at the same millisecond as) it was sent: a `✗` in the wall column. That happens
//!   whenever the receiver's clock is behind the sender's by more than the link delay.
//! * Lamport and HLC never get a causal pair wrong (`✓` everywhere); the vector clock
//!   neither, and it is the only one that recognises *concurrent* events as concurrent.
//! * In the summary, HLC stays as close to true time as the wall clock itself, and
//!   `l − pt` (how far HLC runs ahead of the local clock) never exceeds ε, the largest
//!   disagreement between the clocks, while it costs one `u64` like a wall-clock stamp.
//!
//! Then change a flag and watch the numbers move:
//!
//! ```text
//! cargo run --release --example clock_drift                          # defaults: 4 nodes, 30 messages
//! cargo run --release --example clock_drift -- --skew-ms 0 --drift-ppm 0   # perfect clocks: no violations
//! cargo run --release --example clock_drift -- --ntp-interval-ms 400  # NTP steps, some backwards
//! cargo run --release --example clock_drift -- --skew-ms 2000        # beyond the HLC's max offset
//! cargo run --release --example clock_drift -- --svg docs/clock_drift.svg
//! ```
//!
//! With `--svg FILE` it also writes a space-time diagram: one horizontal line per node,
//! an arrow per message, every event labelled with its wall (`w`), Lamport (`L`) and HLC
//! (`H`) time, and every causal pair the wall clock gets wrong drawn in red.
//!
//! The last line of output, starting `SUMMARY`, repeats the key numbers as `key=value`
//! pairs for scripts (the integration test reads it).

mod common;

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use common::{hlc_rel, mark, rel, T0_MS};
use meridian::clocks::{
    ClockError, DriftingClock, Hlc, HlcTimestamp, LamportClock, LamportTimestamp, ManualClock,
    PhysicalClock, ReplicaId, VectorClock,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// The truth is computed for every pair of events, so keep the run small enough for that.
const MESSAGES_MAX: usize = 5_000;
const NODES_MAX: usize = 26;

/// Simulate nodes with drifting clocks and see which clocks order their messages correctly.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Number of nodes (2..=26).
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Messages sent in total, between random pairs of nodes.
    #[arg(long, default_value_t = 30)]
    messages: usize,
    /// Initial clock error: each node starts a random amount between -SKEW and +SKEW ms
    /// off true time.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    skew_ms: i64,
    /// Rate error: each clock gains or loses a random amount up to this many parts per
    /// million (100 ppm = 0.1 ms per second; cheap quartz is 20-100 ppm).
    #[arg(long, default_value_t = 100)]
    drift_ppm: i64,
    /// Every this many ms of true time, NTP steps each clock back to within
    /// --ntp-error-ms of true time; a clock that ran ahead jumps backwards. 0 disables NTP.
    #[arg(long, default_value_t = 0)]
    ntp_interval_ms: u64,
    /// How far from true time an NTP correction leaves a clock (random, +/-).
    #[arg(long, default_value_t = 5)]
    ntp_error_ms: i64,
    /// Mean gap between two sends anywhere in the system, in ms.
    #[arg(long, default_value_t = 50)]
    send_gap_ms: u64,
    /// Shortest link delay, in ms.
    #[arg(long, default_value_t = 10)]
    delay_min_ms: u64,
    /// Longest link delay, in ms.
    #[arg(long, default_value_t = 60)]
    delay_max_ms: u64,
    /// The HLC refuses (holds back) a message stamped further than this ahead of its own
    /// clock, as Meridian's cart store does; it is delivered once the clock catches up.
    #[arg(long, default_value_t = 500)]
    max_offset_ms: u64,
    /// Random seed: the same seed gives the same run, on any platform.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write a space-time diagram (SVG) to this file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Print at most this many rows of the message table (rows with a wrong ordering first).
    #[arg(long, default_value_t = 40)]
    rows_max: usize,
}

/// Something that happens at a moment of true time.
#[derive(Debug)]
enum Action {
    Send(usize),
    Deliver(usize),
    Ntp(usize),
}

/// One message of the schedule, fixed before the run from the seed.
#[derive(Debug)]
struct Message {
    from: usize,
    to: usize,
    send_ms: u64,
    delay_ms: u64,
    /// Stamps carried by the message, filled in when it is sent.
    stamps: Option<(LamportTimestamp, VectorClock, HlcTimestamp)>,
    send_event: usize,
    recv_event: usize,
    /// How long the HLC held it back because it looked too far in the future.
    held_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Send(usize),
    Recv(usize),
}

/// One event (a send or a receive) with all its stamps.
#[derive(Debug)]
struct Event {
    node: usize,
    kind: Kind,
    true_ms: u64,
    /// The node's physical clock at the event: the wall-clock stamp, and HLC's `pt`.
    wall_ms: u64,
    lamport: LamportTimestamp,
    vc: VectorClock,
    hlc: HlcTimestamp,
}

/// An NTP step: at `true_ms`, node `node`'s clock jumped by `delta_ms`.
#[derive(Debug)]
struct Step {
    node: usize,
    true_ms: u64,
    delta_ms: i64,
}

struct Node {
    clock: DriftingClock,
    offset_ms: i64,
    drift_ppm: i64,
    lamport: LamportClock,
    vc: VectorClock,
    hlc: Hlc<DriftingClock>,
}

/// Per-method verdicts over every pair of events.
#[derive(Debug, Default)]
struct Grades {
    hb_pairs: u64,
    concurrent_pairs: u64,
    wall_violations: u64,
    wall_backwards_ms_max: u64,
    lamport_violations: u64,
    vc_violations: u64,
    vc_concurrent_detected: u64,
    hlc_violations: u64,
}

impl Grades {
    /// Pairs the vector clock gets wrong: ordered pairs it does not order, and concurrent
    /// pairs it does not call concurrent.
    fn vc_misjudged(&self) -> u64 {
        self.vc_violations + (self.concurrent_pairs - self.vc_concurrent_detected)
    }
}

struct Run {
    nodes: Vec<Node>,
    messages: Vec<Message>,
    events: Vec<Event>,
    steps: Vec<Step>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    check_args(&args)?;
    let run = simulate(&args)?;
    let past = causal_past(&run);
    let grades = grade(&run, &past);
    report(&args, &run, &grades)?;
    if let Some(path) = &args.svg {
        let svg = space_time_svg(&args, &run);
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        println!("Space-time diagram written to {}", path.display());
    }
    print_summary_line(&run, &grades)?;
    Ok(())
}

fn check_args(args: &Args) -> Result<()> {
    ensure!(
        (2..=NODES_MAX).contains(&args.nodes),
        "--nodes must be between 2 and {NODES_MAX}"
    );
    ensure!(
        (1..=MESSAGES_MAX).contains(&args.messages),
        "--messages must be between 1 and {MESSAGES_MAX} (every pair of events is graded)"
    );
    ensure!(args.skew_ms >= 0, "--skew-ms must be >= 0");
    ensure!(
        args.skew_ms <= 3_600_000,
        "--skew-ms must be at most an hour"
    );
    ensure!(args.drift_ppm >= 0, "--drift-ppm must be >= 0");
    ensure!(
        args.drift_ppm <= 500_000,
        "--drift-ppm must be at most 500000 (half speed)"
    );
    ensure!(args.ntp_error_ms >= 0, "--ntp-error-ms must be >= 0");
    ensure!(args.send_gap_ms >= 1, "--send-gap-ms must be >= 1");
    ensure!(
        args.delay_min_ms <= args.delay_max_ms,
        "--delay-min-ms must not exceed --delay-max-ms"
    );
    Ok(())
}

fn simulate(args: &Args) -> Result<Run> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let truth = ManualClock::new(T0_MS);
    let max_offset = Duration::from_millis(args.max_offset_ms);
    let nodes: Vec<Node> = (0..args.nodes)
        .map(|i| {
            let offset_ms = rng.gen_range(-args.skew_ms..=args.skew_ms);
            let drift_ppm = rng.gen_range(-args.drift_ppm..=args.drift_ppm);
            let clock = DriftingClock::new(truth.clone(), offset_ms, drift_ppm);
            Node {
                hlc: Hlc::new(clock.clone(), max_offset),
                clock,
                offset_ms,
                drift_ppm,
                lamport: LamportClock::new(replica(i)),
                vc: VectorClock::new(),
            }
        })
        .collect();

    // The schedule: who sends to whom, when, and how long the link takes.
    let mut messages = Vec::with_capacity(args.messages);
    let mut t = 0;
    for _ in 0..args.messages {
        t += rng.gen_range(1..=2 * args.send_gap_ms - 1);
        let from = rng.gen_range(0..args.nodes);
        let to = (from + rng.gen_range(1..args.nodes)) % args.nodes;
        messages.push(Message {
            from,
            to,
            send_ms: t,
            delay_ms: rng.gen_range(args.delay_min_ms..=args.delay_max_ms),
            stamps: None,
            send_event: usize::MAX,
            recv_event: usize::MAX,
            held_ms: 0,
        });
    }

    // Events in true-time order; ties go in insertion order.
    let mut queue: BinaryHeap<Reverse<(u64, u64, usize, u8)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |queue: &mut BinaryHeap<_>, at: u64, action: &Action| {
        let (i, tag) = match *action {
            Action::Send(i) => (i, 0),
            Action::Deliver(i) => (i, 1),
            Action::Ntp(i) => (i, 2),
        };
        queue.push(Reverse((at, seq, i, tag)));
        seq += 1;
    };
    for (i, m) in messages.iter().enumerate() {
        push(&mut queue, m.send_ms, &Action::Send(i));
    }
    if args.ntp_interval_ms > 0 {
        // Corrections are staggered: node j is corrected at phase j/N of each interval.
        let end = t + args.delay_max_ms;
        for j in 0..args.nodes {
            let mut at = args.ntp_interval_ms * (j as u64 + 1) / args.nodes as u64;
            while at <= end {
                push(&mut queue, at, &Action::Ntp(j));
                at += args.ntp_interval_ms;
            }
        }
    }

    let mut run = Run {
        nodes,
        messages,
        events: Vec::with_capacity(2 * args.messages),
        steps: Vec::new(),
    };
    while let Some(Reverse((at, _, i, tag))) = queue.pop() {
        truth.set(T0_MS + at);
        let action = match tag {
            0 => Action::Send(i),
            1 => Action::Deliver(i),
            _ => Action::Ntp(i),
        };
        match action {
            Action::Send(i) => {
                let m = &mut run.messages[i];
                let node = &mut run.nodes[m.from];
                let wall_ms = node.clock.now_ms();
                let lamport = node.lamport.tick();
                node.vc.increment(replica(m.from));
                let hlc = node.hlc.now();
                m.stamps = Some((lamport, node.vc.clone(), hlc));
                m.send_event = run.events.len();
                run.events.push(Event {
                    node: m.from,
                    kind: Kind::Send(i),
                    true_ms: at,
                    wall_ms,
                    lamport,
                    vc: node.vc.clone(),
                    hlc,
                });
                push(&mut queue, at + m.delay_ms, &Action::Deliver(i));
            }
            Action::Deliver(i) => {
                let m = &mut run.messages[i];
                let (lamport_m, vc_m, hlc_m) = m.stamps.clone().expect("sent before delivered");
                let node = &mut run.nodes[m.to];
                let wall_ms = node.clock.now_ms();
                let hlc = match node.hlc.update(hlc_m) {
                    Ok(ts) => ts,
                    Err(ClockError::RemoteAhead { ahead, .. }) => {
                        // Too far in this node's future: hold it back until the clock has
                        // caught up (as the cart store does), then try again.
                        let wait = (ahead.as_millis() as u64)
                            .saturating_sub(args.max_offset_ms)
                            .max(1);
                        m.held_ms += wait;
                        push(&mut queue, at + wait, &Action::Deliver(i));
                        continue;
                    }
                    Err(e) => bail!("unexpected HLC error: {e}"),
                };
                let lamport = node.lamport.observe(lamport_m);
                node.vc.merge(&vc_m);
                node.vc.increment(replica(m.to));
                m.recv_event = run.events.len();
                run.events.push(Event {
                    node: m.to,
                    kind: Kind::Recv(i),
                    true_ms: at,
                    wall_ms,
                    lamport,
                    vc: node.vc.clone(),
                    hlc,
                });
            }
            Action::Ntp(j) => {
                let node = &run.nodes[j];
                let residual = rng.gen_range(-args.ntp_error_ms..=args.ntp_error_ms);
                let delta_ms = residual - node.clock.error_ms();
                node.clock.step(delta_ms);
                run.steps.push(Step {
                    node: j,
                    true_ms: at,
                    delta_ms,
                });
            }
        }
    }
    Ok(run)
}

fn replica(i: usize) -> ReplicaId {
    ReplicaId(i as u64 + 1)
}

/// The ground truth, independent of every clock under test: `past[e]` is the set of events
/// that happened before `e` (Lamport's relation: earlier on the same node, or a send and
/// its receive, closed transitively), as a bitset over event indices.
fn causal_past(run: &Run) -> Vec<Vec<u64>> {
    let words = run.events.len().div_ceil(64);
    let mut past: Vec<Vec<u64>> = Vec::with_capacity(run.events.len());
    let mut last_on_node: Vec<Option<usize>> = vec![None; run.nodes.len()];
    for (e, ev) in run.events.iter().enumerate() {
        let mut set = vec![0u64; words];
        let include = |set: &mut Vec<u64>, p: usize, past: &[Vec<u64>]| {
            for (w, pw) in set.iter_mut().zip(&past[p]) {
                *w |= pw;
            }
            set[p / 64] |= 1 << (p % 64);
        };
        if let Some(p) = last_on_node[ev.node] {
            include(&mut set, p, &past);
        }
        if let Kind::Recv(m) = ev.kind {
            include(&mut set, run.messages[m].send_event, &past);
        }
        past.push(set);
        last_on_node[ev.node] = Some(e);
    }
    past
}

fn happened_before(past: &[Vec<u64>], a: usize, b: usize) -> bool {
    past[b][a / 64] & (1 << (a % 64)) != 0
}

fn grade(run: &Run, past: &[Vec<u64>]) -> Grades {
    let mut g = Grades::default();
    let ev = &run.events;
    for b in 0..ev.len() {
        for a in 0..b {
            // Events are recorded in true-time order, so only a → b is possible.
            let (x, y) = (&ev[a], &ev[b]);
            if happened_before(past, a, b) {
                g.hb_pairs += 1;
                if x.wall_ms >= y.wall_ms {
                    g.wall_violations += 1;
                    g.wall_backwards_ms_max = g.wall_backwards_ms_max.max(x.wall_ms - y.wall_ms);
                }
                g.lamport_violations += u64::from(x.lamport >= y.lamport);
                g.vc_violations += u64::from(x.vc.partial_cmp(&y.vc) != Some(Ordering::Less));
                g.hlc_violations += u64::from(x.hlc >= y.hlc);
            } else {
                g.concurrent_pairs += 1;
                if x.vc.is_concurrent(&y.vc) {
                    g.vc_concurrent_detected += 1;
                }
            }
        }
    }
    g
}

fn vc_str(vc: &VectorClock, n: usize) -> String {
    let parts: Vec<String> = (0..n).map(|i| vc.get(replica(i)).to_string()).collect();
    format!("[{}]", parts.join(" "))
}

/// Facts about the clocks over the run.
struct ClockFacts {
    /// ε: the spread of clock errors (reading − true time) over all events. Any two
    /// readings, on one node or two, at events in true-time order, differ by at most this
    /// much "in the wrong direction"; the HLC paper calls it the clock uncertainty.
    epsilon_ms: u64,
    wall_err_max_ms: u64,
    hlc_err_max_ms: u64,
    hlc_ahead_max_ms: u64,
    hlc_below_pt: u64,
    hlc_c_max: u16,
}

fn clock_facts(run: &Run) -> ClockFacts {
    let errs = run
        .events
        .iter()
        .map(|e| e.wall_ms as i64 - (T0_MS + e.true_ms) as i64);
    let (lo, hi) = errs.fold((i64::MAX, i64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let mut f = ClockFacts {
        epsilon_ms: (hi - lo).max(0) as u64,
        wall_err_max_ms: 0,
        hlc_err_max_ms: 0,
        hlc_ahead_max_ms: 0,
        hlc_below_pt: 0,
        hlc_c_max: 0,
    };
    for e in &run.events {
        let true_abs = (T0_MS + e.true_ms) as i64;
        let l = e.hlc.physical_ms();
        f.wall_err_max_ms = f
            .wall_err_max_ms
            .max((e.wall_ms as i64 - true_abs).unsigned_abs());
        f.hlc_err_max_ms = f.hlc_err_max_ms.max((l as i64 - true_abs).unsigned_abs());
        if l < e.wall_ms {
            f.hlc_below_pt += 1;
        }
        f.hlc_ahead_max_ms = f.hlc_ahead_max_ms.max(l.saturating_sub(e.wall_ms));
        f.hlc_c_max = f.hlc_c_max.max(e.hlc.logical());
    }
    f
}

/// Bytes each stamp takes on the wire, encoded with bincode's fixed-width integers.
fn encoded_len<T: serde::Serialize>(v: &T) -> Result<usize> {
    let config = bincode::config::standard().with_fixed_int_encoding();
    Ok(bincode::serde::encode_to_vec(v, config)?.len())
}

fn report(args: &Args, run: &Run, g: &Grades) -> Result<()> {
    let n = args.nodes;
    println!(
        "clock_drift: {} nodes, {} messages, seed {}; clocks start within ±{} ms of true time, \
         drift up to ±{} ppm, NTP {}",
        n,
        args.messages,
        args.seed,
        args.skew_ms,
        args.drift_ppm,
        if args.ntp_interval_ms == 0 {
            "off".to_string()
        } else {
            format!(
                "every {} ms (to within ±{} ms)",
                args.ntp_interval_ms, args.ntp_error_ms
            )
        }
    );
    println!("Times are ms since the start of the run: true time, or as each clock reads it.\n");
    println!("Clocks:");
    for (i, node) in run.nodes.iter().enumerate() {
        println!(
            "  {}  starts {:+} ms off true time, runs {:+} ppm ({:+.2} ms per second)",
            replica(i),
            node.offset_ms,
            node.drift_ppm,
            node.drift_ppm as f64 / 1000.0
        );
    }
    if !run.steps.is_empty() {
        let back = run.steps.iter().filter(|s| s.delta_ms < 0).count();
        let largest = run.steps.iter().map(|s| s.delta_ms).min().unwrap_or(0);
        println!(
            "  NTP stepped the clocks {} times, {} of them backwards (largest jump {:+} ms)",
            run.steps.len(),
            back,
            largest
        );
    }

    // Per message: does each method order send before receive?
    let mut rows: Vec<(bool, usize)> = run
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (s, r) = (&run.events[m.send_event], &run.events[m.recv_event]);
            (s.wall_ms < r.wall_ms, i)
        })
        .collect();
    let wall_wrong = rows.iter().filter(|(ok, _)| !ok).count();
    println!(
        "\nEvery message, send → receive (✗: the method puts the receive at or before the \
         send):\n"
    );
    println!(
        "{:>4}  {:<7} {:>7} {:>6}   {:<26} {:<13} {:<25} vector clock",
        "msg", "route", "sent at", "delay", "wall clock", "Lamport", "HLC (l/c)"
    );
    if rows.len() > args.rows_max {
        // Show the wrong ones first, then as many others as fit, in message order.
        rows.sort_by_key(|(ok, i)| (*ok, *i));
        rows.truncate(args.rows_max);
        rows.sort_by_key(|(_, i)| *i);
    }
    for &(_, i) in &rows {
        let m = &run.messages[i];
        let (s, r) = (&run.events[m.send_event], &run.events[m.recv_event]);
        let wall_ok = s.wall_ms < r.wall_ms;
        let wall = format!(
            "{} → {} {}{}",
            rel(s.wall_ms),
            rel(r.wall_ms),
            mark(wall_ok),
            if wall_ok {
                String::new()
            } else {
                format!(" {:+} ms", r.wall_ms as i64 - s.wall_ms as i64)
            }
        );
        let lamport = format!(
            "{} → {} {}",
            s.lamport.counter,
            r.lamport.counter,
            mark(s.lamport < r.lamport)
        );
        let hlc = format!(
            "{} → {} {}",
            hlc_rel(s.hlc),
            hlc_rel(r.hlc),
            mark(s.hlc < r.hlc)
        );
        let vc = format!(
            "{} → {} {}",
            vc_str(&s.vc, n),
            vc_str(&r.vc, n),
            mark(s.vc < r.vc)
        );
        let delay = if m.held_ms > 0 {
            format!("{}+{}", m.delay_ms, m.held_ms)
        } else {
            m.delay_ms.to_string()
        };
        println!(
            "{:>4}  {:<7} {:>7} {:>6}   {:<26} {:<13} {:<25} {}",
            format!("#{}", i + 1),
            format!("{}→{}", replica(m.from), replica(m.to)),
            rel(T0_MS + s.true_ms),
            delay,
            wall,
            lamport,
            hlc,
            vc
        );
    }
    if run.messages.len() > rows.len() {
        println!(
            "  … {} more messages, all ordered correctly by every method (--rows-max to see them)",
            run.messages.len() - rows.len()
        );
    }
    let held = run.messages.iter().filter(|m| m.held_ms > 0).count();
    if held > 0 {
        println!(
            "\n{held} message(s) arrived stamped more than {} ms ahead of the receiver's clock; \
             the HLC refused them and they were held back (\"delay\" shows +held ms) until the \
             receiver's clock caught up.",
            args.max_offset_ms
        );
    }

    let f = clock_facts(run);
    let lamport_len = encoded_len(&run.events[0].lamport)?;
    let hlc_len = encoded_len(&run.events[0].hlc)?;
    let wall_len = encoded_len(&run.events[0].wall_ms)?;
    let (mut vc_total, mut vc_max) = (0, 0);
    for m in &run.messages {
        let len = encoded_len(&run.events[m.send_event].vc)?;
        vc_total += len;
        vc_max = vc_max.max(len);
    }
    let vc_avg = vc_total as f64 / run.messages.len() as f64;

    println!(
        "\nSummary over all {} events: {} causally ordered pairs (a happened before b), {} \
         concurrent pairs.",
        run.events.len(),
        g.hb_pairs,
        g.concurrent_pairs
    );
    println!(
        "{wall_wrong} of {} messages look received before they were sent by wall clock.\n",
        run.messages.len()
    );
    println!(
        "{:<13} {:<36} {:<27} {:<22} bytes per message",
        "method", "causal pairs mis-ordered", "concurrent pairs detected", "max |stamp − true|",
    );
    let of = |x: u64, total: u64| format!("{x} of {total}");
    println!(
        "{:<13} {:<36} {:<27} {:<22} {}",
        "wall clock",
        if g.wall_violations > 0 {
            format!(
                "{} (up to {} ms backwards)",
                of(g.wall_violations, g.hb_pairs),
                g.wall_backwards_ms_max
            )
        } else {
            of(0, g.hb_pairs)
        },
        format!("{} (total order)", of(0, g.concurrent_pairs)),
        format!("{} ms", f.wall_err_max_ms),
        wall_len
    );
    println!(
        "{:<13} {:<36} {:<27} {:<22} {}",
        "Lamport",
        of(g.lamport_violations, g.hb_pairs),
        format!("{} (total order)", of(0, g.concurrent_pairs)),
        "n/a (counts events)",
        lamport_len
    );
    println!(
        "{:<13} {:<36} {:<27} {:<22} {vc_avg:.0} on average, {vc_max} max (grows with nodes)",
        "vector clock",
        of(g.vc_violations, g.hb_pairs),
        of(g.vc_concurrent_detected, g.concurrent_pairs),
        "n/a (counts events)",
    );
    println!(
        "{:<13} {:<36} {:<27} {:<22} {}",
        "HLC",
        of(g.hlc_violations, g.hb_pairs),
        format!("{} (total order)", of(0, g.concurrent_pairs)),
        format!("{} ms", f.hlc_err_max_ms),
        hlc_len
    );
    println!(
        "\nHLC bounds: ε (largest disagreement between clock readings) = {} ms; l − pt reached at \
         most {} ms ({}); l < pt at {} events (must be 0); largest counter c = {}.",
        f.epsilon_ms,
        f.hlc_ahead_max_ms,
        if f.hlc_ahead_max_ms <= f.epsilon_ms {
            "within ε"
        } else {
            "BEYOND ε"
        },
        f.hlc_below_pt,
        f.hlc_c_max
    );
    println!(
        "Vector clocks called {} ordered pairs concurrent or concurrent pairs ordered (must be 0).",
        g.vc_misjudged()
    );
    if g.wall_violations == 0 {
        println!(
            "\nNo wall-clock violations this time: the clocks disagree by less than the link \
             delays. Try a larger --skew-ms or --drift-ppm, or NTP corrections."
        );
    }
    Ok(())
}

fn print_summary_line(run: &Run, g: &Grades) -> Result<()> {
    let f = clock_facts(run);
    let msg_wall = run
        .messages
        .iter()
        .filter(|m| run.events[m.send_event].wall_ms >= run.events[m.recv_event].wall_ms)
        .count();
    let mut line = String::from("SUMMARY");
    let pairs: [(&str, u64); 16] = [
        ("events", run.events.len() as u64),
        ("hb_pairs", g.hb_pairs),
        ("concurrent_pairs", g.concurrent_pairs),
        ("wall_violations", g.wall_violations),
        ("wall_message_violations", msg_wall as u64),
        ("wall_backwards_ms_max", g.wall_backwards_ms_max),
        ("lamport_violations", g.lamport_violations),
        ("vc_violations", g.vc_violations),
        ("vc_concurrent_detected", g.vc_concurrent_detected),
        ("vc_misjudged", g.vc_misjudged()),
        ("hlc_violations", g.hlc_violations),
        ("hlc_below_pt", f.hlc_below_pt),
        ("hlc_ahead_ms_max", f.hlc_ahead_max_ms),
        ("epsilon_ms", f.epsilon_ms),
        (
            "held_back",
            run.messages.iter().filter(|m| m.held_ms > 0).count() as u64,
        ),
        (
            "ntp_backward_steps",
            run.steps.iter().filter(|s| s.delta_ms < 0).count() as u64,
        ),
    ];
    for (k, v) in pairs {
        write!(line, " {k}={v}")?;
    }
    println!("{line}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The space-time diagram.

const ROW_GAP: f64 = 150.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 160.0;
/// Events of one node are at least this far apart; labels alternate above and below the
/// line, so labels on one side are twice this apart.
const EVENT_GAP_MIN: f64 = 40.0;
const PX_PER_MS: f64 = 0.5;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// x position of every event: proportional to true time, stretched where events crowd so
/// that labels do not overlap. Strictly non-decreasing in true time, so arrows always point
/// forwards.
fn event_x(run: &Run) -> Vec<f64> {
    let mut xs = Vec::with_capacity(run.events.len());
    let mut last_on_node: Vec<Option<f64>> = vec![None; run.nodes.len()];
    let (mut prev_x, mut prev_t) = (LEFT + 20.0, 0u64);
    for (i, e) in run.events.iter().enumerate() {
        let mut x = if i == 0 {
            prev_x
        } else {
            prev_x + (e.true_ms - prev_t) as f64 * PX_PER_MS
        };
        if let Some(lx) = last_on_node[e.node] {
            x = x.max(lx + EVENT_GAP_MIN);
        }
        xs.push(x);
        last_on_node[e.node] = Some(x);
        (prev_x, prev_t) = (x, e.true_ms);
    }
    xs
}

/// x of true time `t`, interpolated between events.
fn time_x(run: &Run, xs: &[f64], t: f64) -> f64 {
    let ev = &run.events;
    let i = ev.partition_point(|e| (e.true_ms as f64) < t);
    if i == 0 {
        return xs[0] - (ev[0].true_ms as f64 - t) * PX_PER_MS;
    }
    if i == ev.len() {
        return xs[i - 1] + (t - ev[i - 1].true_ms as f64) * PX_PER_MS;
    }
    let (t0, t1) = (ev[i - 1].true_ms as f64, ev[i].true_ms as f64);
    if t1 == t0 {
        return xs[i];
    }
    xs[i - 1] + (xs[i] - xs[i - 1]) * (t - t0) / (t1 - t0)
}

fn space_time_svg(args: &Args, run: &Run) -> String {
    let xs = event_x(run);
    let n = run.nodes.len();
    let last_x = xs.last().copied().unwrap_or(LEFT);
    let width = (last_x + RIGHT + 40.0).max(900.0);
    let axis_y = TOP + (n as f64 - 1.0) * ROW_GAP + 80.0;
    let height = axis_y + 70.0;
    let y_of = |node: usize| TOP + node as f64 * ROW_GAP;
    let red = "#d62728";

    // Which events get a red wall label: the receive of a message the wall clock puts at
    // or before its send, and an event whose wall time is at or before the previous event
    // on its node (a backwards NTP step).
    let mut wall_bad = vec![false; run.events.len()];
    let mut last_on_node: Vec<Option<usize>> = vec![None; n];
    let mut bad_segments = Vec::new();
    for (i, e) in run.events.iter().enumerate() {
        if let Kind::Recv(m) = e.kind {
            let s = &run.events[run.messages[m].send_event];
            if s.wall_ms >= e.wall_ms {
                wall_bad[i] = true;
                wall_bad[run.messages[m].send_event] = true;
            }
        }
        if let Some(p) = last_on_node[e.node] {
            if run.events[p].wall_ms >= e.wall_ms {
                wall_bad[i] = true;
                wall_bad[p] = true;
                bad_segments.push((p, i));
            }
        }
        last_on_node[e.node] = Some(i);
    }

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="12">"##
    );
    let _ = writeln!(
        s,
        r##"<defs>
<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>
<marker id="arrow-red" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{red}"/></marker>
<style>
text {{ paint-order: stroke; stroke: white; stroke-width: 3px; stroke-linejoin: round; }}
.w {{ fill: #1f3b73; }} .l {{ fill: #2a7a2a; }} .h {{ fill: #7a3a9a; }} .bad {{ fill: {red}; font-weight: bold; }}
</style>
</defs>
<rect width="100%" height="100%" fill="white"/>"##
    );
    let title = format!(
        "Space-time diagram: {} nodes, {} messages (seed {}; clocks within ±{} ms, ±{} ppm{})",
        n,
        run.messages.len(),
        args.seed,
        args.skew_ms,
        args.drift_ppm,
        if args.ntp_interval_ms > 0 {
            format!(", NTP every {} ms", args.ntp_interval_ms)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        r##"<text x="20" y="30" font-size="18" font-weight="bold">{}</text>"##,
        esc(&title)
    );
    let _ = writeln!(
        s,
        r##"<text x="20" y="54" font-size="13">Each dot is an event (● send, ○ receive), labelled with its <tspan class="w">w: wall clock</tspan>, <tspan class="l">L: Lamport</tspan> and <tspan class="h">H: HLC l/c</tspan> stamps (ms since the start).</text>"##
    );
    let _ = writeln!(
        s,
        r##"<text x="20" y="74" font-size="13"><tspan class="bad">Red</tspan>: the wall clock puts an effect at or before its cause (a message received "before" it was sent, or a clock stepped backwards). Lamport and HLC never do.</text>"##
    );

    // Node lines and names.
    for (j, node) in run.nodes.iter().enumerate() {
        let y = y_of(j);
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#999" stroke-width="2"/>"##,
            LEFT,
            width - RIGHT + 20.0
        );
        let _ = writeln!(
            s,
            r##"<text x="20" y="{:.1}" font-size="16" font-weight="bold">node {}</text>"##,
            y - 4.0,
            replica(j)
        );
        let _ = writeln!(
            s,
            r##"<text x="20" y="{:.1}" font-size="11" fill="#555">{:+} ms, {:+} ppm</text>"##,
            y + 14.0,
            node.offset_ms,
            node.drift_ppm
        );
    }
    for &(p, i) in &bad_segments {
        let y = y_of(run.events[i].node);
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{red}" stroke-width="4"/>"##,
            xs[p], xs[i]
        );
    }

    // NTP steps.
    for step in run.steps.iter().filter(|s| s.delta_ms != 0) {
        let x = time_x(run, &xs, step.true_ms as f64);
        let y = y_of(step.node);
        let colour = if step.delta_ms < 0 { red } else { "#e08a00" };
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2" stroke-dasharray="3,2"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="{colour}">NTP {:+}</text>"##,
            y - 10.0,
            y + 10.0,
            y + 62.0,
            step.delta_ms
        );
    }

    // Messages.
    for m in &run.messages {
        let (a, b) = (m.send_event, m.recv_event);
        let (sa, sb) = (&run.events[a], &run.events[b]);
        let bad = sa.wall_ms >= sb.wall_ms;
        let (x1, y1, x2, y2) = (xs[a], y_of(sa.node), xs[b], y_of(sb.node));
        // Stop the arrow at the receiving dot's edge.
        let (dx, dy) = (x2 - x1, y2 - y1);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let (ex, ey) = (x2 - dx / len * 6.0, y2 - dy / len * 6.0);
        let (colour, marker, w, opacity) = if bad {
            (red, "arrow-red", 2.2, 1.0)
        } else {
            ("#555", "arrow", 1.2, 0.75)
        };
        let _ = writeln!(
            s,
            r##"<line x1="{x1:.1}" y1="{y1:.1}" x2="{ex:.1}" y2="{ey:.1}" stroke="{colour}" stroke-width="{w}" stroke-opacity="{opacity}" marker-end="url(#{marker})"/>"##
        );
    }

    // Events and their labels: alternate above and below the line per node.
    let mut count_on_node = vec![0usize; n];
    for (i, e) in run.events.iter().enumerate() {
        let (x, y) = (xs[i], y_of(e.node));
        let above = count_on_node[e.node] % 2 == 0;
        count_on_node[e.node] += 1;
        let fill = match e.kind {
            Kind::Send(_) => "black",
            Kind::Recv(_) => "white",
        };
        let _ = writeln!(
            s,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="4.5" fill="{fill}" stroke="black" stroke-width="1.5"/>"##
        );
        let lines = [
            (
                if wall_bad[i] { "w bad" } else { "w" },
                format!("w{}", rel(e.wall_ms)),
            ),
            ("l", format!("L{}", e.lamport.counter)),
            ("h", format!("H{}", hlc_rel(e.hlc))),
        ];
        for (k, (class, text)) in lines.iter().enumerate() {
            let dy = if above {
                -12.0 - 13.0 * (2 - k) as f64
            } else {
                22.0 + 13.0 * k as f64
            };
            let _ = writeln!(
                s,
                r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" class="{class}">{}</text>"##,
                y + dy,
                esc(text)
            );
        }
    }

    // True-time axis.
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT:.1}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#333"/>"##,
        width - RIGHT + 20.0
    );
    let t_end = run.events.last().map_or(0, |e| e.true_ms);
    let tick_ms = [50, 100, 250, 500, 1000, 2000, 5000, 10_000, 60_000]
        .into_iter()
        .find(|&t| t_end / t <= 12)
        .unwrap_or(60_000);
    let mut t = 0;
    let mut last_label_x = f64::MIN;
    while t <= t_end + tick_ms {
        let x = time_x(run, &xs, t as f64);
        if x >= LEFT && x <= width - RIGHT + 20.0 && x - last_label_x >= 45.0 {
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{axis_y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11">{t}</text>"##,
                axis_y + 6.0,
                axis_y + 20.0
            );
            last_label_x = x;
        }
        t += tick_ms;
    }
    let _ = writeln!(
        s,
        r##"<text x="20" y="{:.1}" font-size="12">true time (ms)</text><text x="{LEFT:.1}" y="{:.1}" font-size="12" fill="#555">x: true time, stretched where events crowd so that labels stay readable; arrows: messages</text>"##,
        axis_y + 4.0,
        axis_y + 44.0
    );
    s.push_str("</svg>\n");
    s
}
