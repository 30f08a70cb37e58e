//! [`Replica`]: one region's write path plus its replication state, sans-IO.
//!
//! The protocol (the full argument is in ARCHITECTURE.md, "Replication"):
//!
//! - Every write a node makes gets the next seq of its **origin** (its node id). Its delta
//!   goes into the log under `(origin, seq)` in the same batch as the cart.
//! - A node applies another origin's entries **contiguously**: entry `(o, s)` only once it
//!   has applied `(o, s-1)`. So its per-origin progress (`o → s`) is one number per origin,
//!   persisted in the same batch, and it is the `Causal-Token`. Duplicates and replays are
//!   skipped, gaps are dropped (and resent), so the network may drop, duplicate and reorder.
//! - Applied remote entries go into the node's own log too, under their origin's key, so a
//!   node can **forward** them: if a peer's progress for an origin stays behind ours for
//!   `forward_after`, we send that origin's entries to it ourselves. That is how
//!   non-transitive partitions converge.
//! - A node **acknowledges only durable progress** ([`Message::Ack`]), and **ships only
//!   durable entries**: in `process` mode the core syncs storage before a batch goes out.
//!   So no peer ever sees a seq or dot that a power failure could take back and the node
//!   hand out again.
//! - Per peer, the sender remembers the peer's acknowledged progress and what it has sent
//!   since; in-flight bytes are bounded, and with no progress for `resend_timeout` it goes
//!   back to the acknowledged point (go-back-N). On a new connection both sides say
//!   [`Message::Hello`] with their durable progress, and sending resumes from there.
//! - Entries every peer has acknowledged are deleted from the log, and past
//!   `log_retention_entries` per origin the oldest go anyway. A peer that then needs a
//!   deleted entry (away too long, replaced, or new) is repaired by [`anti_entropy`]:
//!   Merkle digests of the carts compared top-down, full states of the differing ranges.
//! - `Ack` and `Hello` carry the sender's last committed seq, from which
//!   [`stable_progress`](Replica::stable_progress) tells which writes are causally stable.
//!
//! ```
//! use meridian_cart_store_core::{
//!     Durability, MemStorage, Node, NodeConfig, Replica, ReplicationConfig, WriteRequest,
//! };
//! use meridian_clocks::{ManualClock, ReplicaId};
//! use std::time::{Duration, Instant};
//!
//! let clock = ManualClock::new(1_700_000_000_000);
//! let replica = |id, region: &str, peer: &str| -> Result<_, Box<dyn std::error::Error>> {
//!     let node = Node::open(MemStorage::new(), clock.clone(), NodeConfig::new(ReplicaId(id)))?;
//!     let config = ReplicationConfig::new(region, vec![peer.into()], Durability::Fsync);
//!     Ok(Replica::new(node, config, Instant::now()))
//! };
//! let (mut a, mut b) = (replica(1, "virginia", "tokyo")?, replica(2, "tokyo", "virginia")?);
//! let mut now = Instant::now();
//! a.handle_connect(now, "tokyo");
//! b.handle_connect(now, "virginia");
//! a.commit(now, vec![WriteRequest::add("alice", "book", 2)?]);
//! b.commit(now, vec![WriteRequest::add("alice", "pen", 1)?]);
//! // Run both to quiescence: deliver what each transmits, let time pass, repeat.
//! fn step<S, C>(now: Instant, from: &mut Replica<S, C>, to: &mut Replica<S, C>)
//! where
//!     S: meridian_cart_store_core::Storage,
//!     C: meridian_clocks::PhysicalClock,
//! {
//!     from.handle_timeout(now);
//!     while let Some(t) = from.poll_transmit(now) {
//!         to.handle_message(now, &from.config().region, t.message).unwrap();
//!     }
//!     to.commit(now, vec![]);
//! }
//! for _ in 0..10 {
//!     now += Duration::from_millis(10);
//!     step(now, &mut a, &mut b);
//!     step(now, &mut b, &mut a);
//! }
//! assert_eq!(a.node().read("alice")?, {
//!     let mut v = b.node().read("alice")?;
//!     v.token = a.node().token().to_string();
//!     v
//! });
//! assert_eq!(a.node().read("alice")?.lines.len(), 2);
//! assert_eq!(a.node().log_len(), 0, "both entries acknowledged by every peer: trimmed");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Time is an argument (`now`); the core reads no clock but the node's HLC source, which
//! the caller provides. The driver feeds it [`handle_connect`](Replica::handle_connect),
//! [`handle_message`](Replica::handle_message) and
//! [`handle_timeout`](Replica::handle_timeout), calls [`commit`](Replica::commit) with the
//! local writes (remote entries received are applied in the same batch), and sends what
//! [`poll_transmit`](Replica::poll_transmit) returns until it returns `None`; it wakes
//! again at [`poll_timeout`](Replica::poll_timeout).
//!
//! What the transport must provide: messages to one peer arrive whole (framed) or not at
//! all; they may be lost, duplicated or reordered. A connection's loss is reported with
//! [`handle_disconnect`](Replica::handle_disconnect) and a new one with
//! [`handle_connect`](Replica::handle_connect). The peer's region is authenticated by the
//! transport (mutual TLS); [`handle_message`](Replica::handle_message) checks that a
//! [`Message::Hello`] names the same region.

pub mod anti_entropy;
pub mod compaction;
pub mod peer;
pub mod wire;

use crate::codec::{self, DeltaRecord};
use crate::node::{Applied, Node, NodeError, RemoteEntry, WriteRequest};
use crate::storage::{Durability, Storage};
use crate::validate::CartId;
use meridian_clocks::{HlcTimestamp, PhysicalClock, ReplicaId};
use peer::{InFlight, PeerState, Probe};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub use anti_entropy::{AntiEntropyStatus, AE_BYTES_PER_SEC_DEFAULT};
pub use compaction::{CompactionStatus, COMPACTION_INTERVAL_DEFAULT, COMPACTION_QUEUE_MAX_DEFAULT};
pub use wire::{Entry, FrameError, FrameErrorKind, Message, Progress};

