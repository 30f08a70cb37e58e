//! The scheduler: one seeded generator drives client requests, commits, crashes,
//! partitions, connection flaps and message faults over virtual time, then everything
//! heals and the cluster must reach quiescence, where the model's checks run.
//!
//! Time jumps from event to event (the next packet, commit, timer, restart or scheduler
//! action); nothing sleeps.

use crate::cluster::{Cluster, NodeSpec};
use crate::model::{token_progress, Model};
use crate::network::{random_partition, Faults, Network, Partition, Sent};
use crate::trace::{describe, Trace};
use crate::workload::{cart_name, Workload, CARTS};
use meridian_cart_store_core::replication::{Event, Message, ReplicationConfig};
use meridian_cart_store_core::{
    codec, read_cart, read_log_raw, CartId, Durability, MemStorage, NodeError, Op, WriteRequest,
};
use meridian_clocks::{PhysicalClock, ReplicaId};
use meridian_testkit::SplitMix64 as Rng;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest wait from a client request (or a received delta) to its commit.
const COMMIT_DELAY_MAX_MS: u64 = 5;
/// Longest gap between two scheduler actions.
const ACTION_GAP_MAX_MS: u64 = 20;
/// Longest downtime after a crash.
const DOWNTIME_MAX_MS: u64 = 400;
/// Most answers whose causal past is re-joined and compared, per run.
const ANSWERS_CHECKED_MAX: usize = 40;

/// A deliberately broken driver, to show the checker catches what a correct core must not
/// do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Node 0's driver acknowledges received entries on its behalf before they are
    /// committed (a forged `Ack` to every peer), then loses them in a power failure.
    AckBeforeCommit,
    /// Node 0's disk lies about fsync: a power failure brings back an older durable state
    /// than the node was told, so it hands out seqs (and dots) its peers have seen.
    LyingFsync,
    /// Node 0's driver compacts its own adds up to what it has applied, not up to what is
    /// causally stable: a remove still on its way that saw only some of them then drops
    /// too little.
    CompactUnstable,
}

/// With `Bug::LyingFsync`: when node 0's disk is snapshotted, and when it then fails.
const LYING_SNAPSHOT_MS: u64 = 300;
const LYING_CRASH_MS: u64 = 1_200;

/// The node whose driver carries the planted bug.
const BUG_NODE: usize = 0;

#[derive(Clone, Debug)]
pub struct Options {
    /// Virtual time with faults, before everything heals.
    pub fault_ms: u64,
    /// After healing, the cluster must be quiescent within this.
    pub quiesce_ms_max: u64,
    pub bug: Option<Bug>,
    /// Fail at once on the core's own alarms (`Event::Behind`: entries a peer needs were
    /// trimmed). Off, the model alone must notice what went wrong.
    pub fail_on_alarm: bool,
    pub trace_all: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fault_ms: env_u64("SIM_FAULT_MS").unwrap_or(2_000),
            quiesce_ms_max: 60_000,
            bug: None,
            fail_on_alarm: std::env::var_os("SIM_IGNORE_ALARMS").is_none(),
            trace_all: std::env::var_os("SIM_TRACE").is_some(),
        }
    }
}

/// A failed run: what the checker found, and the last events.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub trace: String,
}

/// What a successful run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub writes: usize,
    /// Compaction writes committed.
    pub compactions: u64,
    /// Removes (and sets, clears, checkouts) applied at a node after it had applied a
    /// compaction of adds the remove had seen only some of: the case compaction must get
    /// right.
    pub dangerous: u64,
    pub packets: u64,
    pub crashes: u32,
    /// Virtual time at quiescence.
    pub end_ms: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.writes += other.writes;
        self.compactions += other.compactions;
        self.dangerous += other.dangerous;
        self.packets += other.packets;
        self.crashes += other.crashes;
        self.end_ms += other.end_ms;
    }
}

/// One random cluster for `seed`.
pub fn random_setup(rng: &mut Rng) -> (Vec<NodeSpec>, Faults) {
    let n = 3 + rng.below(3) as usize;
    let specs = (0..n).map(|i| random_spec(rng, i, n)).collect();
    let delay_max_ms = 2 + rng.below(60);
    let faults = Faults {
        drop_p: [0.0, 0.02, 0.1, 0.3][rng.below(4) as usize],
        duplicate_p: [0.0, 0.05, 0.2][rng.below(3) as usize],
        delay_min_ms: 1,
        delay_max_ms,
        hello_loss: std::env::var_os("SIM_HELLO_LOSS").is_some(),
        hello_reorder: std::env::var_os("SIM_HELLO_REORDER").is_some(),
    };
    (specs, faults)
}

pub fn region(i: usize) -> String {
    format!("r{i}")
}

pub fn config_for(i: usize, n: usize, durability: Durability) -> ReplicationConfig {
    let peers = (0..n).filter(|j| *j != i).map(region).collect();
    let mut config = ReplicationConfig::new(region(i), peers, durability);
    // Compaction rounds often, so that it races the removes still in flight.
    config.compaction_interval = Duration::from_millis(40);
    config
}

/// The nodes' max clock offset (the `NodeConfig` default), in ms.
const MAX_OFFSET_MS: u64 = 500;

/// Longest an offloaded sync takes, in virtual ms.
const SYNC_DELAY_MAX_MS: u64 = 8;

