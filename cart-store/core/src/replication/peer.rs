//! [`PeerState`]: what one node knows about one peer, and what it owes it.

use super::anti_entropy;
use meridian_clocks::ReplicaId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

/// A batch of entries sent and not yet acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InFlight {
    pub origin: ReplicaId,
    /// The last seq of `origin` in the batch.
    pub through: u64,
    pub bytes: usize,
}

/// Waiting to see whether a peer catches up on an origin by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Probe {
    /// Our durable progress of the origin when the probe started.
    pub target: u64,
    /// If the peer's acknowledged progress is still below `target` then, forward.
    pub deadline: Instant,
}

/// One peer's sync state, as its sender sees it.
///
/// Invariants: `acked[o] <= sent[o]` for every origin sent this session; `inflight` holds
/// exactly the batches with `through > acked[origin]`, and `inflight_bytes` is their sum.
#[derive(Clone, Debug)]
pub struct PeerState {
    pub(crate) region: String,
    pub(crate) node_id: Option<ReplicaId>,
    /// A connection is up (the transport said so).
    pub(crate) link_up: bool,
    /// The peer's Hello arrived on this connection.
    pub(crate) hello_received: bool,
    /// We owe the peer our Hello.
    pub(crate) hello_owed: bool,
    /// When our Hello last went out on this connection.
    pub(crate) hello_sent_at: Option<Instant>,
    /// An Ack or Deltas arrived on this connection: the peer has our Hello (it sends
    /// neither before it).
    pub(crate) heard_back: bool,
    /// The peer's durable progress, as it last said.
    pub(crate) acked: BTreeMap<ReplicaId, u64>,
    /// The highest seq per origin sent on this connection.
    pub(crate) sent: BTreeMap<ReplicaId, u64>,
    pub(crate) inflight: VecDeque<InFlight>,
    pub(crate) inflight_bytes: usize,
    /// When the peer last acknowledged something new (or the window was last empty).
    pub(crate) last_progress: Instant,
    /// An Ack is owed (our durable progress changed, or deltas arrived).
    pub(crate) ack_owed: bool,
    /// The progress we last acknowledged to it.
    pub(crate) last_ack_sent: Vec<(ReplicaId, u64)>,
    /// When the next batch of entries may go out (set when entries become sendable: the
    /// batch window after a commit, at once after a sync, an ack or a resend).
    pub(crate) send_due: Option<Instant>,
    pub(crate) probes: BTreeMap<ReplicaId, Probe>,
    pub(crate) forwarding: BTreeSet<ReplicaId>,
    /// Origins whose entries the peer needs and we have trimmed.
    pub(crate) behind: BTreeSet<ReplicaId>,
    pub(crate) last_contact: Option<Instant>,
    pub(crate) clock_offset_ms: Option<i64>,
    pub(crate) entries_sent: u64,
    pub(crate) entries_applied: u64,
    /// Anti-entropy: this node repairing the peer.
    pub(crate) ae_out: Option<anti_entropy::Outgoing>,
    /// Anti-entropy: the peer repairing this node.
    pub(crate) ae_in: Option<anti_entropy::Incoming>,
    /// Anti-entropy: an answer owed to the peer ([`Message::AeDiffer`](super::Message)).
    pub(crate) ae_reply: Option<super::Message>,
    /// No new session before this (after one was dropped).
    pub(crate) ae_retry_at: Instant,
    /// Anti-entropy counters.
    pub(crate) ae: anti_entropy::AntiEntropyStatus,
    /// The peer's recent Acks as `(committed own seq, durable progress)`, oldest first, at
    /// most [`ACKS_KEPT_MAX`]: what causal stability is computed from.
    pub(crate) acks: VecDeque<(u64, BTreeMap<ReplicaId, u64>)>,
}

/// Most Acks kept per peer for causal stability. Past it the oldest go: stability is then
/// computed from newer ones, which only makes it later, never wrong.
pub const ACKS_KEPT_MAX: usize = 64;

impl PeerState {
    pub(crate) fn new(region: String, now: Instant) -> Self {
        PeerState {
            region,
            node_id: None,
            link_up: false,
            hello_received: false,
            hello_owed: false,
            hello_sent_at: None,
            heard_back: false,
            acked: BTreeMap::new(),
            sent: BTreeMap::new(),
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            last_progress: now,
            ack_owed: false,
            last_ack_sent: Vec::new(),
            send_due: None,
            probes: BTreeMap::new(),
            forwarding: BTreeSet::new(),
            behind: BTreeSet::new(),
            last_contact: None,
            clock_offset_ms: None,
            entries_sent: 0,
            entries_applied: 0,
            ae_out: None,
            ae_in: None,
            ae_reply: None,
            ae_retry_at: now,
            ae: anti_entropy::AntiEntropyStatus::default(),
            acks: VecDeque::new(),
        }
    }

