//! The writer thread: the event loop around the sans-IO [`Replica`], and the only thread
//! that writes. Each round it takes up to `write_batch_max` queued writes and the
//! transport's events (peer messages, connects, disconnects), applies the received deltas
//! and the writes as **one** storage batch (group commit, one fsync in `fsync` mode),
//! answers each write, runs the replica's timers, and hands what it transmits to the QUIC
//! transport without ever waiting on it. Between rounds it sweeps expired idempotency
//! records.

use super::error::ApiError;
use super::metrics::Metrics;
use super::AppState;
use crate::config::Durability;
use crate::node::{self, Applied, Node, NodeError};
use crate::storage::{Storage, StorageError};
use crate::token::CausalToken;
use crate::transport::{Inbound, Outbound};
use axum::http::StatusCode;
use crossbeam_channel::{Receiver, TrySendError};
use meridian_cart_store_core::replication::{Event, Message, ReplicationStatus, SyncRequest};
use meridian_cart_store_core::Replica;
use meridian_clocks::PhysicalClock;
use meridian_clocks::ReplicaId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// How often the writer thread deletes expired idempotency records.
pub const IDEMPOTENCY_SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Most idempotency records examined per sweep.
pub const IDEMPOTENCY_SWEEP_MAX: usize = 10_000;

/// A request's deadline, and the race it settles: the writer may take the request's write
/// into a batch only before the deadline, and the deadline may abandon the request only
/// before the writer has taken it. So a 504 means "not applied", and a write already in a
/// committing batch answers with its result, late.
#[derive(Clone, Debug)]
pub(super) struct Deadline {
    at: Instant,
    timeout: Duration,
    claim: Arc<AtomicU8>,
}

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

impl Deadline {
    /// The deadline `timeout` from now.
    pub(super) fn after(timeout: Duration) -> Self {
        Deadline {
            at: Instant::now() + timeout,
            timeout,
            claim: Arc::new(AtomicU8::new(QUEUED)),
        }
    }

    /// The answer to a request abandoned at its deadline.
    pub(super) fn expired(&self) -> ApiError {
        ApiError::timeout(self.timeout)
    }

    /// The deadline has passed: abandons the request unless the writer has taken its write.
    /// `true` when the request is abandoned (and its write never applied).
    pub(super) fn abandon(&self) -> bool {
        let swapped =
            self.claim
                .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire);
        swapped.unwrap_or_else(|now| now) != TAKEN
    }

    /// The writer takes the write into a batch: `false` if the deadline has passed (the
    /// request is then abandoned) or the request was abandoned already.
    fn take(&self, now: Instant) -> bool {
        let to = if now >= self.at { ABANDONED } else { TAKEN };
        let swapped = self
            .claim
            .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire);
        swapped.is_ok() && to == TAKEN
    }
}

/// One queued write and where its answer goes.
pub(super) struct Job {
    req: node::WriteRequest,
    deadline: Deadline,
    reply: oneshot::Sender<Result<Applied, ApiError>>,
}

/// What the writer's queue carries.
pub(super) enum Msg {
    Write(Job),
    /// `GET /replication`: the replication state, computed on the writer thread that owns it.
    Status(oneshot::Sender<ReplicationStatus>),
    Stop,
}

/// What the writer thread owns besides the replica.
pub(super) struct Writer {
    pub(super) rx: Receiver<Msg>,
    /// Messages and connection events from the QUIC transport (never blocks it: bounded,
    /// and the transport drops messages rather than wait; the protocol resends).
    pub(super) peers: Receiver<Inbound>,
    /// Where [`Replica::poll_transmit`] output goes (`None`: no peers configured).
    pub(super) outbound: Option<Outbound>,
    /// The committed causal position, for readers and `Causal-Token` waits.
    pub(super) applied: watch::Sender<CausalToken>,
    /// Which region each known node id is (from the peers' Hellos), for messages that
    /// name what a request waits for.
    pub(super) regions: watch::Sender<BTreeMap<ReplicaId, String>>,
    pub(super) metrics: Metrics,
    pub(super) batch_max: usize,
    /// When each peer's held-back warning was last logged (configured peers only).
    pub(super) held_back_warned: std::cell::RefCell<BTreeMap<String, Instant>>,
}

/// Held-back deltas from one peer are logged at most this often.
pub const HELD_BACK_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// How often the causal-stability gauge is recomputed.
const STABILITY_GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Most transport events handled before the writer commits and transmits again.
pub const PEER_EVENTS_PER_ROUND_MAX: usize = 1024;