fn random_spec(rng: &mut Rng, i: usize, n: usize) -> NodeSpec {
    let durability = if rng.chance(0.5) {
        Durability::Process
    } else {
        Durability::Fsync
    };
    let mut config = config_for(i, n, durability);
    config.batch_window = Duration::from_millis(rng.below(10));
    config.batch_bytes_max = 100 + rng.below(500) as usize;
    config.inflight_bytes_max = 600 + rng.below(2000) as usize;
    config.resend_timeout = Duration::from_millis(200);
    config.forward_after = Duration::from_millis(300);
    config.inbox_entries_max = 2 + rng.below(15) as usize;
    // As the node's writer does: the sync runs elsewhere and finishes later.
    config.offload_sync = rng.chance(0.5);
    // Half the seeds keep only a few log entries for a peer that has not acknowledged
    // them: peers cut off or down for a while fall behind the log and need anti-entropy.
    if rng.chance(0.5) {
        config.log_retention_entries = 2 + rng.below(30);
        if rng.chance(0.3) {
            // A slow limiter: sessions span many rounds, and break more.
            config.anti_entropy_bytes_per_sec = 64 * 1024;
        }
    }
    // Clocks within the max offset (500 ms), and now and then one well past it, whose
    // writes the others hold back until their clocks catch up.
    let skew_ms = if rng.chance(0.08) {
        600 + rng.below(1500)
    } else {
        rng.below(201)
    };
    NodeSpec { config, skew_ms }
}

/// Runs one random seed; `Err` is what the checker found.
pub fn run(seed: u64, options: &Options) -> Result<Stats, Failure> {
    let mut rng = Rng::new(seed);
    let (specs, faults) = random_setup(&mut rng);
    let mut sim = Sim::new(rng, specs, faults, options.clone()).map_err(|message| Failure {
        message,
        trace: String::new(),
    })?;
    let result = sim.run_faults().and_then(|()| sim.heal_and_check());
    match result {
        Ok(()) => Ok(sim.stats()),
        Err(message) => Err(Failure {
            message,
            trace: sim.trace.dump(),
        }),
    }
}

/// The whole simulated world.
pub struct Sim {
    rng: Rng,
    pub now_ms: u64,
    pub cluster: Cluster,
    pub net: Network,
    pub model: Model,
    pub trace: Trace,
    workload: Workload,
    options: Options,
    next_action_ms: u64,
    /// Per node, the last seq its restart must find (set at a crash).
    restart_last_seq: Vec<Option<u64>>,
    /// Per node: it has merged cart states by anti-entropy (ever, across restarts).
    repaired: Vec<bool>,
    /// Some clock is past the max offset: held-back deltas are expected, not an alarm.
    expect_held_back: bool,
    /// Some node has a short log retention: peers behind it are expected.
    expect_behind: bool,
    bug_crash_ms: Option<u64>,
    /// With `Bug::LyingFsync`: the older state node 0's disk will come back with.
    lying_disk: Option<MemStorage>,
    crashes_of_bug_node: u32,
    packets: u64,
    crashes: u32,
    compactions: u64,
    dangerous: u64,
}

impl Sim {
    pub fn new(
        rng: Rng,
        specs: Vec<NodeSpec>,
        faults: Faults,
        options: Options,
    ) -> Result<Self, String> {
        let n = specs.len();
        let mut trace = Trace::new(options.trace_all);
        for s in &specs {
            let c = &s.config;
            trace.log(0, || {
                format!(
                    "{} {:?} batch_window {:?} batch_bytes_max {} inflight_bytes_max {} inbox_entries_max {} skew {} ms",
                    c.region, c.durability, c.batch_window, c.batch_bytes_max, c.inflight_bytes_max, c.inbox_entries_max, s.skew_ms
                )
            });
        }
        trace.log(0, || format!("{faults:?}"));
        // What this setup makes normal: deltas held back (a clock past the max offset) and
        // peers behind the trimmed log (a short retention).
        let skews: Vec<u64> = specs.iter().map(|s| s.skew_ms).collect();
        let expect_held_back =
            skews.iter().max().unwrap_or(&0) - skews.iter().min().unwrap_or(&0) > MAX_OFFSET_MS;
        let expect_behind = specs.iter().any(|s| {
            s.config.log_retention_entries
                < meridian_cart_store_core::replication::LOG_RETENTION_ENTRIES_DEFAULT
        });
        let cluster = Cluster::start(specs, Instant::now())?;
        let mut sim = Sim {
            rng,
            now_ms: 0,
            cluster,
            net: Network::new(faults),
            model: Model::default(),
            trace,
            workload: Workload::default(),
            options,
            next_action_ms: 0,
            restart_last_seq: vec![None; n],
            repaired: vec![false; n],
            expect_held_back,
            expect_behind,
            bug_crash_ms: None,
            lying_disk: None,
            crashes_of_bug_node: 0,
            packets: 0,
            compactions: 0,
            dangerous: 0,
            crashes: 0,
        };
        sim.sync_connections();
        Ok(sim)
    }

    pub fn stats(&self) -> Stats {
        Stats {
            writes: self.model.writes.len(),
            compactions: self.compactions,
            dangerous: self.dangerous,
            packets: self.packets,
            crashes: self.crashes,
            end_ms: self.now_ms,
        }
    }

    fn n(&self) -> usize {
        self.cluster.nodes.len()
    }

    fn run_faults(&mut self) -> Result<(), String> {
        while self.now_ms < self.options.fault_ms {
            self.step(true)?;
        }
        Ok(())
    }

    /// Heals everything, runs to quiescence and checks the model.
    pub fn heal_and_check(&mut self) -> Result<(), String> {
        self.heal();
        self.run_to_quiescence()?;
        self.check_final()
    }