/// Default [`ReplicationConfig::batch_window`]: 5 ms.
pub const BATCH_WINDOW_DEFAULT: Duration = Duration::from_millis(5);
/// Default [`ReplicationConfig::batch_bytes_max`]: 256 KiB.
pub const BATCH_BYTES_MAX_DEFAULT: usize = 256 * 1024;
/// Default [`ReplicationConfig::inflight_bytes_max`]: 8 MiB per peer.
pub const INFLIGHT_BYTES_MAX_DEFAULT: usize = 8 << 20;
/// Default [`ReplicationConfig::resend_timeout`]: 2 s.
pub const RESEND_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// Default [`ReplicationConfig::forward_after`]: 1 s.
pub const FORWARD_AFTER_DEFAULT: Duration = Duration::from_secs(1);
/// Default [`ReplicationConfig::log_retention_entries`]: per origin, entries kept for a
/// peer that has not acknowledged them.
pub const LOG_RETENTION_ENTRIES_DEFAULT: u64 = 1_000_000;
/// Default [`ReplicationConfig::inbox_entries_max`].
pub const INBOX_ENTRIES_MAX_DEFAULT: usize = 16 * 1024;
/// Most log entries deleted per [`Replica::handle_timeout`].
pub const TRIM_ENTRIES_MAX: usize = 4096;
/// How often trimming runs.
pub const TRIM_INTERVAL: Duration = Duration::from_millis(100);
/// Most queued [`Event`]s; older ones are dropped (and counted) past it.
pub const EVENTS_MAX: usize = 4096;
/// Most remembered commit times of local seqs (for lag); one per commit batch.
pub const COMMIT_TIMES_MAX: usize = 16 * 1024;

/// The replication settings of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// This node's region (its TLS name).
    pub region: String,
    /// The peer regions.
    pub peers: Vec<String>,
    /// How durable a commit is; in `Process` mode the core syncs before shipping or
    /// acknowledging.
    pub durability: Durability,
    /// How long new entries wait to be batched before they go out.
    pub batch_window: Duration,
    /// Largest batch of entries in one message (one entry may exceed it alone).
    pub batch_bytes_max: usize,
    /// Most bytes of entries sent to one peer and not yet acknowledged.
    pub inflight_bytes_max: usize,
    /// With entries in flight and no acknowledgement for this long, resend from the last
    /// acknowledged point.
    pub resend_timeout: Duration,
    /// Forward another origin's entries to a peer whose progress for that origin has
    /// stayed behind ours this long.
    pub forward_after: Duration,
    /// Most received entries waiting to be applied; more are dropped (and resent later).
    pub inbox_entries_max: usize,
    /// `Process` mode: the driver runs the sync that makes writes shippable, off its event
    /// loop ([`Replica::poll_sync`] / [`Replica::handle_synced`]), instead of
    /// [`Replica::handle_timeout`] running it inline.
    pub offload_sync: bool,
    /// Per origin, how many log entries are kept past what every peer has acknowledged. A
    /// peer further behind (or never heard from) is repaired by anti-entropy instead.
    pub log_retention_entries: u64,
    /// The rate limit of anti-entropy's cart states, for all peers together.
    pub anti_entropy_bytes_per_sec: u64,
    /// How often causally stable adds are compacted ([`compaction`]); zero disables it.
    pub compaction_interval: Duration,
    /// Most local adds queued for compaction while they wait to become stable.
    pub compaction_queue_max: usize,
}

impl ReplicationConfig {
    /// The defaults (`*_DEFAULT` constants) for `region` with `peers`.
    pub fn new(region: impl Into<String>, peers: Vec<String>, durability: Durability) -> Self {
        ReplicationConfig {
            region: region.into(),
            peers,
            durability,
            batch_window: BATCH_WINDOW_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            inflight_bytes_max: INFLIGHT_BYTES_MAX_DEFAULT,
            resend_timeout: RESEND_TIMEOUT_DEFAULT,
            forward_after: FORWARD_AFTER_DEFAULT,
            inbox_entries_max: INBOX_ENTRIES_MAX_DEFAULT,
            offload_sync: false,
            log_retention_entries: LOG_RETENTION_ENTRIES_DEFAULT,
            anti_entropy_bytes_per_sec: AE_BYTES_PER_SEC_DEFAULT,
            compaction_interval: COMPACTION_INTERVAL_DEFAULT,
            compaction_queue_max: COMPACTION_QUEUE_MAX_DEFAULT,
        }
    }
}

/// A sync the driver runs off its event loop (see [`Replica::poll_sync`]): the committed
/// progress it will make durable.
#[derive(Debug)]
#[must_use = "run the sync, then pass this to Replica::handle_synced"]
pub struct SyncRequest {
    progress: Vec<(ReplicaId, u64)>,
}

/// A message to send to one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The peer's region.
    pub to: String,
    /// What to send.
    pub message: Message,
}

/// Something the driver may want to log or count.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer acknowledged local writes: the time from their commit to the acknowledgement.
    Lag {
        /// The peer's region.
        peer: String,
        /// Milliseconds from commit to acknowledgement.
        ms: u64,
    },
    /// Entries from `peer` were held back: stamped more than the max offset ahead of this
    /// node's clock. They are not acknowledged, so the sender keeps them and resends.
    HeldBack {
        /// The peer's region.
        peer: String,
        /// The origin whose entry was held.
        origin: ReplicaId,
        /// How far ahead of local physical time the entry's HLC is.
        ahead_ms: u64,
    },
    /// Entries of `origin` were applied (from any peer).
    Applied {
        /// The peer's region they came from.
        peer: String,
        /// How many entries.
        entries: u64,
    },
    /// A storage read, write or sync failed (it is retried).
    Storage(String),
    /// A session of anti-entropy started: this node repairs `peer`.
    AntiEntropyStarted {
        /// The peer's region.
        peer: String,
        /// The session.
        session: u64,
        /// The origins the peer needs trimmed entries of.
        behind: Vec<u64>,
    },
    /// A session repairing `peer` ended: the peer caught up.
    AntiEntropyCompleted {
        /// The peer's region.
        peer: String,
        /// The session.
        session: u64,
        /// Leaf ranges that differed.
        ranges: u64,
        /// Cart states shipped.
        carts: u64,
        /// Bytes of cart states shipped.
        bytes: u64,
        /// How long it took.
        ms: u64,
    },
    /// A session repairing `peer` was dropped; another starts later.
    AntiEntropyAbandoned {
        /// The peer's region.
        peer: String,
        /// The session.
        session: u64,
        /// Why.
        reason: String,
    },
    /// `peer` finished repairing this node: its progress was raised.
    AntiEntropyApplied {
        /// The peer's region.
        peer: String,
        /// The session.
        session: u64,
    },
    /// A peer needs entries this node has already trimmed: only anti-entropy can repair
    /// it.
    Behind {
        /// The peer's region.
        peer: String,
        /// The origin whose entries are gone.
        origin: ReplicaId,
        /// The first seq the peer needs.
        needs: u64,
    },
}