    /// The peer's last few Acks, `(committed, progress)`, newest last (for diagnostics).
    pub fn recent_acks(&self) -> Vec<(u64, Vec<(ReplicaId, u64)>)> {
        self.acks
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(|(c, p)| (*c, p.iter().map(|(o, s)| (*o, *s)).collect()))
            .collect()
    }

    /// Remembers an Ack: the peer's writes after `committed` observed `progress`.
    pub(crate) fn record_ack(&mut self, committed: u64, progress: &[(ReplicaId, u64)]) {
        if self.acks.back().is_some_and(|(c, p)| {
            *c == committed && progress.iter().all(|(o, s)| p.get(o) == Some(s))
        }) {
            return;
        }
        if self.acks.len() >= ACKS_KEPT_MAX {
            self.acks.pop_front();
        }
        self.acks
            .push_back((committed, progress.iter().copied().collect()));
    }

    /// How far this peer has seen `origin` in a way that binds every write of its still to
    /// reach this node: the highest progress of an Ack whose `committed` this node has
    /// applied (`applied_of_peer`), so the peer's later writes all observed it.
    pub(crate) fn stable_bound(&self, origin: ReplicaId, applied_of_peer: u64) -> u64 {
        self.acks
            .iter()
            .filter(|(committed, _)| *committed <= applied_of_peer)
            .map(|(_, p)| p.get(&origin).copied().unwrap_or(0))
            .max()
            .unwrap_or(0)
    }

    /// A new connection (or none): any anti-entropy session with the peer is over; a new
    /// one may start at once.
    pub(crate) fn reset_anti_entropy(&mut self, now: Instant) {
        self.ae_out = None;
        self.ae_in = None;
        self.ae_reply = None;
        self.ae_retry_at = now;
    }

    /// The peer's region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The peer's clock minus ours when its last message arrived, in ms.
    pub fn clock_offset_ms(&self) -> Option<i64> {
        self.clock_offset_ms
    }

    /// The peer's node id, once it has said hello.
    pub fn node_id(&self) -> Option<ReplicaId> {
        self.node_id
    }

    /// A connection is up and the peer's Hello arrived: deltas may flow.
    pub fn is_connected(&self) -> bool {
        self.link_up && self.hello_received
    }

    /// The peer's acknowledged progress of `origin`.
    pub fn acked(&self, origin: ReplicaId) -> u64 {
        self.acked.get(&origin).copied().unwrap_or(0)
    }

    /// Anti-entropy counters with this peer (cumulative; `state` and `carts_*` are filled
    /// in only by [`Replica::status`](super::Replica::status)).
    pub fn anti_entropy(&self) -> &anti_entropy::AntiEntropyStatus {
        &self.ae
    }

    /// An anti-entropy session with this peer is running, either direction.
    pub fn anti_entropy_active(&self) -> bool {
        self.ae_out.is_some() || self.ae_in.is_some()
    }

    /// Bytes sent and not acknowledged.
    pub fn inflight_bytes(&self) -> usize {
        self.inflight_bytes
    }

    /// Forgets everything sent on the current connection: sending resumes from what the
    /// peer acknowledged.
    pub(crate) fn rewind(&mut self, now: Instant) {
        self.sent = self.acked.clone();
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.last_progress = now;
    }

    /// Takes in the peer's durable progress; returns, for this node's own origin `me`, the
    /// seq range newly acknowledged `(from, through]`.
    pub(crate) fn take_ack(
        &mut self,
        progress: &[(ReplicaId, u64)],
        me: ReplicaId,
        now: Instant,
    ) -> (u64, u64) {
        let before_me = self.acked(me);
        let mut advanced = false;
        for &(o, s) in progress {
            let a = self.acked.entry(o).or_insert(0);
            if s > *a {
                *a = s;
                advanced = true;
            }
        }
        // Sent never lags acknowledged (the peer may have had entries from elsewhere).
        for (o, a) in &self.acked {
            let s = self.sent.entry(*o).or_insert(0);
            if *s < *a {
                *s = *a;
            }
        }
        while let Some(f) = self.inflight.front() {
            if f.through <= self.acked(f.origin) {
                self.inflight_bytes -= f.bytes;
                self.inflight.pop_front();
            } else {
                break;
            }
        }
        // Batches of different origins interleave: drop acknowledged ones anywhere.
        let acked = &self.acked;
        let mut freed = 0;
        self.inflight.retain(|f| {
            let keep = f.through > acked.get(&f.origin).copied().unwrap_or(0);
            if !keep {
                freed += f.bytes;
            }
            keep
        });
        self.inflight_bytes -= freed;
        if advanced || self.inflight.is_empty() {
            self.last_progress = now;
        }
        (before_me, self.acked(me))
    }
}