    pub fn heal(&mut self) {
        self.trace.log(self.now_ms, || {
            "heal: all partitions, no more drops, every node restarts".into()
        });
        self.net.heal();
        self.net.faults.drop_p = 0.0;
        for node in &mut self.cluster.nodes {
            node.restart_at_ms = node.restart_at_ms.min(self.now_ms);
        }
        self.bug_crash_ms = None;
        self.sync_connections();
    }

    /// Steps until the cluster is quiescent; past `quiesce_ms_max`, says who is stuck.
    pub fn run_to_quiescence(&mut self) -> Result<(), String> {
        let deadline_ms = self.now_ms + self.options.quiesce_ms_max;
        while !self.quiescent() {
            if self.now_ms > deadline_ms {
                return Err(self.stuck_report());
            }
            self.step(false)?;
        }
        self.trace.log(self.now_ms, || "quiescent".into());
        Ok(())
    }

    /// Steps until `until_ms` (no random actions).
    pub fn run_until(&mut self, until_ms: u64) -> Result<(), String> {
        while self.now_ms < until_ms {
            self.step(false)?;
        }
        Ok(())
    }

    /// One instant: scheduler actions, restarts, deliveries, then each node's driver.
    fn step(&mut self, faults: bool) -> Result<(), String> {
        if faults && self.now_ms >= self.next_action_ms {
            self.act()?;
            self.next_action_ms = self.now_ms + 1 + self.rng.below(ACTION_GAP_MAX_MS);
        }
        self.restart_due()?;
        self.bug_crash_due()?;
        self.lying_fsync_due()?;
        self.deliver_due()?;
        for i in 0..self.n() {
            self.drive(i)?;
        }
        let next_ms = self.next_event_ms(faults);
        self.now_ms = next_ms.max(self.now_ms + 1);
        Ok(())
    }

    fn next_event_ms(&self, faults: bool) -> u64 {
        let mut next = u64::MAX;
        let mut at = |t: u64| next = next.min(t);
        if faults {
            at(self.next_action_ms);
        }
        if let Some(t) = self.net.next_delivery_ms() {
            at(t);
        }
        if let Some(t) = self.bug_crash_ms {
            at(t);
        }
        for node in &self.cluster.nodes {
            match &node.replica {
                None => at(node.restart_at_ms),
                Some(r) => {
                    if let Some(t) = r.poll_timeout() {
                        at(self.cluster.ms_of(t));
                    }
                    if let Some(t) = node.commit_due_ms {
                        at(t);
                    }
                    if let Some((t, _)) = &node.sync_running {
                        at(*t);
                    }
                }
            }
        }
        next
    }

    // ---- scheduler actions -------------------------------------------------------------

    fn act(&mut self) -> Result<(), String> {
        match self.rng.below(1000) {
            0..=449 => self.client_requests(),
            450..=464 => self.partition(),
            465..=484 => self.heal_one(),
            485..=490 => self.crash_random(true)?,
            491..=496 => self.crash_random(false)?,
            497..=510 => self.flap(),
            511..=515 => self.change_faults(),
            516..=600 if self.options.bug == Some(Bug::CompactUnstable) => self.compact_unstable(),
            _ => {}
        }
        Ok(())
    }

    fn client_requests(&mut self) {
        let (count, n) = (1 + self.rng.below(2), self.n());
        for _ in 0..count {
            let node = self.rng.below(n as u64) as usize;
            let (at, req) = self.workload.next(&mut self.rng, node, n);
            self.submit(at, req);
        }
    }

    /// The planted bug: node 0 compacts a cart's own adds up to everything it has applied.
    fn compact_unstable(&mut self) {
        let node = &self.cluster.nodes[BUG_NODE];
        let Some(r) = node.replica.as_ref() else {
            return;
        };
        let id = CartId::parse(&cart_name(self.rng.below(CARTS))).expect("valid cart");
        let Ok(cart) = read_cart(r.node().storage(), &id) else {
            return;
        };
        let me = node.node_id;
        let mut frontier = meridian_clocks::VectorClock::new();
        frontier.observe(me, cart.context().max_counter(me));
        self.submit(
            BUG_NODE,
            WriteRequest::new(id, Op::Compact { stable: frontier }),
        );
    }

    /// A client sends `req` to node `at` (lost if the node is down).
    pub fn submit(&mut self, at: usize, req: WriteRequest) {
        let now_ms = self.now_ms;
        let node = &mut self.cluster.nodes[at];
        if !node.is_up() {
            self.trace.log(now_ms, || {
                format!("r{at} down: client request {req:?} fails")
            });
            return;
        }
        self.trace.log(now_ms, || {
            format!("r{at} client {} {:?}{}", req.cart, req.op, key_str(&req))
        });
        node.pending.push(req);
    }

    fn partition(&mut self) {
        let n = self.n();
        for p in random_partition(&mut self.rng, n) {
            self.add_partition(p);
        }
    }

    pub fn add_partition(&mut self, p: Partition) {
        self.trace.log(self.now_ms, || format!("partition {p:?}"));
        self.net.add_partition(p);
        self.sync_connections();
    }

    fn heal_one(&mut self) {
        let count = self.net.partitions().len();
        if count == 0 {
            return;
        }
        let p = self
            .net
            .remove_partition(self.rng.below(count as u64) as usize);
        self.trace.log(self.now_ms, || format!("heal {p:?}"));
        self.sync_connections();
    }

    /// Drops and re-establishes one connection (both ends see a new connection).
    fn flap(&mut self) {
        let a = self.rng.below(self.n() as u64) as usize;
        let b = (a + 1 + self.rng.below(self.n() as u64 - 1) as usize) % self.n();
        if !self.cluster.is_connected(a, b) {
            return;
        }
        self.trace
            .log(self.now_ms, || format!("connection r{a}-r{b} flaps"));
        self.disconnect(a, b);
        self.cluster.connect(a, b, self.now_ms);
    }