/// A write of another region applied here: what the driver logs, so one request can be
/// followed across regions by its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedRemote {
    /// The peer it came from (the origin's region, or a region forwarding it).
    pub peer: String,
    /// The node that made the write.
    pub origin: ReplicaId,
    /// Its seq there.
    pub seq: u64,
    /// The cart.
    pub cart: String,
    /// The write's HTTP request id at the origin, if it had one.
    pub request_id: Option<String>,
}

/// Why a message from a peer was refused. The driver closes that connection and logs this.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Not a configured peer.
    #[error("{0:?} is not a configured peer region")]
    UnknownPeer(String),
    /// A Hello naming another region than the connection's.
    #[error("the peer authenticated as {expected:?} but says it is {found:?}")]
    RegionMismatch {
        /// The region the connection authenticated.
        expected: String,
        /// The region the Hello names.
        found: String,
    },
    /// A peer claiming this node's own node id.
    #[error("peer {peer:?} claims node_id {node_id}, which is this node's own")]
    SameNodeId {
        /// The peer's region.
        peer: String,
        /// The id.
        node_id: u64,
    },
    /// An anti-entropy cart state that does not decode or validate.
    #[error("anti-entropy state of cart {cart:?}: {reason}")]
    BadState {
        /// The cart id (at most 64 characters of it).
        cart: String,
        /// Why it was refused.
        reason: String,
    },
    /// An entry that does not decode or validate.
    #[error("entry {seq} of origin {origin}: {reason}")]
    BadEntry {
        /// The entry's origin.
        origin: u64,
        /// Its seq.
        seq: u64,
        /// Why it was refused.
        reason: String,
    },
}

/// `GET /replication`: this node's progress and each peer's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicationStatus {
    /// This node's region.
    pub region: String,
    /// This node's id.
    pub node_id: u64,
    /// The node's causal token (committed progress).
    pub token: String,
    /// Per-origin progress applied and committed, keyed by origin node id (in decimal).
    pub applied: BTreeMap<String, u64>,
    /// Per-origin progress durable (what peers are told).
    pub durable: BTreeMap<String, u64>,
    /// Per-origin progress causally stable (see [`Replica::stable_progress`]); it stalls
    /// while a region is unreachable.
    pub stable: BTreeMap<String, u64>,
    /// Causal-stability compaction of this node's adds ([`compaction`]).
    pub compaction: CompactionStatus,
    /// Delta log entries stored.
    pub log_entries: u64,
    /// Carts stored.
    pub carts: u64,
    /// The root of the digest tree over every cart (16 hex digits): two nodes with the
    /// same root hold the same carts.
    pub digest: String,
    /// One per configured peer, in config order.
    pub peers: Vec<PeerStatus>,
}

/// One peer's replication state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerStatus {
    /// The peer's region.
    pub region: String,
    /// Its node id, once it has said hello.
    pub node_id: Option<u64>,
    /// A connection is up and hello was received.
    pub connected: bool,
    /// This node's own writes the peer has not acknowledged.
    pub unacked: u64,
    /// Age of the oldest local write the peer has not acknowledged, in ms (0 if none).
    pub lag_ms: u64,
    /// Milliseconds since the last message from the peer (`None` if never).
    pub last_contact_ms_ago: Option<u64>,
    /// The peer's acknowledged progress, by origin node id.
    pub acked: BTreeMap<String, u64>,
    /// Bytes of entries sent and not yet acknowledged.
    pub inflight_bytes: u64,
    /// Origins this node is forwarding to the peer (it was behind on them).
    pub forwarding: Vec<u64>,
    /// Origins the peer needs entries of that this node has trimmed (anti-entropy needed).
    pub behind: Vec<u64>,
    /// The peer's clock minus ours, from its last message, in ms (positive: it is ahead).
    pub clock_offset_ms: Option<i64>,
    /// Entries sent to the peer, since start.
    pub entries_sent: u64,
    /// Entries received from the peer and applied, since start.
    pub entries_applied: u64,
    /// Anti-entropy with this peer, either direction.
    pub anti_entropy: AntiEntropyStatus,
}

/// One region's node and its replication state. See the [module docs](self).
#[derive(Debug)]
pub struct Replica<S: Storage, C: PhysicalClock> {
    node: Node<S, C>,
    config: ReplicationConfig,
    peers: Vec<PeerState>,
    /// Received entries waiting for [`commit`](Self::commit), with the index of the peer
    /// each came from.
    inbox: Vec<(usize, RemoteEntry)>,
    /// The highest seq per origin queued in `inbox`.
    inbox_next: BTreeMap<ReplicaId, u64>,
    /// `Process` mode: when committed but unsynced writes are to be synced.
    sync_due: Option<Instant>,
    /// An offloaded sync is running.
    sync_running: bool,
    next_trim: Instant,
    /// Per origin, the seq through which the log is known to be trimmed.
    trimmed: BTreeMap<ReplicaId, u64>,
    /// `(last local seq, when committed)` per commit batch, for lag.
    commit_times: VecDeque<(u64, Instant)>,
    events: VecDeque<Event>,
    events_dropped: u64,
    /// Remote writes applied by the last commits, for the driver's log (bounded by the
    /// inbox: drained with [`poll_applied`](Self::poll_applied)).
    applied: VecDeque<AppliedRemote>,
    /// Anti-entropy: received cart states waiting for [`commit`](Self::commit).
    ae_inbox: Vec<anti_entropy::Queued>,
    /// Anti-entropy's rate limiter: bytes allowed at `ae_refilled_at` (negative: debt).
    ae_budget: i64,
    ae_refilled_at: Instant,
    /// Local adds waiting for causal stability, and the compactions due.
    compactor: compaction::Compactor,
    /// Compaction writes committed, for [`poll_compacted`](Self::poll_compacted).
    compacted: VecDeque<(CartId, u64)>,
}

