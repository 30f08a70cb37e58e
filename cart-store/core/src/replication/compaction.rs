//! Causal-stability compaction: coalescing this node's own adds once no write that saw only
//! part of them can still arrive.
//!
//! Every `add` keeps its own dot until a set, remove or clear of its line, so a busy line
//! would grow without bound. [`Cart::compact`](meridian_crdt::Cart::compact) folds a
//! replica's adds of a line into one entry, which is sound only at **causal stability**
//! ([`Replica::stable_progress`](super::Replica::stable_progress)): then every operation
//! still to come drops either all of the group or none of it. (Before it, a remove made
//! elsewhere after only some of the adds arrived would drop too little or too much.)
//!
//! What this module does:
//! - The node reports, for each committed local add that left its line with at least
//!   `NodeConfig::compaction_line_adds_min` (8) of this node's adds, `(cart, seq, dot counter)` ([`Committed::compactable`](crate::node::Committed)).
//!   They queue here in seq order (bounded: [`ReplicationConfig::compaction_queue_max`](super::ReplicationConfig)).
//! - Each round, the queued adds whose seq is causally stable are taken off the front
//!   (at most [`COMPACTION_CARTS_PER_ROUND`] carts a round); each cart gets one
//!   [`Op::Compact`] write with the frontier `{this node: highest stable counter}`.
//! - That write commits and replicates like any other (it gets a seq, its delta goes into
//!   the log), so every write this node makes after it reaches every region after it: a
//!   later remove here names only the one dot that stands for the group, and a region
//!   still holding the separate dots has already merged the compaction delta that drops
//!   them. A region compacts only its own dots, so each group is coalesced once.
//! - Another region's remove made after the compaction reaches a third region by another
//!   link, possibly first: it carries the compaction (`Node::carried`: a drop's delta is
//!   joined with the other origins' compactions its node applied and not every peer has),
//!   so it drops the whole group wherever it lands.
//!
//! What it costs: one extra replicated write per compacted cart per round. Stability
//! stalls while any region is unreachable; adds then accumulate (and the queue fills: past
//! its bound new adds are not queued, and a cart's queued later add covers its earlier
//! ones). `/replication` shows the stall (`stable`, `compaction`), and so do the metrics
//! `cart_store_unstable_writes` and `cart_store_compaction_*`. The queue is not persisted:
//! a cart whose adds were queued before a restart is compacted after its next add.

use crate::node::{Op, WriteRequest};
use crate::validate::CartId;
use meridian_clocks::{ReplicaId, VectorClock};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Default [`ReplicationConfig::compaction_queue_max`](super::ReplicationConfig): queued adds.
pub const COMPACTION_QUEUE_MAX_DEFAULT: usize = 256 * 1024;
/// Default [`ReplicationConfig::compaction_interval`](super::ReplicationConfig).
pub const COMPACTION_INTERVAL_DEFAULT: Duration = Duration::from_millis(200);
/// Most carts compacted in one round.
pub const COMPACTION_CARTS_PER_ROUND: usize = 1024;

/// Compaction's counters, for `GET /replication` and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompactionStatus {
    /// Adds waiting to become causally stable (each may coalesce with the line's others).
    pub queued: u64,
    /// Age of the oldest queued add in ms (0 if none): how long stability has stalled.
    pub oldest_ms: u64,
    /// Compaction writes committed since start.
    pub writes: u64,
    /// Adds not queued because the queue was full (their cart's next add covers them).
    pub dropped: u64,
}

/// The queue of adds waiting for stability, and the compactions due.
#[derive(Debug)]
pub(crate) struct Compactor {
    /// `(seq, cart, dot counter, when committed)`, in seq order.
    queue: VecDeque<(u64, CartId, u64, Instant)>,
    queue_max: usize,
    /// Compaction writes for the next commit.
    due: Vec<WriteRequest>,
    pub(crate) next_round: Instant,
    pub(crate) writes: u64,
    dropped: u64,
}

impl Compactor {
    pub(crate) fn new(queue_max: usize, now: Instant) -> Self {
        Compactor {
            queue: VecDeque::new(),
            queue_max,
            due: Vec::new(),
            next_round: now,
            writes: 0,
            dropped: 0,
        }
    }

    /// Queues committed local adds (in seq order, as the node reports them).
    pub(crate) fn push(&mut self, now: Instant, adds: Vec<(CartId, u64, u64)>) {
        for (cart, seq, counter) in adds {
            if self.queue.len() >= self.queue_max {
                self.dropped += 1;
                continue;
            }
            debug_assert!(self.queue.back().is_none_or(|b| b.0 < seq));
            self.queue.push_back((seq, cart, counter, now));
        }
    }

    /// Takes the queued adds through `stable` (this node's causally stable seq) off the
    /// front, and makes one compaction write per cart.
    pub(crate) fn round(&mut self, me: ReplicaId, stable: u64) {
        let mut carts: BTreeMap<CartId, u64> = BTreeMap::new();
        while let Some((seq, cart, _, _)) = self.queue.front() {
            if *seq > stable
                || (carts.len() >= COMPACTION_CARTS_PER_ROUND && !carts.contains_key(cart))
            {
                break;
            }
            let (_, cart, counter, _) = self.queue.pop_front().expect("front exists");
            let c = carts.entry(cart).or_insert(0);
            *c = (*c).max(counter);
        }
        for (cart, counter) in carts {
            let mut frontier = VectorClock::new();
            frontier.observe(me, counter);
            self.due
                .push(WriteRequest::new(cart, Op::Compact { stable: frontier }));
        }
    }

    /// The compaction writes for the next commit.
    pub(crate) fn take_due(&mut self) -> Vec<WriteRequest> {
        std::mem::take(&mut self.due)
    }

    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    pub(crate) fn has_due(&self) -> bool {
        !self.due.is_empty()
    }

    pub(crate) fn status(&self, now: Instant) -> CompactionStatus {
        CompactionStatus {
            queued: self.queue.len() as u64,
            oldest_ms: self.queue.front().map_or(0, |(_, _, _, t)| {
                u64::try_from(now.saturating_duration_since(*t).as_millis()).unwrap_or(u64::MAX)
            }),
            writes: self.writes,
            dropped: self.dropped,
        }
    }
}