    fn change_faults(&mut self) {
        let f = &mut self.net.faults;
        f.drop_p = [0.0, 0.05, 0.2, 0.5][self.rng.below(4) as usize];
        f.delay_max_ms = 2 + self.rng.below(100);
        let faults = *f;
        self.trace
            .log(self.now_ms, || format!("faults now {faults:?}"));
    }

    fn crash_random(&mut self, power: bool) -> Result<(), String> {
        let i = self.rng.below(self.n() as u64) as usize;
        if self.cluster.nodes[i].is_up() {
            self.crash(i, power)?;
        }
        Ok(())
    }

    /// Crashes node `i`: a power failure keeps only synced writes; a process crash keeps
    /// all. Either way its peer state and queued client requests are gone.
    pub fn crash(&mut self, i: usize, power: bool) -> Result<(), String> {
        // Merged anti-entropy states outlive the process (a power failure may take them
        // back, which only makes the flag conservative).
        self.repaired[i] |= self.cluster.nodes[i].replica.as_ref().is_some_and(|r| {
            r.peers()
                .iter()
                .any(|p| p.anti_entropy().carts_received > 0)
        });
        self.crash_onto(i, power, None)
    }

    /// Crashes node `i`; a power failure brings back `disk` if given (a lying disk).
    fn crash_onto(
        &mut self,
        i: usize,
        power: bool,
        disk: Option<MemStorage>,
    ) -> Result<(), String> {
        self.crashes += 1;
        let now_ms = self.now_ms;
        let downtime_ms = self.rng.below(DOWNTIME_MAX_MS);
        let node = &self.cluster.nodes[i];
        let origin = node.node_id.0;
        let replica = node.replica.as_ref().expect("crash of a node that is up");
        let (storage, last_seq) = if power {
            let storage = disk.unwrap_or_else(|| node.storage.crash());
            let known = node.durable_own();
            if self.options.bug == Some(Bug::LyingFsync) {
                // The planted bug: the node believes `known` is durable; the ledger must
                // catch what the disk lost.
                self.model.power_failure(i, origin, known)?;
                (storage, known)
            } else {
                // What survived: at least what the replica knew durable (an offloaded sync
                // may have made more durable than it has heard of yet).
                let survived = match meridian_cart_store_core::Storage::get(
                    &storage,
                    meridian_cart_store_core::Cf::Meta,
                    codec::META_SEQ,
                ) {
                    Ok(Some(v)) => codec::decode_u64("seq", &v).map_err(|e| e.to_string())?,
                    Ok(None) => 0,
                    Err(e) => return Err(e.to_string()),
                };
                if survived < known {
                    return Err(format!(
                        "r{i} lost durable writes in a power failure: seq {known} was durable, \
                         {survived} survived"
                    ));
                }
                self.model.power_failure(i, origin, survived)?;
                (storage, survived)
            }
        } else {
            (node.storage.reopen(), replica.node().last_seq())
        };
        let kind = if power {
            "power failure"
        } else {
            "process crash"
        };
        self.trace.log(now_ms, || {
            format!("r{i} {kind} (last seq {last_seq} survives), down {downtime_ms} ms")
        });
        self.restart_last_seq[i] = Some(last_seq);
        self.cluster.nodes[i].stop(storage, now_ms + downtime_ms);
        let dropped = self.net.drop_to(i);
        self.trace
            .log(now_ms, || format!("{dropped} packets to r{i} vanish"));
        self.sync_connections();
        Ok(())
    }

    fn restart_due(&mut self) -> Result<(), String> {
        let mut restarted = false;
        for i in 0..self.n() {
            let node = &self.cluster.nodes[i];
            if node.is_up() || node.restart_at_ms > self.now_ms {
                continue;
            }
            let now = self.cluster.at(self.now_ms);
            self.cluster.nodes[i].start(now, self.now_ms)?;
            let last_seq = self.cluster.nodes[i]
                .replica
                .as_ref()
                .map(|r| r.node().last_seq());
            let lying = self.options.bug == Some(Bug::LyingFsync);
            if let (Some(want), Some(got), false) = (self.restart_last_seq[i], last_seq, lying) {
                if want != got {
                    return Err(format!(
                        "r{i} restarted with last seq {got}, but {want} was durable"
                    ));
                }
            }
            self.trace
                .log(self.now_ms, || format!("r{i} restarts at seq {last_seq:?}"));
            restarted = true;
        }
        if restarted {
            self.sync_connections();
        }
        Ok(())
    }

    /// Brings connections in line with partitions and which nodes are up.
    fn sync_connections(&mut self) {
        let n = self.n();
        for a in 0..n {
            for b in a + 1..n {
                let want = self.net.may_connect(a, b)
                    && self.cluster.nodes[a].is_up()
                    && self.cluster.nodes[b].is_up();
                if want == self.cluster.is_connected(a, b) {
                    continue;
                }
                let what = if want { "up" } else { "down" };
                self.trace
                    .log(self.now_ms, || format!("connection r{a}-r{b} {what}"));
                if want {
                    self.cluster.connect(a, b, self.now_ms);
                } else {
                    self.disconnect(a, b);
                }
            }
        }
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        self.cluster.disconnect(a, b, self.now_ms);
        let lost = self.net.close(a, b);
        if lost > 0 {
            self.trace.log(self.now_ms, || {
                format!("{lost} hellos r{a}-r{b} die with their connection")
            });
        }
    }

    // ---- the network -------------------------------------------------------------------