impl<S: Storage, C: PhysicalClock> Replica<S, C> {
    /// Wraps `node`; no peer is connected yet.
    pub fn new(node: Node<S, C>, config: ReplicationConfig, now: Instant) -> Self {
        let peers = config
            .peers
            .iter()
            .map(|r| PeerState::new(r.clone(), now))
            .collect();
        let config_compaction_queue_max = config.compaction_queue_max;
        Replica {
            node,
            config,
            peers,
            inbox: Vec::new(),
            inbox_next: BTreeMap::new(),
            sync_due: None,
            sync_running: false,
            next_trim: now + TRIM_INTERVAL,
            trimmed: BTreeMap::new(),
            commit_times: VecDeque::new(),
            events: VecDeque::new(),
            events_dropped: 0,
            applied: VecDeque::new(),
            ae_inbox: Vec::new(),
            ae_budget: 0,
            ae_refilled_at: now,
            compactor: compaction::Compactor::new(config_compaction_queue_max, now),
            compacted: VecDeque::new(),
        }
    }

    /// The node.
    pub fn node(&self) -> &Node<S, C> {
        &self.node
    }

    /// The node, for what the replication layer does not see (e.g. the idempotency sweep).
    pub fn node_mut(&mut self) -> &mut Node<S, C> {
        &mut self.node
    }

    /// Gives the node back (to restart it, in tests).
    pub fn into_node(self) -> Node<S, C> {
        self.node
    }

    /// The settings.
    pub fn config(&self) -> &ReplicationConfig {
        &self.config
    }

    /// Each peer's state, in config order.
    pub fn peers(&self) -> &[PeerState] {
        &self.peers
    }

    /// Received entries waiting to be committed.
    pub fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    /// `true` if received entries wait for [`commit`](Self::commit).
    pub fn wants_commit(&self) -> bool {
        !self.inbox.is_empty() || !self.ae_inbox.is_empty() || self.compactor.has_due()
    }

    fn peer_index(&self, region: &str) -> Option<usize> {
        self.peers.iter().position(|p| p.region == region)
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    /// The next thing worth logging or counting.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next remote write applied here, for the driver's log.
    pub fn poll_applied(&mut self) -> Option<AppliedRemote> {
        self.applied.pop_front()
    }

    /// Events dropped because nobody polled them (past [`EVENTS_MAX`]).
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// A connection to `peer` is up: we owe it a Hello, and resume from what it
    /// acknowledged once its Hello arrives. Unknown regions are ignored.
    pub fn handle_connect(&mut self, now: Instant, peer: &str) {
        if let Some(i) = self.peer_index(peer) {
            let p = &mut self.peers[i];
            p.link_up = true;
            p.hello_received = false;
            p.hello_owed = true;
            p.heard_back = false;
            p.hello_sent_at = None;
            p.rewind(now);
            p.reset_anti_entropy(now);
        }
    }

    /// The connection to `peer` is gone: nothing more is sent to it until the next one.
    pub fn handle_disconnect(&mut self, now: Instant, peer: &str) {
        if let Some(i) = self.peer_index(peer) {
            let p = &mut self.peers[i];
            p.link_up = false;
            p.hello_received = false;
            p.hello_owed = false;
            p.send_due = None;
            p.rewind(now);
            p.reset_anti_entropy(now);
        }
    }

    /// Takes in one message from `from` (the region the transport authenticated).
    ///
    /// Deltas are decoded with a limit and validated here, then wait for the next
    /// [`commit`](Self::commit). An error means the peer broke the protocol: close the
    /// connection and log it; nothing of a refused message is applied.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: &str,
        msg: Message,
    ) -> Result<(), ProtocolError> {
        let i = self
            .peer_index(from)
            .ok_or_else(|| ProtocolError::UnknownPeer(from.to_owned()))?;
        let local_ms = self.node.hlc().physical_clock().now_ms();
        {
            let p = &mut self.peers[i];
            p.last_contact = Some(now);
            let remote_ms = msg.hlc().physical_ms();
            p.clock_offset_ms = Some(remote_ms as i64 - local_ms as i64);
        }
        // The receive event. A clock too far ahead leaves ours unchanged (it is refused,
        // and shows as the peer's offset); its deltas are held back below.
        let _ = self.node.hlc().update(msg.hlc());
        match msg {
            Message::Hello {
                region,
                node_id,
                progress,
                committed,
                ..
            } => {
                let r = self.handle_hello(now, i, region, node_id, progress.clone());
                if r.is_ok() {
                    // A restarted peer's newest word on what its writes observe (its
                    // last Acks may name seqs a power failure took back).
                    self.peers[i].record_ack(committed, &progress);
                }
                r
            }
            Message::Ack {
                progress,
                committed,
                ..
            } => {
                self.peers[i].heard_back = true;
                self.peers[i].record_ack(committed, &progress);
                self.handle_ack(now, i, &progress);
                Ok(())
            }
            Message::Deltas { entries, .. } => {
                self.peers[i].heard_back = true;
                self.handle_deltas(i, local_ms, entries)
            }
            msg => {
                self.peers[i].heard_back = true;
                self.ae_handle(i, now, local_ms, msg)
            }
        }
    }

    fn handle_hello(
        &mut self,
        now: Instant,
        i: usize,
        region: String,
        node_id: ReplicaId,
        progress: Progress,
    ) -> Result<(), ProtocolError> {
        let me = self.node.config().node_id;
        let p = &mut self.peers[i];
        if region != p.region {
            return Err(ProtocolError::RegionMismatch {
                expected: p.region.clone(),
                found: region,
            });
        }
        if node_id == me {
            return Err(ProtocolError::SameNodeId {
                peer: region,
                node_id: node_id.0,
            });
        }
        let same_node = p.node_id == Some(node_id);
        p.node_id = Some(node_id);
        if same_node {
            // A node's durable progress never goes down: a Hello lower than what it has
            // acknowledged since is a late copy, not news.
            for (o, s) in progress {
                let a = p.acked.entry(o).or_insert(0);
                *a = (*a).max(s);
            }
        } else {
            // A new node id in this region (a replaced node): its word is the truth.
            p.acked = progress.into_iter().collect();
            p.acks.clear();
        }
        if !p.link_up {
            // A stale Hello from a connection the transport has closed.
            return Ok(());
        }
        p.hello_received = true;
        p.probes.clear();
        p.forwarding.clear();
        p.behind.clear();
        p.rewind(now);
        p.reset_anti_entropy(now);
        p.send_due = Some(now);
        p.ack_owed = true;
        Ok(())
    }