impl Writer {
    /// Runs until [`Msg::Stop`] (or every sender is gone), then syncs storage.
    pub(super) fn run<C: PhysicalClock>(
        self,
        mut replica: Replica<Arc<dyn Storage>, C>,
    ) -> Result<(), StorageError> {
        let mut next_sweep = Instant::now() + IDEMPOTENCY_SWEEP_INTERVAL;
        let mut next_stability = Instant::now();
        let mut stopping = false;
        let syncer = Syncer::start(replica.node().storage().clone());
        while !stopping {
            let wake = replica
                .poll_timeout()
                .map_or(next_sweep, |t| t.min(next_sweep));
            let jobs = self.next_round(&mut replica, wake, &syncer, &mut stopping);
            if !jobs.is_empty() || replica.wants_commit() {
                self.commit(&mut replica, jobs);
            }
            let now = Instant::now();
            replica.handle_timeout(now);
            if let Some(req) = replica.poll_sync(now) {
                syncer.start_sync(req);
            }
            self.metrics.set_node_gauges(replica.node());
            self.transmit(&mut replica, now);
            self.drain_events(&mut replica);
            self.metrics.set_anti_entropy(replica.peers());
            if now >= next_stability {
                next_stability = now + STABILITY_GAUGE_INTERVAL;
                let unstable = replica.unstable_writes();
                self.metrics
                    .unstable_writes
                    .set(i64::try_from(unstable).unwrap_or(i64::MAX));
                self.metrics.set_compaction(&replica.compaction_status(now));
            }
            if now >= next_sweep {
                next_sweep = now + IDEMPOTENCY_SWEEP_INTERVAL;
                self.sweep(replica.node_mut());
            }
        }
        replica.node_mut().sync()
    }