    fn deliver_due(&mut self) -> Result<(), String> {
        while let Some(p) = self.net.pop_due(self.now_ms) {
            let (from, to) = (p.from, p.to);
            if !self.cluster.nodes[to].is_up() {
                self.trace.log(self.now_ms, || {
                    format!(
                        "r{from}->r{to} {} lost: r{to} is down",
                        describe(&p.message)
                    )
                });
                continue;
            }
            if let Message::Deltas { entries, .. } = &p.message {
                for e in entries {
                    self.model.record_delivered(e.origin.0, e.seq, &e.record)?;
                }
                // Stability must not run ahead of what is still arriving.
                let r = self.cluster.nodes[to].replica.as_ref().expect("up");
                let stable: BTreeMap<u64, u64> = r
                    .stable_progress()
                    .into_iter()
                    .map(|(o, s)| (o.0, s))
                    .collect();
                let me = self.cluster.nodes[to].node_id;
                let (own, last) = (me.0, r.node().last_seq());
                let applied = |k: (u64, u64)| {
                    if k.0 == own {
                        k.1 <= last
                    } else {
                        r.node().remote_progress(ReplicaId(k.0)) >= k.1
                    }
                };
                for e in entries {
                    if e.seq > r.node().remote_progress(e.origin) {
                        self.model.check_stable(to, &stable, e.origin.0, e.seq)?;
                        if self.model.is_dangerous((e.origin.0, e.seq), &applied) {
                            self.dangerous += 1;
                            self.trace.log(self.now_ms, || {
                                format!(
                                    "r{to} receives ({}, {}), which saw only some of the adds a compaction it applied coalesced",
                                    e.origin.0, e.seq
                                )
                            });
                        }
                    }
                }
            }
            self.trace.log(self.now_ms, || {
                format!("r{from}->r{to} deliver {}", describe(&p.message))
            });
            let forged = self.forged_ack(to, &p.message);
            let now = self.cluster.at(self.now_ms);
            let from_region = self.cluster.nodes[from].region.clone();
            let node = &mut self.cluster.nodes[to];
            node.set_clock(self.now_ms);
            let replica = node.replica.as_mut().expect("up");
            replica
                .handle_message(now, &from_region, p.message)
                .map_err(|e| format!("r{to} refused a message from r{from}: {e}"))?;
            if let Some(ack) = forged {
                self.send_forged(to, ack);
            }
        }
        Ok(())
    }

    fn send(&mut self, from: usize, to: usize, message: Message) {
        if !self.cluster.is_connected(from, to) {
            self.trace.log(self.now_ms, || {
                format!(
                    "r{from}->r{to} {} not sent: no connection",
                    describe(&message)
                )
            });
            return;
        }
        let desc = describe(&message);
        self.packets += 1;
        let sent = self.net.send(&mut self.rng, self.now_ms, from, to, message);
        let what = match sent {
            Sent::Queued(1) => "send",
            Sent::Queued(_) => "send twice",
            Sent::Blocked => "blocked (one-way partition)",
            Sent::Dropped => "dropped",
        };
        self.trace
            .log(self.now_ms, || format!("r{from}->r{to} {what} {desc}"));
    }

    // ---- the planted bug ---------------------------------------------------------------

    /// With the planted bug, the Ack node `to`'s driver forges on receiving `m`: its
    /// durable progress extended by the entries that only reached its inbox.
    fn forged_ack(&mut self, to: usize, m: &Message) -> Option<Message> {
        if self.options.bug != Some(Bug::AckBeforeCommit) || to != BUG_NODE {
            return None;
        }
        let Message::Deltas { entries, .. } = m else {
            return None;
        };
        let node = &self.cluster.nodes[to];
        let replica = node.replica.as_ref()?;
        let mut progress: BTreeMap<ReplicaId, u64> = replica.node().durable_progress().clone();
        for e in entries.iter().filter(|e| e.origin != node.node_id) {
            let s = progress.entry(e.origin).or_insert(0);
            if e.seq == *s + 1 {
                *s = e.seq;
            }
        }
        if progress == *replica.node().durable_progress() {
            return None;
        }
        if self.bug_crash_ms.is_none() && self.rng.chance(0.5) {
            self.bug_crash_ms = Some(self.now_ms + 5 + self.rng.below(100));
        }
        let hlc = replica.node().hlc().now();
        let committed = replica.node().last_seq();
        Some(Message::Ack {
            hlc,
            progress: progress.into_iter().collect(),
            committed,
        })
    }

    fn send_forged(&mut self, from: usize, ack: Message) {
        self.trace.log(self.now_ms, || {
            format!("BUG r{from} forges {}", describe(&ack))
        });
        for to in 0..self.n() {
            if to != from {
                self.send(from, to, ack.clone());
            }
        }
    }

    /// With `Bug::LyingFsync`: snapshots node 0's durable state, then later fails it onto
    /// that snapshot.
    fn lying_fsync_due(&mut self) -> Result<(), String> {
        if self.options.bug != Some(Bug::LyingFsync) || !self.cluster.nodes[BUG_NODE].is_up() {
            return Ok(());
        }
        let node = &self.cluster.nodes[BUG_NODE];
        if self.lying_disk.is_none() && self.now_ms >= LYING_SNAPSHOT_MS {
            self.lying_disk = Some(node.storage.crash());
            self.trace.log(self.now_ms, || {
                format!("BUG r{BUG_NODE}'s disk will come back as it is now")
            });
        }
        if self.now_ms >= LYING_CRASH_MS && self.crashes_of_bug_node == 0 {
            self.crashes_of_bug_node += 1;
            let disk = self.lying_disk.take();
            self.trace.log(self.now_ms, || {
                format!("BUG r{BUG_NODE} fails onto its lying disk")
            });
            self.crash_onto(BUG_NODE, true, disk)?;
        }
        Ok(())
    }