    fn handle_ack(&mut self, now: Instant, i: usize, progress: &[(ReplicaId, u64)]) {
        let me = self.node.config().node_id;
        // A peer that moved on an origin it was behind on (another peer repaired it) may
        // need nothing trimmed any more: the next batch finds out.
        let p = &mut self.peers[i];
        if p.ae_out.is_none() && !p.behind.is_empty() {
            let before: Vec<(ReplicaId, u64)> =
                p.behind.iter().map(|o| (*o, p.acked(*o))).collect();
            let moved: Vec<ReplicaId> = before
                .into_iter()
                .filter(|(o, a)| progress.iter().any(|(po, ps)| po == o && ps > a))
                .map(|(o, _)| o)
                .collect();
            for o in moved {
                p.behind.remove(&o);
                let acked = p.acked(o);
                let s = p.sent.entry(o).or_insert(0);
                *s = (*s).max(acked);
            }
        }
        let (from, through) = self.peers[i].take_ack(progress, me, now);
        if through > from {
            let region = self.peers[i].region.clone();
            let lags: Vec<u64> = self
                .commit_times
                .iter()
                .filter(|(s, _)| *s > from && *s <= through)
                .map(|(_, t)| now.saturating_duration_since(*t).as_millis() as u64)
                .collect();
            for ms in lags {
                self.push_event(Event::Lag {
                    peer: region.clone(),
                    ms,
                });
            }
            // Forget commit times every peer has acknowledged.
            let floor = self.peers.iter().map(|p| p.acked(me)).min().unwrap_or(0);
            while self.commit_times.front().is_some_and(|(s, _)| *s <= floor) {
                self.commit_times.pop_front();
            }
        }
        if !self.peers[i].inflight.is_empty() || self.peers[i].send_due.is_none() {
            self.mark_sendable(i, now);
        }
        self.ae_check_done(i, now);
    }

    fn handle_deltas(
        &mut self,
        i: usize,
        local_ms: u64,
        entries: Vec<Entry>,
    ) -> Result<(), ProtocolError> {
        let me = self.node.config().node_id;
        let max_offset_ms = self.node.config().max_clock_offset.as_millis() as u64;
        // Origins to skip for the rest of this message (a gap, or an entry held back).
        let mut stopped: Vec<ReplicaId> = Vec::new();
        let mut fresh = 0usize;
        // Decode and validate every entry first: a message with one bad entry is refused
        // whole, and nothing of it is applied.
        let mut checked = Vec::with_capacity(entries.len());
        for e in entries {
            let bad = |reason: String| ProtocolError::BadEntry {
                origin: e.origin.0,
                seq: e.seq,
                reason,
            };
            let record = codec::decode_delta_checked(&e.record).map_err(|x| bad(x.to_string()))?;
            CartId::parse(&record.cart).map_err(|x| bad(x.to_string()))?;
            checked.push((e, record));
        }
        for (e, record) in checked {
            if e.origin == me || stopped.contains(&e.origin) {
                continue;
            }
            let have = self
                .inbox_next
                .get(&e.origin)
                .copied()
                .unwrap_or(0)
                .max(self.node.remote_progress(e.origin));
            if e.seq <= have {
                continue;
            }
            if e.seq != have + 1 || self.inbox.len() >= self.config.inbox_entries_max {
                stopped.push(e.origin);
                continue;
            }
            if let Some(ahead_ms) = held_back(&record, local_ms, max_offset_ms) {
                stopped.push(e.origin);
                let region = self.peers[i].region.clone();
                self.push_event(Event::HeldBack {
                    peer: region,
                    origin: e.origin,
                    ahead_ms,
                });
                continue;
            }
            self.inbox_next.insert(e.origin, e.seq);
            self.inbox.push((
                i,
                RemoteEntry {
                    origin: e.origin,
                    seq: e.seq,
                    record,
                    bytes: e.record,
                },
            ));
            fresh += 1;
        }
        if fresh == 0 {
            // Nothing new: tell the sender where we are, so it stops resending.
            self.peers[i].ack_owed = true;
        }
        Ok(())
    }

    /// Applies the received entries and then `reqs` as one storage batch (see
    /// [`Node::commit`]), and returns the local results in order.
    pub fn commit(
        &mut self,
        now: Instant,
        reqs: Vec<WriteRequest>,
    ) -> Vec<Result<Applied, NodeError>> {
        self.ae_commit();
        let inbox = std::mem::take(&mut self.inbox);
        self.inbox_next.clear();
        let (from, entries): (Vec<usize>, Vec<RemoteEntry>) = inbox.into_iter().unzip();
        let about: Vec<(ReplicaId, u64, String, Option<String>)> = entries
            .iter()
            .map(|e| {
                (
                    e.origin,
                    e.seq,
                    e.record.cart.clone(),
                    e.record.request_id.clone(),
                )
            })
            .collect();
        let before = self.node.last_seq();
        let clients = reqs.len();
        let mut reqs = reqs;
        reqs.extend(self.compactor.take_due());
        let mut committed = self.node.commit(entries, reqs, self.config.durability);
        committed.local.truncate(clients);
        self.compactor
            .push(now, std::mem::take(&mut committed.compactable));
        for (cart, seq) in std::mem::take(&mut committed.compacted) {
            self.compactor.writes += 1;
            if self.compacted.len() >= self.config.inbox_entries_max {
                self.compacted.pop_front();
            }
            self.compacted.push_back((cart, seq));
        }
        let mut applied = vec![0u64; self.peers.len()];
        for ((i, r), (origin, seq, cart, request_id)) in
            from.into_iter().zip(&committed.remote).zip(about)
        {
            if matches!(r, Ok(crate::node::RemoteOutcome::Applied)) {
                applied[i] += 1;
                if self.applied.len() >= self.config.inbox_entries_max {
                    self.applied.pop_front();
                    self.events_dropped += 1;
                }
                self.applied.push_back(AppliedRemote {
                    peer: self.peers[i].region.clone(),
                    origin,
                    seq,
                    cart,
                    request_id,
                });
            }
        }
        for (i, n) in applied.into_iter().enumerate() {
            if n > 0 {
                self.peers[i].entries_applied += n;
                let peer = self.peers[i].region.clone();
                self.push_event(Event::Applied { peer, entries: n });
            }
        }
        if self.node.last_seq() != before {
            if self.commit_times.len() >= COMMIT_TIMES_MAX {
                self.commit_times.pop_front();
            }
            self.commit_times.push_back((self.node.last_seq(), now));
        }
        if self.peers.is_empty() {
            // Nobody to ship to or acknowledge: no replication sync (the node's own
            // durability mode stands), and trimming follows committed progress.
        } else if self.node.has_unsynced() {
            // An offloaded sync starts at once: commits made while it runs wait for the
            // next one, which batches them (group commit of syncs). An inline sync stalls
            // the event loop, so it waits out the batch window.
            let due = if self.config.offload_sync {
                now
            } else {
                now + self.config.batch_window
            };
            self.sync_due.get_or_insert(due);
        } else {
            // Durable at once (fsync): the batch window gathers the next commits too.
            self.on_durable(now + self.config.batch_window);
        }
        committed.local
    }