    /// Waits until `wake` for a write or a transport event, then takes what is queued:
    /// writes up to `batch_max`, transport events up to [`PEER_EVENTS_PER_ROUND_MAX`].
    fn next_round<C: PhysicalClock>(
        &self,
        replica: &mut Replica<Arc<dyn Storage>, C>,
        wake: Instant,
        syncer: &Syncer,
        stopping: &mut bool,
    ) -> Vec<Job> {
        let mut jobs = Vec::new();
        crossbeam_channel::select! {
            recv(self.rx) -> m => match m {
                Ok(m) => self.take(m, replica, &mut jobs, stopping),
                Err(_) => *stopping = true,
            },
            recv(self.peers) -> e => {
                if let Ok(e) = e {
                    self.handle_peer(replica, e);
                }
            }
            recv(syncer.done) -> d => {
                if let Ok((req, result)) = d {
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "replication sync failed; retrying");
                    }
                    replica.handle_synced(Instant::now(), req, result);
                }
            }
            default(wake.saturating_duration_since(Instant::now())) => {}
        }
        if let Ok((req, result)) = syncer.done.try_recv() {
            replica.handle_synced(Instant::now(), req, result);
        }
        while !*stopping && jobs.len() < self.batch_max {
            match self.rx.try_recv() {
                Ok(m) => self.take(m, replica, &mut jobs, stopping),
                Err(_) => break,
            }
        }
        for _ in 0..PEER_EVENTS_PER_ROUND_MAX {
            match self.peers.try_recv() {
                Ok(e) => self.handle_peer(replica, e),
                Err(_) => break,
            }
        }
        jobs
    }

    fn take<C: PhysicalClock>(
        &self,
        m: Msg,
        replica: &Replica<Arc<dyn Storage>, C>,
        jobs: &mut Vec<Job>,
        stopping: &mut bool,
    ) {
        match m {
            Msg::Write(j) => jobs.push(j),
            Msg::Status(reply) => {
                let _ = reply.send(replica.status(Instant::now()));
            }
            Msg::Stop => *stopping = true,
        }
    }

    /// One transport event into the replica. A message that breaks the protocol is logged
    /// (the transport closes such connections on frame errors; a protocol error here is
    /// logged and the message ignored).
    fn handle_peer<C: PhysicalClock>(
        &self,
        replica: &mut Replica<Arc<dyn Storage>, C>,
        e: Inbound,
    ) {
        let now = Instant::now();
        match e {
            Inbound::Up { peer } => {
                tracing::info!(peer = %peer, "peer connected");
                self.metrics.peer_connected(&peer, true);
                replica.handle_connect(now, &peer);
            }
            Inbound::Down { peer, reason } => {
                tracing::warn!(peer = %peer, reason = %reason, "peer disconnected");
                self.metrics.peer_connected(&peer, false);
                replica.handle_disconnect(now, &peer);
            }
            Inbound::Message {
                peer,
                message,
                bytes,
            } => {
                self.metrics.peer_received(&peer, &message, bytes);
                let hello = matches!(message, Message::Hello { .. });
                let result = replica.handle_message(now, &peer, message);
                if let Some(p) = replica.peers().iter().find(|p| p.region() == peer) {
                    self.metrics.peer_clock_offset(&peer, p.clock_offset_ms());
                }
                if let Err(err) = result {
                    self.metrics.peer_refused(&peer);
                    // A hostile or broken peer may send many: one line per peer per minute
                    // (the metric counts them all).
                    if self.warn_due(&format!("refused {peer}")) {
                        tracing::warn!(peer = %peer, error = %err, "replication message refused (logged once per peer per minute; cart_store_peer_refused counts them)");
                    }
                } else if hello {
                    self.publish_regions(replica);
                }
            }
        }
    }

    /// Whether a warning under `key` (a peer, or a kind and a peer) is due: at most one per
    /// key per [`HELD_BACK_WARN_INTERVAL`].
    fn warn_due(&self, peer: &str) -> bool {
        let now = Instant::now();
        let mut last = self.held_back_warned.borrow_mut();
        match last.get(peer) {
            Some(t) if now.duration_since(*t) < HELD_BACK_WARN_INTERVAL => false,
            _ => {
                last.insert(peer.to_owned(), now);
                true
            }
        }
    }

    /// Publishes the node id → region map of the peers that have said hello.
    fn publish_regions<C: PhysicalClock>(&self, replica: &Replica<Arc<dyn Storage>, C>) {
        let map: BTreeMap<ReplicaId, String> = replica
            .peers()
            .iter()
            .filter_map(|p| Some((p.node_id()?, p.region().to_owned())))
            .collect();
        self.regions.send_if_modified(|m| {
            let changed = *m != map;
            *m = map;
            changed
        });
    }

    /// Sends what the replica has to send. A full per-peer queue drops the message, like a
    /// lossy network: the protocol resends from the peer's acknowledged progress.
    fn transmit<C: PhysicalClock>(&self, replica: &mut Replica<Arc<dyn Storage>, C>, now: Instant) {
        while let Some(t) = replica.poll_transmit(now) {
            let Some(out) = &self.outbound else { continue };
            self.metrics.peer_sent(&t.to, &t.message);
            if let Err(e) = out.try_send(&t.to, t.message) {
                self.metrics.peer_send_dropped(&t.to);
                tracing::debug!(peer = %t.to, error = ?e, "replication message dropped");
            }
        }
    }

    fn drain_events<C: PhysicalClock>(&self, replica: &mut Replica<Arc<dyn Storage>, C>) {
        // The other regions' half of the write trail: `grep <request id>` over every
        // region's log follows one edit.
        while let Some(a) = replica.poll_applied() {
            tracing::info!(
                target: "cart_store::writes",
                request_id = a.request_id.as_deref().unwrap_or("-"),
                from = %a.peer,
                origin = a.origin.0,
                seq = a.seq,
                cart = %a.cart,
                "write applied from another region"
            );
        }
        while let Some(ev) = replica.poll_event() {
            match ev {
                Event::Lag { peer, ms } => self.metrics.replication_lag(&peer, ms),
                Event::HeldBack {
                    peer,
                    origin,
                    ahead_ms,
                } => {
                    self.metrics.held_back(&peer);
                    if self.warn_due(&peer) {
                        tracing::warn!(
                            peer = %peer,
                            origin = origin.0,
                            ahead_ms,
                            "holding back deltas stamped more than max_clock_offset_ms ahead of \
                             this node's clock (is the peer's clock wrong?); they apply once \
                             time catches up (logged once per peer per minute)"
                        );
                    }
                }
                Event::Applied { peer, entries } => {
                    self.metrics.peer_applied(&peer, entries);
                }
                Event::Behind {
                    peer,
                    origin,
                    needs,
                } => {
                    tracing::debug!(peer = %peer, origin = origin.0, needs, "peer needs deltas already trimmed from the log (anti-entropy repairs it)");
                }
                Event::AntiEntropyStarted {
                    peer,
                    session,
                    behind,
                } => tracing::info!(
                    peer = %peer,
                    session,
                    ?behind,
                    "anti-entropy: repairing the peer (it needs deltas this node has trimmed)"
                ),
                Event::AntiEntropyCompleted {
                    peer,
                    session,
                    ranges,
                    carts,
                    bytes,
                    ms,
                } => tracing::info!(
                    peer = %peer,
                    session,
                    ranges,
                    carts,
                    bytes,
                    ms,
                    "anti-entropy: peer repaired; deltas resume"
                ),
                Event::AntiEntropyAbandoned {
                    peer,
                    session,
                    reason,
                } => {
                    tracing::warn!(peer = %peer, session, reason = %reason, "anti-entropy: session dropped; another starts")
                }
                Event::AntiEntropyApplied { peer, session } => tracing::info!(
                    peer = %peer,
                    session,
                    "anti-entropy: repaired by the peer; progress raised"
                ),
                Event::Storage(e) => tracing::error!(error = %e, "replication storage error"),
                _ => {}
            }
        }
    }

    /// Answers the jobs whose deadline has passed (or whose request was abandoned) with a
    /// 504, unapplied, and returns the rest.
    fn drop_expired(&self, jobs: Vec<Job>) -> Vec<Job> {
        let now = Instant::now();
        let (live, expired): (Vec<_>, Vec<_>) =
            jobs.into_iter().partition(|j| j.deadline.take(now));
        for job in expired {
            self.metrics.writes_expired.inc();
            let _ = job.reply.send(Err(job.deadline.expired()));
        }
        live
    }

    /// Applies the received deltas and the jobs' writes as one batch, and answers each job.
    fn commit<C: PhysicalClock>(&self, replica: &mut Replica<Arc<dyn Storage>, C>, jobs: Vec<Job>) {
        let jobs = self.drop_expired(jobs);
        let (reqs, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.req, j.reply)).unzip();
        let n = reqs.len();
        let before = replica.node().progress();
        let start = Instant::now();
        let results = replica.commit(start, reqs);
        let node = replica.node();
        self.metrics
            .write_latency
            .observe(start.elapsed().as_secs_f64());
        if n > 0 {
            self.metrics.batch_size.observe(n as f64);
        }
        let changed = node.progress() != before;
        if replica.config().durability == Durability::Fsync && changed {
            self.metrics.fsyncs.inc();
        }
        self.metrics.set_node_gauges(node);
        if changed {
            self.applied.send_replace(node.token());
        }
        for (reply, result) in replies.into_iter().zip(results) {
            if let Err(
                e @ (NodeError::Corrupt { .. }
                | NodeError::CorruptLog { .. }
                | NodeError::Storage(_)),
            ) = &result
            {
                tracing::error!(error = %e, "write failed");
            }
            // A taken write's request waits for this answer, even past its deadline.
            let _ = reply.send(result.map_err(ApiError::from));
        }
    }

    fn sweep<C: PhysicalClock>(&self, node: &mut Node<Arc<dyn Storage>, C>) {
        match node.sweep_idempotency(IDEMPOTENCY_SWEEP_MAX) {
            Ok(n) => {
                self.metrics.idempotency_expired.inc_by(n as u64);
            }
            Err(e) => tracing::error!(error = %e, "idempotency sweep failed"),
        }
    }
}