    fn bug_crash_due(&mut self) -> Result<(), String> {
        match self.bug_crash_ms {
            Some(t) if t <= self.now_ms => {
                self.bug_crash_ms = None;
                if self.cluster.nodes[BUG_NODE].is_up() {
                    self.crash(BUG_NODE, true)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The bug's node holds its commits until its crash.
    fn commit_held(&self, i: usize) -> bool {
        i == BUG_NODE && self.bug_crash_ms.is_some()
    }

    // ---- the driver of one node ----------------------------------------------------------

    /// What a real driver does at one wake-up: commit, timers, transmit, events.
    fn drive(&mut self, i: usize) -> Result<(), String> {
        if !self.cluster.nodes[i].is_up() {
            return Ok(());
        }
        let (now_ms, now) = (self.now_ms, self.cluster.at(self.now_ms));
        self.cluster.nodes[i].set_clock(now_ms);
        self.schedule_commit(i);
        if self.cluster.nodes[i]
            .commit_due_ms
            .is_some_and(|t| t <= now_ms)
            && !self.commit_held(i)
        {
            self.commit(i)?;
        }
        self.finish_sync(i);
        let replica = self.cluster.nodes[i].replica.as_mut().expect("up");
        if replica.poll_timeout().is_some_and(|t| t <= now) {
            replica.handle_timeout(now);
        }
        if let Some(req) = replica.poll_sync(now) {
            let done_ms = now_ms + self.rng.below(SYNC_DELAY_MAX_MS + 1);
            self.trace
                .log(now_ms, || format!("r{i} sync starts, done at {done_ms} ms"));
            self.cluster.nodes[i].sync_running = Some((done_ms, req));
        }
        self.transmit(i);
        self.events(i)?;
        self.check_bounds(i)
    }

    /// An offloaded sync that is due finishes: storage syncs, the replica hears of it.
    fn finish_sync(&mut self, i: usize) {
        let now_ms = self.now_ms;
        let node = &mut self.cluster.nodes[i];
        if node.sync_running.as_ref().is_none_or(|(t, _)| *t > now_ms) {
            return;
        }
        let (_, req) = node.sync_running.take().expect("checked");
        let result = meridian_cart_store_core::Storage::sync(&node.storage);
        let now = self.cluster.at(now_ms);
        let replica = self.cluster.nodes[i].replica.as_mut().expect("up");
        replica.handle_synced(now, req, result);
        self.trace.log(now_ms, || format!("r{i} sync done"));
    }

    fn schedule_commit(&mut self, i: usize) {
        let node = &self.cluster.nodes[i];
        let wants =
            node.replica.as_ref().is_some_and(|r| r.wants_commit()) || !node.pending.is_empty();
        if wants && node.commit_due_ms.is_none() {
            let delay_ms = self.rng.below(COMMIT_DELAY_MAX_MS + 1);
            self.cluster.nodes[i].commit_due_ms = Some(self.now_ms + delay_ms);
        }
    }

    /// Commits the received entries and the queued client requests in one batch, and
    /// records every answer.
    fn commit(&mut self, i: usize) -> Result<(), String> {
        let now = self.cluster.at(self.now_ms);
        let node = &mut self.cluster.nodes[i];
        node.commit_due_ms = None;
        let reqs = std::mem::take(&mut node.pending);
        let replica = node.replica.as_mut().expect("up");
        let received = replica.inbox_len();
        let before = replica.node().last_seq();
        let results = replica.commit(now, reqs.clone());
        let after = replica.node().last_seq();
        self.trace.log(self.now_ms, || {
            format!(
                "r{i} commit {received} received + {} requests: seq {before} -> {after}",
                reqs.len()
            )
        });
        let mut last = before;
        for (req, res) in reqs.iter().zip(results) {
            match res {
                Ok(applied) => last = self.record(i, req, &applied, last)?,
                Err(NodeError::EmptyCart(_)) => {
                    self.trace.log(self.now_ms, || {
                        format!("r{i}   {} {:?} -> empty cart", req.cart, req.op)
                    });
                }
                Err(e) => return Err(format!("r{i} refused {req:?}: {e}")),
            }
        }
        // The compactions the replica added to the batch come after the requests.
        while let Some((cart, seq)) = self.cluster.nodes[i]
            .replica
            .as_mut()
            .expect("up")
            .poll_compacted()
        {
            if seq <= last {
                // A compaction the driver itself asked for (the planted bug does): its
                // answer recorded it already.
                continue;
            }
            if seq != last + 1 {
                return Err(format!(
                    "r{i}: compaction of {cart} at seq {seq}, after seq {last}"
                ));
            }
            self.record_compaction(i, cart, seq)?;
            last = seq;
        }
        if last != after {
            return Err(format!(
                "r{i}: answers account for seqs through {last}, but the node is at {after}"
            ));
        }
        Ok(())
    }

    /// Records one acknowledged answer; returns the node's last seq after it.
    fn record(
        &mut self,
        i: usize,
        req: &WriteRequest,
        applied: &meridian_cart_store_core::Applied,
        last: u64,
    ) -> Result<u64, String> {
        let node = &self.cluster.nodes[i];
        let origin = node.node_id.0;
        let past = token_progress(applied.answer.token())?;
        let own = past.get(&origin).copied().unwrap_or(0);
        let wrote = (!applied.replayed && own > last).then_some(own);
        self.trace.log(self.now_ms, || {
            let r = if applied.replayed { " (replayed)" } else { "" };
            format!(
                "r{i}   {} {:?}{} -> {}{r}",
                req.cart,
                req.op,
                key_str(req),
                applied.answer.token()
            )
        });
        if let Some(seq) = wrote {
            let storage = node.replica.as_ref().expect("up").node().storage();
            let raw = read_log_raw(storage, ReplicaId(origin), seq, 1, usize::MAX)
                .map_err(|e| e.to_string())?;
            let Some((s, bytes)) = raw.into_iter().next().filter(|(s, _)| *s == seq) else {
                return Err(format!("r{i}: the log has no entry for its write {seq}"));
            };
            debug_assert_eq!(s, seq);
            let record = codec::decode_delta_checked(&bytes).map_err(|e| e.to_string())?;
            self.model
                .record_write(origin, seq, req, past, record, bytes)?;
        }
        // A node that has merged cart states by anti-entropy may show more than its token
        // says (the states reflect at least the progress it is raised to, and may reflect
        // more): its answers are not held to exactly their past.
        // Sticky across restarts: the merged states stay on disk.
        if self.repaired[i]
            || node
                .replica
                .as_ref()
                .expect("up")
                .peers()
                .iter()
                .any(|p| p.anti_entropy().carts_received > 0)
        {
            self.repaired[i] = true;
            self.model.repaired(i);
        }
        self.model
            .record_answer(i, origin, req, &applied.answer, applied.replayed, wrote)?;
        Ok(wrote.unwrap_or(last))
    }

    /// Records a compaction write the replica made: like any write, it replicates.
    fn record_compaction(&mut self, i: usize, cart: CartId, seq: u64) -> Result<(), String> {
        let node = &self.cluster.nodes[i];
        let origin = node.node_id.0;
        let r = node.replica.as_ref().expect("up");
        let past = token_progress(&r.node().token().to_string())?;
        let raw = read_log_raw(r.node().storage(), ReplicaId(origin), seq, 1, usize::MAX)
            .map_err(|e| e.to_string())?;
        let Some((_, bytes)) = raw.into_iter().next().filter(|(s, _)| *s == seq) else {
            return Err(format!(
                "r{i}: the log has no entry for its compaction {seq}"
            ));
        };
        let record = codec::decode_delta_checked(&bytes).map_err(|e| e.to_string())?;
        self.trace.log(self.now_ms, || {
            format!("r{i}   {cart} compacted at seq {seq}")
        });
        self.compactions += 1;
        let req = WriteRequest::new(
            cart,
            Op::Compact {
                stable: meridian_clocks::VectorClock::new(),
            },
        );
        self.model
            .record_write(origin, seq, &req, past, record, bytes)
    }

    fn transmit(&mut self, i: usize) {
        let now = self.cluster.at(self.now_ms);
        loop {
            let replica = self.cluster.nodes[i].replica.as_mut().expect("up");
            let Some(t) = replica.poll_transmit(now) else {
                break;
            };
            let to = self.cluster.index_of(&t.to);
            self.send(i, to, t.message);
        }
    }

    fn events(&mut self, i: usize) -> Result<(), String> {
        while let Some(e) = self.cluster.nodes[i]
            .replica
            .as_mut()
            .and_then(|r| r.poll_event())
        {
            match e {
                Event::Behind { .. } if !self.options.fail_on_alarm || self.expect_behind => {
                    self.trace
                        .log(self.now_ms, || format!("r{i} reports {e:?}"));
                }
                Event::HeldBack { .. } if self.expect_held_back => {
                    self.trace
                        .log(self.now_ms, || format!("r{i} reports {e:?}"));
                }
                Event::Behind { .. } | Event::HeldBack { .. } | Event::Storage(_) => {
                    return Err(format!("r{i} reports {e:?}"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Memory stays bounded: in-flight bytes per peer, and the inbox.
    fn check_bounds(&self, i: usize) -> Result<(), String> {
        let node = &self.cluster.nodes[i];
        let c = node.config();
        let replica = node.replica.as_ref().expect("up");
        let inflight_bound = c.inflight_bytes_max + c.batch_bytes_max + self.model.entry_bytes_max;
        for p in replica.peers() {
            if p.inflight_bytes() > inflight_bound {
                return Err(format!(
                    "r{i}: {} bytes in flight to {}, more than {inflight_bound}",
                    p.inflight_bytes(),
                    p.region()
                ));
            }
        }
        // The HLC never runs further ahead of this node's own clock than the max offset,
        // whatever the peers' clocks say.
        let hlc = replica.node().hlc();
        let physical = hlc.physical_clock().now_ms();
        let max_offset = replica.node().config().max_clock_offset.as_millis() as u64;
        if hlc.last().physical_ms() > physical + max_offset {
            return Err(format!(
                "r{i}: HLC {} ms ahead of its clock, past the max offset {max_offset} ms",
                hlc.last().physical_ms() - physical
            ));
        }
        if replica.inbox_len() > c.inbox_entries_max {
            return Err(format!(
                "r{i}: inbox holds {}, more than {}",
                replica.inbox_len(),
                c.inbox_entries_max
            ));
        }
        Ok(())
    }

    // ---- quiescence and the final checks ---------------------------------------------------

    /// Nothing in flight or queued, everyone connected, all progress durable and equal, every
    /// peer acknowledged everything, and every log trimmed.
    pub fn quiescent(&self) -> bool {
        if self.net.in_flight() > 0 {
            return false;
        }
        let Some(first) = self.cluster.nodes[0].replica.as_ref() else {
            return false;
        };
        let target = nonzero(first.node().durable_progress());
        self.cluster.nodes.iter().all(|node| {
            let Some(r) = node.replica.as_ref() else {
                return false;
            };
            node.pending.is_empty()
                && !r.wants_commit()
                && !r.node().has_unsynced()
                && nonzero(r.node().durable_progress()) == target
                && r.node().log_len() == 0
                && r.peers().iter().all(|p| !p.anti_entropy_active())
                && r.peers().iter().all(|p| {
                    // A peer's word on its own origin may stay stale (its last Ack lost):
                    // nobody sends it its own entries, so nothing asks it again.
                    let peer_id = self.cluster.nodes[self.cluster.index_of(p.region())].node_id;
                    p.is_connected()
                        && p.inflight_bytes() == 0
                        && target
                            .iter()
                            .all(|(o, s)| *o == peer_id || p.acked(*o) >= *s)
                })
        })
    }

    fn stuck_report(&self) -> String {
        let now = self.cluster.at(self.now_ms);
        let all_up = self.cluster.nodes.iter().all(|n| n.is_up());
        let check = if all_up {
            self.check_final().err()
        } else {
            None
        };
        let mut s = format!(
            "not quiescent {} ms after healing; {} packets in flight; the model says: {}\n",
            self.options.quiesce_ms_max,
            self.net.in_flight(),
            check.as_deref().unwrap_or("no divergence")
        );
        for (i, node) in self.cluster.nodes.iter().enumerate() {
            match &node.replica {
                None => s.push_str(&format!("r{i}: down\n")),
                Some(r) => s.push_str(&format!(
                    "r{i}: inbox {} pending {} status {:?}\n",
                    r.inbox_len(),
                    node.pending.len(),
                    r.status(now)
                )),
            }
        }
        s
    }

    /// The model's checks, once quiescent.
    pub fn check_final(&self) -> Result<(), String> {
        self.check_progress()?;
        // Quiescent and connected: every write is causally stable everywhere.
        for (i, node) in self.cluster.nodes.iter().enumerate() {
            let r = node.replica.as_ref().expect("up when quiescent");
            let applied: BTreeMap<ReplicaId, u64> = r.node().progress().into_iter().collect();
            if r.stable_progress() != applied {
                let peers: Vec<String> = r
                    .peers()
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {:?} acks {:?}",
                            p.region(),
                            p.node_id(),
                            p.recent_acks()
                        )
                    })
                    .collect();
                return Err(format!(
                    "r{i} quiescent but stable {:?} short of applied {applied:?}; {peers:?}",
                    r.stable_progress()
                ));
            }
        }
        for c in 0..CARTS {
            self.check_cart(&cart_name(c))?;
        }
        self.model.check_answers(ANSWERS_CHECKED_MAX)
    }

    /// Every replica applied exactly the surviving writes of every origin.
    fn check_progress(&self) -> Result<(), String> {
        let last = self.model.last_seqs()?;
        for (i, node) in self.cluster.nodes.iter().enumerate() {
            let r = node.replica.as_ref().expect("up when quiescent");
            let have: BTreeMap<u64, u64> = r
                .node()
                .progress()
                .into_iter()
                .filter(|(_, s)| *s > 0)
                .map(|(o, s)| (o.0, s))
                .collect();
            if have != last {
                return Err(format!(
                    "r{i} applied {have:?}, but the acknowledged writes that survived are {last:?}"
                ));
            }
        }
        Ok(())
    }

    /// Every replica holds the join of the surviving deltas, and the semantic checks hold.
    fn check_cart(&self, cart: &str) -> Result<(), String> {
        let want = self.model.reference_lines(cart);
        if !self.model.has_compaction(cart) {
            // With nothing compacted, the rule and the CRDT's join must agree: the model
            // checks itself.
            let joined = self.model.expected(cart).lines();
            if joined != want {
                return Err(format!(
                    "model: {cart}'s deltas join to {joined:?}, but the cart table's rule gives {want:?}"
                ));
            }
        }
        let id = CartId::parse(cart).expect("valid cart");
        let mut states = Vec::new();
        for (i, node) in self.cluster.nodes.iter().enumerate() {
            let r = node.replica.as_ref().expect("up when quiescent");
            let view = r.node().read(cart).map_err(|e| e.to_string())?;
            let got: Vec<(String, u32)> = view
                .lines
                .into_iter()
                .map(|l| (l.sku, l.quantity))
                .collect();
            if got != want {
                return Err(format!(
                    "r{i} holds {cart} = {got:?}, but the acknowledged writes join to {want:?}"
                ));
            }
            states.push(read_cart(r.node().storage(), &id).map_err(|e| e.to_string())?);
        }
        if let Some(i) = states.iter().position(|s| *s != states[0]) {
            return Err(format!(
                "r{i} holds another CRDT state of {cart} than r0 (same lines)"
            ));
        }
        let final_lines: BTreeMap<String, u32> = want.into_iter().collect();
        self.model.check_removes(cart, &final_lines)?;
        self.model.check_adds(cart, &final_lines)
    }
}

pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let parsed = v.trim().replace('_', "").parse();
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a u64; refusing to guess")))
}

fn nonzero(progress: &BTreeMap<ReplicaId, u64>) -> BTreeMap<ReplicaId, u64> {
    progress
        .iter()
        .filter(|(_, s)| **s > 0)
        .map(|(o, s)| (*o, *s))
        .collect()
}

fn key_str(req: &WriteRequest) -> String {
    req.idempotency
        .as_ref()
        .map(|k| format!(" key {}", k.key.as_str()))
        .unwrap_or_default()
}