    /// Durable progress moved: every connected peer gets an Ack, and new entries from
    /// `due` on.
    fn on_durable(&mut self, due: Instant) {
        for i in 0..self.peers.len() {
            if self.peers[i].is_connected() {
                self.peers[i].ack_owed = true;
                self.mark_sendable(i, due);
            }
        }
    }

    /// Peer `i` has entries to send: the next batch goes out at `due` (or earlier, if it
    /// was due earlier).
    fn mark_sendable(&mut self, i: usize, due: Instant) {
        if self.has_sendable(i) {
            let d = self.peers[i].send_due.get_or_insert(due);
            *d = (*d).min(due);
        }
    }

    /// The origins this node sends to peer `i`: its own, and those it forwards.
    fn origins_for(&self, i: usize) -> Vec<ReplicaId> {
        let p = &self.peers[i];
        let me = self.node.config().node_id;
        std::iter::once(me)
            .chain(p.forwarding.iter().copied())
            .filter(|o| Some(*o) != p.node_id && !p.behind.contains(o))
            .collect()
    }

    fn durable_of(&self, origin: ReplicaId) -> u64 {
        self.node
            .durable_progress()
            .get(&origin)
            .copied()
            .unwrap_or(0)
    }

    fn has_sendable(&self, i: usize) -> bool {
        let p = &self.peers[i];
        p.is_connected()
            && self
                .origins_for(i)
                .into_iter()
                .any(|o| self.durable_of(o) > p.sent.get(&o).copied().unwrap_or(0))
    }

