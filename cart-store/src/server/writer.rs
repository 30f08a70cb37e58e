//! The writer thread: the only caller of [`Node::apply_batch`]. It drains up to
//! `write_batch_max` queued writes, commits them as one storage batch (group commit), and
//! answers each; between batches it sweeps expired idempotency records.

use super::error::ApiError;
use super::metrics::Metrics;
use super::AppState;
use crate::config::Durability;
use crate::node::{self, Applied, Node, NodeError};
use crate::storage::{Storage, StorageError};
use axum::http::StatusCode;
use meridian_clocks::PhysicalClock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TrySendError};
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
    Stop,
}

/// What the writer thread owns besides the node.
pub(super) struct Writer {
    pub(super) rx: Receiver<Msg>,
    pub(super) applied: watch::Sender<u64>,
    pub(super) metrics: Metrics,
    pub(super) durability: Durability,
    pub(super) batch_max: usize,
}

impl Writer {
    /// Runs until [`Msg::Stop`] (or every sender is gone), then syncs storage.
    pub(super) fn run<C: PhysicalClock>(
        self,
        mut node: Node<Arc<dyn Storage>, C>,
    ) -> Result<(), StorageError> {
        let mut last_sweep = Instant::now();
        let mut stopping = false;
        while !stopping {
            let jobs = self.next_batch(&mut stopping);
            if !jobs.is_empty() {
                self.commit(&mut node, jobs);
            }
            if last_sweep.elapsed() >= IDEMPOTENCY_SWEEP_INTERVAL {
                last_sweep = Instant::now();
                self.sweep(&mut node);
            }
        }
        node.storage().sync()
    }

    /// Waits up to [`IDEMPOTENCY_SWEEP_INTERVAL`] for a write, then takes what is queued,
    /// up to `batch_max`.
    fn next_batch(&self, stopping: &mut bool) -> Vec<Job> {
        let mut jobs = Vec::new();
        match self.rx.recv_timeout(IDEMPOTENCY_SWEEP_INTERVAL) {
            Ok(Msg::Write(j)) => jobs.push(j),
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => *stopping = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        while !*stopping && !jobs.is_empty() && jobs.len() < self.batch_max {
            match self.rx.try_recv() {
                Ok(Msg::Write(j)) => jobs.push(j),
                Ok(Msg::Stop) => *stopping = true,
                Err(_) => break,
            }
        }
        jobs
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

    /// Applies and commits one batch, and answers each job.
    fn commit<C: PhysicalClock>(&self, node: &mut Node<Arc<dyn Storage>, C>, jobs: Vec<Job>) {
        let jobs = self.drop_expired(jobs);
        if jobs.is_empty() {
            return;
        }
        let (reqs, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.req, j.reply)).unzip();
        let n = reqs.len();
        let before = node.last_seq();
        let start = Instant::now();
        let results = node.apply_batch(reqs, self.durability);
        self.metrics
            .write_latency
            .observe(start.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(n as f64);
        if self.durability == Durability::Fsync && node.last_seq() != before {
            self.metrics.fsyncs.inc();
        }
        self.metrics.set_node_gauges(node);
        self.applied.send_replace(node.last_seq());
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