/// The thread that runs the replica's offloaded syncs (`durability = "process"` with
/// peers): the writer keeps committing while RocksDB syncs its WAL.
struct Syncer {
    start: crossbeam_channel::Sender<SyncRequest>,
    done: Receiver<(SyncRequest, Result<(), StorageError>)>,
}

impl Syncer {
    fn start(storage: Arc<dyn Storage>) -> Syncer {
        // One sync runs at a time (the replica asks for the next only after this one is
        // handled), so one slot each way is enough.
        let (start, requests) = crossbeam_channel::bounded::<SyncRequest>(1);
        let (results, done) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("cart-store-sync".into())
            .spawn(move || {
                for req in requests {
                    if results.send((req, storage.sync())).is_err() {
                        return;
                    }
                }
            })
            .expect("spawning the sync thread");
        Syncer { start, done }
    }

    fn start_sync(&self, req: SyncRequest) {
        self.start
            .try_send(req)
            .expect("one sync at a time: the slot is free");
    }
}

/// Asks the writer for the replication state (`GET /replication`).
pub(super) async fn status(state: &AppState) -> Result<ReplicationStatus, ApiError> {
    let (tx, rx) = oneshot::channel();
    let busy = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the writer queue is full; retry shortly",
        )
        .retry_after(1)
    };
    state.writer.try_send(Msg::Status(tx)).map_err(|_| busy())?;
    rx.await.map_err(|_| busy())
}

/// Queues `req` for the writer and waits for its answer. The writer drops it unapplied if
/// `deadline` passes first.
pub(super) async fn submit(
    state: &AppState,
    req: node::WriteRequest,
    deadline: Deadline,
) -> Result<Applied, ApiError> {
    let (tx, rx) = oneshot::channel();
    let job = Job {
        req,
        deadline,
        reply: tx,
    };
    match state.writer.try_send(Msg::Write(job)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!(
                    "{} writes are queued (config key write_queue_max); retry shortly",
                    state.settings.write_queue_max
                ),
            )
            .retry_after(1))
        }
        Err(TrySendError::Disconnected(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the node is shutting down",
            )
            .retry_after(1))
        }
    }
    let applied = rx.await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the node stopped before answering; retry with the same Idempotency-Key",
        )
        .retry_after(1)
    })??;
    Ok(applied)
}