    /// Timers: syncs (in `Process` mode), resends, forwarding decisions and log trimming.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.config.offload_sync && self.sync_due.is_some_and(|t| t <= now) {
            self.sync_due = None;
            if self.node.has_unsynced() {
                match self.node.sync() {
                    // The sync waited out the batch window already: ship at once.
                    Ok(()) => self.on_durable(now),
                    Err(e) => {
                        self.push_event(Event::Storage(e.to_string()));
                        self.sync_due = Some(now + self.config.batch_window);
                    }
                }
            }
        }
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            // The peer answers our Hello with Acks (it sends nothing before it): with none
            // for a resend timeout, our Hello was lost; say it again.
            if p.link_up
                && !p.heard_back
                && p.hello_sent_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.config.resend_timeout)
            {
                p.hello_owed = true;
                p.hello_sent_at = None;
            }
            if !p.inflight.is_empty()
                && now.saturating_duration_since(p.last_progress) >= self.config.resend_timeout
            {
                p.rewind(now);
                self.mark_sendable(i, now);
            }
            self.update_forwarding(i, now);
            self.ae_timeout(i, now);
        }
        if now >= self.next_trim {
            self.next_trim = now + TRIM_INTERVAL;
            self.trim();
        }
        if !self.config.compaction_interval.is_zero() && now >= self.compactor.next_round {
            self.compactor.next_round = now + self.config.compaction_interval;
            let me = self.node.config().node_id;
            let stable = self.stable_progress().get(&me).copied().unwrap_or(0);
            self.compactor.round(me, stable);
        }
    }

    /// The compaction writes committed since the last call, oldest first: `(cart, seq)`
    /// of each (bounded like the inbox; a driver that never asks loses only these
    /// notices).
    pub fn poll_compacted(&mut self) -> Option<(CartId, u64)> {
        self.compacted.pop_front()
    }

    /// Compaction's queue and counters.
    pub fn compaction_status(&self, now: Instant) -> CompactionStatus {
        self.compactor.status(now)
    }

    /// Starts forwarding an origin to peer `i` once the peer's progress on it has stayed
    /// below ours for `forward_after`; stops once it has caught up.
    fn update_forwarding(&mut self, i: usize, now: Instant) {
        let me = self.node.config().node_id;
        if !self.peers[i].is_connected() {
            return;
        }
        let origins: Vec<(ReplicaId, u64)> = self
            .node
            .durable_progress()
            .iter()
            .filter(|(o, _)| **o != me && Some(**o) != self.peers[i].node_id)
            .map(|(o, s)| (*o, *s))
            .collect();
        let forward_after = self.config.forward_after;
        let mut started = false;
        let p = &mut self.peers[i];
        for (o, ours) in origins {
            let theirs = p.acked(o);
            if p.forwarding.contains(&o) {
                if theirs >= ours {
                    p.forwarding.remove(&o);
                }
                continue;
            }
            if theirs >= ours {
                p.probes.remove(&o);
                continue;
            }
            match p.probes.get(&o).copied() {
                None => {
                    p.probes.insert(
                        o,
                        Probe {
                            target: ours,
                            deadline: now + forward_after,
                        },
                    );
                }
                Some(pr) if theirs >= pr.target => {
                    p.probes.insert(
                        o,
                        Probe {
                            target: ours,
                            deadline: now + forward_after,
                        },
                    );
                }
                Some(pr) if now >= pr.deadline => {
                    p.probes.remove(&o);
                    p.forwarding.insert(o);
                    let s = p.sent.entry(o).or_insert(0);
                    *s = (*s).max(theirs);
                    started = true;
                }
                Some(_) => {}
            }
        }
        if started {
            self.mark_sendable(i, now);
        }
    }

    /// Deletes log entries every peer has acknowledged, and those past the retention
    /// (bounded per call). A peer that needs a deleted entry is repaired by anti-entropy.
    fn trim(&mut self) {
        // A peer we have not heard from since start may need anything within retention.
        let unheard = self
            .peers
            .iter()
            .any(|p| p.node_id.is_none() && p.acked.is_empty());
        let origins: Vec<(ReplicaId, u64)> = if self.peers.is_empty() {
            self.node.progress()
        } else {
            self.progress_vec()
        };
        let retention = self.config.log_retention_entries;
        let mut budget = TRIM_ENTRIES_MAX;
        for (o, durable) in origins {
            let acked = if unheard {
                0
            } else {
                self.peers
                    .iter()
                    // The origin never needs its own entries back: it only ever shipped
                    // durable ones, and it may never acknowledge them again (its last Ack
                    // lost).
                    .filter(|p| p.node_id != Some(o))
                    .map(|p| p.acked(o))
                    .fold(durable, u64::min)
            };
            let bound = acked.max(durable.saturating_sub(retention));
            let done = self.trimmed.get(&o).copied().unwrap_or(0);
            if bound <= done || budget == 0 {
                continue;
            }
            match self.node.trim_log(o, done + 1, bound, budget) {
                Ok((n, last)) => {
                    budget -= n;
                    let through = if budget > 0 { bound } else { last };
                    self.trimmed.insert(o, through);
                }
                Err(e) => self.push_event(Event::Storage(e.to_string())),
            }
        }
    }

    /// With `offload_sync`: a sync is due. Run [`Storage::sync`] (on any thread), then call
    /// [`handle_synced`](Self::handle_synced) with this request. At most one runs at a time.
    pub fn poll_sync(&mut self, now: Instant) -> Option<SyncRequest> {
        if !self.config.offload_sync || self.sync_running || self.sync_due.is_none_or(|t| t > now) {
            return None;
        }
        self.sync_due = None;
        if !self.node.has_unsynced() {
            return None;
        }
        self.sync_running = true;
        Some(SyncRequest {
            progress: self.node.progress(),
        })
    }

    /// The sync of `request` finished: on success, everything committed before it was
    /// requested is durable, and ships at once.
    pub fn handle_synced(
        &mut self,
        now: Instant,
        request: SyncRequest,
        result: Result<(), crate::storage::StorageError>,
    ) {
        self.sync_running = false;
        match result {
            Ok(()) => {
                self.node.mark_durable_through(&request.progress);
                self.on_durable(now);
            }
            Err(e) => {
                // Retry after a window, not in a tight loop.
                self.push_event(Event::Storage(e.to_string()));
                self.sync_due = Some(now + self.config.batch_window);
            }
        }
        if self.node.has_unsynced() {
            self.sync_due.get_or_insert(now);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.next_trim);
        let mut earliest = |x: Instant| {
            t = Some(t.map_or(x, |y| y.min(x)));
        };
        if let Some(s) = self.sync_due.filter(|_| !self.sync_running) {
            earliest(s);
        }
        for p in &self.peers {
            if !p.inflight.is_empty() {
                earliest(p.last_progress + self.config.resend_timeout);
            }
            if let (true, false, Some(t)) = (p.link_up, p.heard_back, p.hello_sent_at) {
                earliest(t + self.config.resend_timeout);
            }
            if p.is_connected() && p.inflight_bytes < self.config.inflight_bytes_max {
                if let Some(due) = p.send_due {
                    earliest(due);
                }
            }
            for pr in p.probes.values() {
                earliest(pr.deadline);
            }
        }
        for i in 0..self.peers.len() {
            if let Some(x) = self.ae_poll_timeout(i) {
                earliest(x);
            }
        }
        if self.compactor.has_queued() && !self.config.compaction_interval.is_zero() {
            earliest(self.compactor.next_round);
        }
        t
    }

    /// The next message to send, if any. Call until `None` after every input.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        for i in 0..self.peers.len() {
            if let Some(t) = self.transmit_to(i, now) {
                return Some(t);
            }
        }
        None
    }

    fn progress_vec(&self) -> Progress {
        self.node
            .durable_progress()
            .iter()
            .map(|(o, s)| (*o, *s))
            .collect()
    }

    fn transmit_to(&mut self, i: usize, now: Instant) -> Option<Transmit> {
        if !self.peers[i].link_up {
            return None;
        }
        let to = self.peers[i].region.clone();
        if self.peers[i].hello_owed {
            self.peers[i].hello_owed = false;
            self.peers[i].hello_sent_at = Some(now);
            let message = Message::Hello {
                region: self.config.region.clone(),
                node_id: self.node.config().node_id,
                hlc: self.node.hlc().now(),
                progress: self.progress_vec(),
                committed: self.node.last_seq(),
            };
            return Some(Transmit { to, message });
        }
        if !self.peers[i].hello_received {
            return None;
        }
        if self.peers[i].ack_owed {
            self.peers[i].ack_owed = false;
            let progress = self.progress_vec();
            self.peers[i].last_ack_sent = progress.clone();
            let message = Message::Ack {
                hlc: self.node.hlc().now(),
                progress,
                committed: self.node.last_seq(),
            };
            return Some(Transmit { to, message });
        }
        if let Some(message) = self.ae_transmit(i, now) {
            return Some(Transmit { to, message });
        }
        let due = self.peers[i].send_due?;
        if now < due || self.peers[i].inflight_bytes >= self.config.inflight_bytes_max {
            return None;
        }
        let entries = self.build_batch(i);
        if entries.is_empty() {
            self.peers[i].send_due = None;
            return None;
        }
        self.peers[i].entries_sent += entries.len() as u64;
        let message = Message::Deltas {
            hlc: self.node.hlc().now(),
            entries,
        };
        Some(Transmit { to, message })
    }

    /// Reads the next durable entries for peer `i` from the log, within the batch and
    /// in-flight limits, and records them as in flight.
    fn build_batch(&mut self, i: usize) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for o in self.origins_for(i) {
            let durable = self.durable_of(o);
            let sent = self.peers[i].sent.get(&o).copied().unwrap_or(0);
            if durable <= sent {
                continue;
            }
            let room_bytes = self.config.batch_bytes_max.saturating_sub(bytes).min(
                self.config
                    .inflight_bytes_max
                    .saturating_sub(self.peers[i].inflight_bytes),
            );
            let room_entries = wire::ENTRIES_MAX - entries.len();
            if room_bytes == 0 || room_entries == 0 {
                break;
            }
            let want = usize::try_from(durable - sent).unwrap_or(usize::MAX);
            let read = crate::node::read_log_raw(
                self.node.storage(),
                o,
                sent + 1,
                room_entries.min(want),
                room_bytes,
            );
            let got = match read {
                Ok(got) => got,
                Err(e) => {
                    self.push_event(Event::Storage(e.to_string()));
                    continue;
                }
            };
            if got.first().map(|(s, _)| *s) != Some(sent + 1) {
                // Trimmed already: the peer needs anti-entropy for this origin.
                let p = &mut self.peers[i];
                p.behind.insert(o);
                let peer = p.region.clone();
                self.push_event(Event::Behind {
                    peer,
                    origin: o,
                    needs: sent + 1,
                });
                continue;
            }
            let mut through = sent;
            let mut batch_bytes = 0usize;
            for (seq, record) in got {
                if seq > durable || seq != through + 1 {
                    break;
                }
                through = seq;
                batch_bytes += record.len();
                entries.push(Entry {
                    origin: o,
                    seq,
                    record,
                });
            }
            bytes += batch_bytes;
            let p = &mut self.peers[i];
            p.sent.insert(o, through);
            p.inflight.push_back(InFlight {
                origin: o,
                through,
                bytes: batch_bytes,
            });
            p.inflight_bytes += batch_bytes;
        }
        entries
    }

    /// Per origin, the seq through which its writes are **causally stable** here: every
    /// region (this one included) has applied them, and every write of any region that is
    /// still to reach this node was made after its region had applied them. So no write
    /// that observed only part of them can still arrive: the condition for compacting their
    /// metadata (issue 13).
    ///
    /// For each configured peer it takes the newest Ack whose `committed` seq this node has
    /// already applied of that peer (the peer's later writes all observed that Ack's
    /// progress). A peer never heard from, or unreachable, holds it back: stability stalls
    /// while a region is away.
    pub fn stable_progress(&self) -> BTreeMap<ReplicaId, u64> {
        let me = self.node.config().node_id;
        let applied: BTreeMap<ReplicaId, u64> = self.node.progress().into_iter().collect();
        applied
            .iter()
            .map(|(origin, ours)| {
                let bound = self.peers.iter().fold(*ours, |b, p| {
                    let Some(pid) = p.node_id else {
                        return 0;
                    };
                    if pid == *origin {
                        // The peer's own writes still to come follow all its earlier ones.
                        return b;
                    }
                    let of_peer = if pid == me {
                        0
                    } else {
                        applied.get(&pid).copied().unwrap_or(0)
                    };
                    b.min(p.stable_bound(*origin, of_peer))
                });
                (*origin, bound)
            })
            .collect()
    }

    /// Writes applied here that are not yet causally stable (summed over origins).
    pub fn unstable_writes(&self) -> u64 {
        let stable = self.stable_progress();
        self.node
            .progress()
            .into_iter()
            .map(|(o, s)| s.saturating_sub(stable.get(&o).copied().unwrap_or(0)))
            .sum()
    }

    /// Every peer's state and this node's progress, for `GET /replication`.
    pub fn status(&self, now: Instant) -> ReplicationStatus {
        let me = self.node.config().node_id;
        let ids =
            |m: &BTreeMap<ReplicaId, u64>| m.iter().map(|(o, s)| (o.0.to_string(), *s)).collect();
        let peers = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let acked_me = p.acked(me);
                let lag_ms = self
                    .commit_times
                    .iter()
                    .find(|(s, _)| *s > acked_me)
                    .map_or(0, |(_, t)| {
                        now.saturating_duration_since(*t).as_millis() as u64
                    });
                PeerStatus {
                    region: p.region.clone(),
                    node_id: p.node_id.map(|n| n.0),
                    connected: p.is_connected(),
                    unacked: self.node.last_seq().saturating_sub(acked_me),
                    lag_ms,
                    last_contact_ms_ago: p
                        .last_contact
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    acked: ids(&p.acked),
                    inflight_bytes: p.inflight_bytes as u64,
                    forwarding: p.forwarding.iter().map(|o| o.0).collect(),
                    behind: p.behind.iter().map(|o| o.0).collect(),
                    clock_offset_ms: p.clock_offset_ms,
                    entries_sent: p.entries_sent,
                    entries_applied: p.entries_applied,
                    anti_entropy: self.ae_status(i),
                }
            })
            .collect();
        ReplicationStatus {
            region: self.config.region.clone(),
            node_id: me.0,
            token: self.node.token().to_string(),
            applied: self
                .node
                .progress()
                .into_iter()
                .map(|(o, s)| (o.0.to_string(), s))
                .collect(),
            durable: ids(self.node.durable_progress()),
            stable: ids(&self.stable_progress()),
            compaction: self.compactor.status(now),
            log_entries: self.node.log_len(),
            carts: self.node.carts_stored(),
            digest: format!("{:016x}", self.node.digests().root()),
            peers,
        }
    }
}

/// How far ahead of local physical time `record` is stamped, if more than the max offset:
/// such an entry is held back (not applied, not acknowledged; the sender resends it).
fn held_back(record: &DeltaRecord, local_ms: u64, max_offset_ms: u64) -> Option<u64> {
    let ts: HlcTimestamp = record.hlc;
    let ahead = ts.physical_ms().saturating_sub(local_ms);
    (ahead > max_offset_ms).then_some(ahead)
}
