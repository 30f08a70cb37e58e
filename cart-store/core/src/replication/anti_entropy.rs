//! Anti-entropy: repairing a peer that needs deltas this node has already trimmed.
//!
//! The delta log serves a peer that is a little behind. A peer that is far behind (offline
//! past the log's retention), replaced (same region, empty data dir, new node id) or new
//! needs entries nobody keeps any more: [`build_batch`](super::Replica) finds the gap and
//! marks the origin `behind`. Then this node, the **repairer**, runs a session with it:
//!
//! 1. It notes its durable progress `P` and sends its [`DigestTree`](crate::digest)'s root
//!    ([`Message::AeDigests`], level 0).
//! 2. The peer answers which nodes differ ([`Message::AeDiffer`]); the repairer sends the
//!    digests of their children, and so on down to the leaves (3 round trips).
//! 3. The repairer scans its carts once, in key order, and ships the whole state of every
//!    cart in a differing leaf ([`Message::AeCarts`], numbered chunks, at most
//!    [`AE_CHUNKS_INFLIGHT_MAX`] unacknowledged, rate-limited to
//!    `anti_entropy_bytes_per_sec`), then [`Message::AeDone`] with `P`.
//! 4. The peer joins each state into its own (a merge: order and repeats do not matter) and,
//!    if it got every chunk and refused none, raises its per-origin progress to `P` in the
//!    same kind of batch. Its next Ack says so; the repairer clears `behind` and the delta
//!    stream resumes from `P`.
//!
//! Why raising to `P` is sound: every cart the repairer holds reflects at least the writes
//! `P` names. A range that compared equal was equal to the repairer's at a time after `P`
//! was noted (carts only grow), and every other range was shipped after it. So once every
//! chunk is merged, the peer's carts reflect `P` too.
//!
//! Chunks carry the repairer's own writes, so, like deltas, they ship only once durable: a
//! power failure must never take back a dot a peer has seen. A chunk is held until the
//! node's own progress is durable through the seq it was read at.
//!
//! **Resumable**: a session that breaks (a disconnect, a lost message, a refused cart, no
//! answer for [`AE_STALL_MIN`] or two resend timeouts) is dropped and a new one starts. Ranges already
//! repaired compare equal and are not shipped again, so at most the leaves in flight are
//! repeated. **Bounded**: one session per peer; messages within the frame and
//! [`wire`](super::wire) limits; at most [`AE_CHUNKS_INFLIGHT_MAX`] chunks of
//! [`AE_CHUNK_BYTES_MAX`] or [`AE_CHUNK_CARTS_MAX`] in flight per peer (the receiver merges one
//! chunk per commit); at most [`AE_SCAN_KEYS_MAX`] carts examined
//! per [`poll_transmit`](super::Replica::poll_transmit), so the event loop never stalls on a
//! large store.

use super::wire::{Message, Progress};
use super::{Event, Replica};
use crate::codec;
use crate::digest::{self, DigestTree, LEAVES, LEVELS};
use crate::node::{RemoteState, StateOutcome};
use crate::storage::{Cf, Storage};
use crate::validate::CartId;
use meridian_clocks::{PhysicalClock, ReplicaId};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Default `anti_entropy_bytes_per_sec`: 8 MiB/s of cart states per node.
pub const AE_BYTES_PER_SEC_DEFAULT: u64 = 8 << 20;
/// Largest chunk of cart states (one cart may exceed it alone).
pub const AE_CHUNK_BYTES_MAX: usize = 128 * 1024;
/// Most carts in one chunk: the receiver merges a chunk in one commit of its writer, so
/// this bounds how long local writes wait behind it.
pub const AE_CHUNK_CARTS_MAX: usize = 1024;
/// A session with no answer for this long (or two resend timeouts, if longer) is dropped.
/// A dead link is found sooner by the transport; this is for messages lost in between.
pub const AE_STALL_MIN: Duration = Duration::from_secs(10);
/// Most chunks sent to one peer and not yet acknowledged.
pub const AE_CHUNKS_INFLIGHT_MAX: u32 = 4;
/// Most carts examined per call while scanning for a chunk.
pub const AE_SCAN_KEYS_MAX: usize = 4096;
/// Most bytes of received cart states waiting for the next commit.
pub const AE_INBOX_BYTES_MAX: usize = 4 * AE_CHUNKS_INFLIGHT_MAX as usize * AE_CHUNK_BYTES_MAX;

/// `(cart id, encoded state)` as stored and shipped.
pub(crate) type CartState = (String, Vec<u8>);

/// This node repairing a peer: one session.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub session: u64,
    /// Our durable progress when the session began.
    pub progress: Progress,
    pub phase: Phase,
    /// A message owed to the peer (digests or done).
    pub owed: Option<Owed>,
    pub next_chunk: u32,
    pub chunks_acked: u32,
    /// A chunk read and waiting for our own writes in it to be durable through `.1`.
    pub pending: Option<(Vec<CartState>, u64)>,
    pub last_heard: Instant,
    pub started: Instant,
    pub carts_sent: u64,
    pub bytes_sent: u64,
    pub ranges_differing: u64,
}

#[derive(Clone, Debug)]
pub(crate) enum Phase {
    /// Descending the tree; `level` is the level of the digests last sent (an answer for
    /// another is a stale copy), `leaves` collects the ranges found different so far.
    Comparing { level: u8, leaves: Vec<bool> },
    Shipping {
        leaves: Vec<bool>,
        cursor: Vec<u8>,
        scanned: u64,
        scan_done: bool,
    },
    /// Everything sent; waiting for the peer's Ack to reach `progress`.
    Finishing,
}

#[derive(Clone, Debug)]
pub(crate) enum Owed {
    Digests { level: u8, nodes: Vec<(u32, u64)> },
    Done,
}

/// A peer repairing this node: one session.
#[derive(Clone, Debug, Default)]
pub(crate) struct Incoming {
    pub session: u64,
    pub next_chunk: u32,
    /// A chunk was missed or a cart refused: progress is not raised.
    pub broken: bool,
    /// Chunks committed, to acknowledge.
    pub chunks_applied: u32,
    pub ack_owed: bool,
    /// The last message of this session (a session the repairer dropped expires).
    pub last_heard: Option<Instant>,
}

/// Per peer, cumulative since start: what `/replication` and the metrics show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AntiEntropyStatus {
    /// `idle`, or the running session's phase: `comparing`, `shipping`, `finishing` (this
    /// node repairs the peer) or `receiving` (the peer repairs this node).
    pub state: String,
    /// While shipping: carts examined so far of `carts_total`.
    pub carts_scanned: u64,
    /// Carts this node stores.
    pub carts_total: u64,
    /// Sessions this node started to repair the peer.
    pub sessions_started: u64,
    /// Of those, sessions that completed (the peer caught up).
    pub sessions_completed: u64,
    /// Tree nodes compared (either direction).
    pub ranges_compared: u64,
    /// Leaf ranges found different (either direction).
    pub ranges_repaired: u64,
    /// Cart states sent to the peer.
    pub carts_sent: u64,
    /// Bytes of cart states sent to the peer.
    pub bytes_sent: u64,
    /// Bytes of comparison messages (digests, differing ranges) sent to the peer, framed.
    pub compare_bytes_sent: u64,
    /// Cart states received from the peer.
    pub carts_received: u64,
    /// Bytes of cart states received from the peer.
    pub bytes_received: u64,
}

/// How many leaves one node at `level` spans.
fn leaf_span(level: u8) -> usize {
    LEAVES / digest::level_width(level)
}

/// How many leaves the nodes `nodes` at `level` span together.
fn leaves_under(level: u8, nodes: &[u32]) -> u64 {
    (nodes.len() * leaf_span(level)) as u64
}

/// Received cart states waiting for [`Replica::commit`].
#[derive(Debug)]
pub(crate) struct Queued {
    pub peer: usize,
    pub session: u64,
    pub states: Vec<RemoteState>,
    pub bytes: usize,
    /// `Some(progress)`: the session's done: raise to it once everything before is merged.
    pub raise: Option<Progress>,
}

impl<S: Storage, C: PhysicalClock> Replica<S, C> {
    fn ae_stall(&self) -> Duration {
        (self.config.resend_timeout * 2).max(AE_STALL_MIN)
    }

    /// Starts a session with peer `i` if it is behind and none runs.
    pub(super) fn ae_maybe_start(&mut self, i: usize, now: Instant) {
        let p = &self.peers[i];
        if !p.is_connected() || p.behind.is_empty() || p.ae_out.is_some() || now < p.ae_retry_at {
            return;
        }
        let session = self.node.hlc().now().to_u64();
        let progress = self.progress_vec();
        let root = self.node.digests().root();
        let p = &mut self.peers[i];
        p.ae.sessions_started += 1;
        p.ae.ranges_compared += 1;
        p.ae_out = Some(Outgoing {
            session,
            progress,
            phase: Phase::Comparing {
                level: 0,
                leaves: vec![false; LEAVES],
            },
            owed: Some(Owed::Digests {
                level: 0,
                nodes: vec![(0, root)],
            }),
            next_chunk: 0,
            chunks_acked: 0,
            pending: None,
            last_heard: now,
            started: now,
            carts_sent: 0,
            bytes_sent: 0,
            ranges_differing: 0,
        });
        let peer = p.region.clone();
        let behind = p.behind.iter().map(|o| o.0).collect();
        self.push_event(Event::AntiEntropyStarted {
            peer,
            session,
            behind,
        });
    }

    /// Timers: a session with no answer for a while is dropped (and restarted later); one
    /// the peer stopped sending is forgotten.
    pub(super) fn ae_timeout(&mut self, i: usize, now: Instant) {
        let stall = self.ae_stall();
        let p = &mut self.peers[i];
        if p.ae_in.as_ref().is_some_and(|s| {
            s.last_heard
                .is_some_and(|t| now.saturating_duration_since(t) >= stall)
        }) {
            p.ae_in = None;
        }
        if let Some(s) = &p.ae_out {
            if now.saturating_duration_since(s.last_heard) >= stall {
                let session = s.session;
                p.ae_out = None;
                p.ae_retry_at = now + self.config.resend_timeout;
                let peer = p.region.clone();
                self.push_event(Event::AntiEntropyAbandoned {
                    peer,
                    session,
                    reason: "no answer".into(),
                });
            }
        }
    }

    /// When the anti-entropy of peer `i` next needs a wake-up.
    pub(super) fn ae_poll_timeout(&self, i: usize) -> Option<Instant> {
        let p = &self.peers[i];
        if !p.is_connected() {
            return None;
        }
        match &p.ae_out {
            None if !p.behind.is_empty() => Some(p.ae_retry_at),
            None => None,
            Some(s) => {
                let mut t = s.last_heard + self.ae_stall();
                let shipping = matches!(s.phase, Phase::Shipping { .. })
                    && s.next_chunk - s.chunks_acked < AE_CHUNKS_INFLIGHT_MAX;
                match &s.pending {
                    // Waiting for the sync, whose completion wakes the driver.
                    Some((_, needs)) if self.durable_of(self.node.config().node_id) < *needs => {}
                    // Sendable now (any past instant).
                    Some(_) if shipping => t = s.started,
                    None if shipping => t = t.min(self.ae_tokens_at()),
                    _ => {}
                }
                Some(t)
            }
        }
    }

    /// When the rate limiter allows a chunk (maybe in the past).
    fn ae_tokens_at(&self) -> Instant {
        let rate = self.config.anti_entropy_bytes_per_sec.max(1);
        let deficit = (1 - self.ae_budget).max(0).unsigned_abs();
        self.ae_refilled_at + Duration::from_micros(deficit.saturating_mul(1_000_000) / rate)
    }

    /// Bytes the rate limiter allows now (negative: in debt), with a burst of one chunk.
    fn ae_tokens(&self, now: Instant) -> i64 {
        let rate = self.config.anti_entropy_bytes_per_sec;
        let elapsed = now.saturating_duration_since(self.ae_refilled_at);
        let refill = (elapsed.as_micros() as u64).saturating_mul(rate) / 1_000_000;
        (self.ae_budget + i64::try_from(refill).unwrap_or(i64::MAX)).min(AE_CHUNK_BYTES_MAX as i64)
    }

    fn ae_spend(&mut self, now: Instant, bytes: usize) {
        self.ae_budget = self.ae_tokens(now) - bytes as i64;
        self.ae_refilled_at = now;
    }

    /// The next anti-entropy message for peer `i`, if one is due.
    pub(super) fn ae_transmit(&mut self, i: usize, now: Instant) -> Option<Message> {
        let hlc = self.node.hlc().now();
        let p = &mut self.peers[i];
        if let Some(inc) = &mut p.ae_in {
            if inc.ack_owed {
                inc.ack_owed = false;
                return Some(Message::AeAck {
                    hlc,
                    session: inc.session,
                    chunks: inc.chunks_applied,
                });
            }
        }
        if let Some(reply) = p.ae_reply.take() {
            p.ae.compare_bytes_sent += super::wire::encode_frame(&reply).len() as u64;
            return Some(reply);
        }
        self.ae_maybe_start(i, now);
        let s = self.peers[i].ae_out.as_mut()?;
        match s.owed.take() {
            Some(Owed::Digests { level, nodes }) => {
                let msg = Message::AeDigests {
                    hlc,
                    session: s.session,
                    level,
                    nodes,
                };
                self.peers[i].ae.compare_bytes_sent += super::wire::encode_frame(&msg).len() as u64;
                return Some(msg);
            }
            Some(Owed::Done) => {
                let msg = Message::AeDone {
                    hlc,
                    session: s.session,
                    chunks: s.next_chunk,
                    progress: s.progress.clone(),
                };
                // The peer may be there already (nothing differed, or it caught up by
                // itself).
                self.ae_check_done(i, now);
                return Some(msg);
            }
            None => {}
        }
        if !matches!(s.phase, Phase::Shipping { .. })
            || s.next_chunk - s.chunks_acked >= AE_CHUNKS_INFLIGHT_MAX
        {
            return None;
        }
        if s.pending.is_none() {
            if self.ae_tokens(now) <= 0 {
                return None;
            }
            self.ae_read_chunk(i)?;
        }
        let me = self.node.config().node_id;
        let durable_me = self.durable_of(me);
        let s = self.peers[i].ae_out.as_mut()?;
        let (_, needs) = s.pending.as_ref()?;
        if durable_me < *needs {
            // Our own writes in it are not durable yet: sync first.
            self.sync_due.get_or_insert(now);
            return None;
        }
        let (carts, _) = s.pending.take()?;
        let bytes: usize = carts.iter().map(|(k, v)| k.len() + v.len()).sum();
        let chunk = s.next_chunk;
        s.next_chunk += 1;
        s.carts_sent += carts.len() as u64;
        s.bytes_sent += bytes as u64;
        let session = s.session;
        if let Phase::Shipping {
            scan_done: true, ..
        } = s.phase
        {
            s.owed = Some(Owed::Done);
            s.phase = Phase::Finishing;
        }
        let p = &mut self.peers[i];
        p.ae.carts_sent += carts.len() as u64;
        p.ae.bytes_sent += bytes as u64;
        self.ae_spend(now, bytes);
        Some(Message::AeCarts {
            hlc,
            session,
            chunk,
            carts,
        })
    }

    /// Scans on from the session's cursor for the next chunk of carts in differing leaves
    /// (at most [`AE_SCAN_KEYS_MAX`] examined). `None` if the scan budget ran out first.
    fn ae_read_chunk(&mut self, i: usize) -> Option<()> {
        let last_seq = self.node.last_seq();
        let s = self.peers[i].ae_out.as_mut()?;
        let Phase::Shipping {
            leaves,
            cursor,
            scanned,
            scan_done,
        } = &mut s.phase
        else {
            return None;
        };
        let mut carts = Vec::new();
        let mut bytes = 0usize;
        let mut examined = 0usize;
        let mut next: Option<Vec<u8>> = None;
        let mut ended = true;
        let result = self.node.storage().scan(Cf::Carts, cursor, &mut |k, v| {
            if examined >= AE_SCAN_KEYS_MAX
                || bytes >= AE_CHUNK_BYTES_MAX
                || carts.len() >= AE_CHUNK_CARTS_MAX
            {
                next = Some(k.to_vec());
                ended = false;
                return false;
            }
            examined += 1;
            if let Ok(id) = std::str::from_utf8(k) {
                if leaves[digest::leaf_of(id) as usize] {
                    bytes += k.len() + v.len();
                    carts.push((id.to_owned(), v.to_vec()));
                }
            }
            true
        });
        if let Err(e) = result {
            self.push_event(Event::Storage(e.to_string()));
            return None;
        }
        *scanned += examined as u64;
        match next {
            Some(k) => *cursor = k,
            None => *scan_done = ended,
        }
        if carts.is_empty() {
            if *scan_done {
                s.owed = Some(Owed::Done);
                s.phase = Phase::Finishing;
            }
            return None;
        }
        s.pending = Some((carts, last_seq));
        Some(())
    }

    /// Takes in one anti-entropy message from peer `i`.
    pub(super) fn ae_handle(
        &mut self,
        i: usize,
        now: Instant,
        local_ms: u64,
        msg: Message,
    ) -> Result<(), super::ProtocolError> {
        match msg {
            Message::AeDigests {
                session,
                level,
                nodes,
                ..
            } => {
                let stall = self.ae_stall();
                let busy = self.peers.iter().enumerate().any(|(j, q)| {
                    j != i
                        && q.ae_in.as_ref().is_some_and(|s| {
                            s.last_heard
                                .is_some_and(|t| now.saturating_duration_since(t) < stall)
                        })
                });
                let hlc = self.node.hlc().now();
                let p = &mut self.peers[i];
                let known = p.ae_in.as_ref().is_some_and(|s| s.session == session);
                if !known && busy {
                    // One repairer at a time: the same carts would come twice.
                    p.ae_reply = Some(Message::AeBusy { hlc, session });
                    return Ok(());
                }
                if level == 0 || !known {
                    p.ae_in = Some(Incoming {
                        session,
                        ..Incoming::default()
                    });
                }
                if let Some(s) = p.ae_in.as_mut() {
                    s.last_heard = Some(now);
                }
                let tree = self.node.digests();
                // Differing ranges where this node holds nothing need no descent: the
                // repairer ships all it has there.
                let (mut differ, mut empty) = (Vec::new(), Vec::new());
                for (idx, d) in &nodes {
                    match tree.get(level, *idx) {
                        Some(mine) if mine == *d => {}
                        Some(0) => empty.push(*idx),
                        _ => differ.push(*idx),
                    }
                }
                let p = &mut self.peers[i];
                p.ae.ranges_compared += nodes.len() as u64;
                p.ae.ranges_repaired += leaves_under(level, &empty)
                    + if level == LEVELS - 1 {
                        differ.len() as u64
                    } else {
                        0
                    };
                p.ae_reply = Some(Message::AeDiffer {
                    hlc: self.node.hlc().now(),
                    session,
                    level,
                    nodes: differ,
                    empty,
                });
                Ok(())
            }
            Message::AeDiffer {
                session,
                level,
                nodes,
                empty,
                ..
            } => {
                let tree: &DigestTree = self.node.digests();
                let Some(s) = self.peers[i].ae_out.as_mut() else {
                    return Ok(());
                };
                if s.session != session {
                    return Ok(());
                }
                let Phase::Comparing {
                    level: expected,
                    leaves,
                } = &mut s.phase
                else {
                    return Ok(());
                };
                if *expected != level || s.owed.is_some() {
                    // A duplicate of an answer already acted on.
                    return Ok(());
                }
                s.last_heard = now;
                // Ranges the peer holds nothing of: every leaf under them.
                for n in &empty {
                    let span = leaf_span(level);
                    let first = (*n as usize) * span;
                    leaves[first..first + span].fill(true);
                }
                let mut compared = 0u64;
                if level + 1 < LEVELS {
                    // Descend into the rest; children we hold nothing of are not sent (the
                    // peer's carts there are its own to ship).
                    let children: Vec<(u32, u64)> = nodes
                        .iter()
                        .flat_map(|n| DigestTree::children(*n))
                        .map(|c| (c, tree.get(level + 1, c).unwrap_or(0)))
                        .filter(|(_, d)| *d != 0)
                        .collect();
                    compared = children.len() as u64;
                    if !children.is_empty() {
                        *expected = level + 1;
                        s.owed = Some(Owed::Digests {
                            level: level + 1,
                            nodes: children,
                        });
                    }
                } else {
                    for n in &nodes {
                        leaves[*n as usize] = true;
                    }
                }
                if s.owed.is_none() {
                    // The comparison is over.
                    let leaves = std::mem::take(leaves);
                    let differing = leaves.iter().filter(|l| **l).count() as u64;
                    s.ranges_differing = differing;
                    if differing == 0 {
                        s.owed = Some(Owed::Done);
                        s.phase = Phase::Finishing;
                    } else {
                        s.phase = Phase::Shipping {
                            leaves,
                            cursor: Vec::new(),
                            scanned: 0,
                            scan_done: false,
                        };
                    }
                }
                let repaired = if matches!(s.phase, Phase::Comparing { .. }) {
                    0
                } else {
                    s.ranges_differing
                };
                let p = &mut self.peers[i];
                p.ae.ranges_compared += compared;
                p.ae.ranges_repaired += repaired;
                Ok(())
            }
            Message::AeCarts {
                session,
                chunk,
                carts,
                ..
            } => {
                // Decode and validate every cart first: a chunk with one bad cart is
                // refused whole.
                let mut states = Vec::with_capacity(carts.len());
                let mut bytes = 0usize;
                for (id, encoded) in &carts {
                    let bad = |reason: String| super::ProtocolError::BadState {
                        cart: id.chars().take(64).collect(),
                        reason,
                    };
                    let cart = CartId::parse(id).map_err(|e| bad(e.to_string()))?;
                    let state = codec::decode_cart(encoded).map_err(|e| bad(e.to_string()))?;
                    bytes += id.len() + encoded.len();
                    states.push(RemoteState { cart, state });
                }
                let max_offset_ms = self.node.config().max_clock_offset.as_millis() as u64;
                let queued: usize = self.ae_inbox.iter().map(|q| q.bytes).sum();
                let p = &mut self.peers[i];
                let Some(inc) = p.ae_in.as_mut().filter(|s| s.session == session) else {
                    return Ok(());
                };
                inc.last_heard = Some(now);
                if chunk != inc.next_chunk || queued + bytes > AE_INBOX_BYTES_MAX {
                    // A chunk was lost (or we are flooded): this session cannot vouch for
                    // the peer's progress any more; the repairer starts another.
                    inc.broken = true;
                }
                inc.next_chunk = chunk.saturating_add(1);
                if queued + bytes > AE_INBOX_BYTES_MAX {
                    return Ok(());
                }
                p.ae.carts_received += states.len() as u64;
                p.ae.bytes_received += bytes as u64;
                // States stamped too far ahead wait, like deltas: not merged, and the
                // session does not vouch for the peer's progress.
                let mut held = None;
                states.retain(|st| match crate::node::max_timestamp(&st.state) {
                    Some(ts) if ts.physical_ms().saturating_sub(local_ms) > max_offset_ms => {
                        held = Some(ts.physical_ms() - local_ms);
                        false
                    }
                    _ => true,
                });
                if let Some(ahead_ms) = held {
                    inc.broken = true;
                    let peer = p.region.clone();
                    let origin = p.node_id.unwrap_or(ReplicaId(0));
                    self.push_event(Event::HeldBack {
                        peer,
                        origin,
                        ahead_ms,
                    });
                }
                self.ae_inbox.push(Queued {
                    peer: i,
                    session,
                    states,
                    bytes,
                    raise: None,
                });
                Ok(())
            }
            Message::AeDone {
                session,
                chunks,
                progress,
                ..
            } => {
                let p = &mut self.peers[i];
                let Some(inc) = p.ae_in.as_mut().filter(|s| s.session == session) else {
                    return Ok(());
                };
                inc.last_heard = Some(now);
                if chunks != inc.next_chunk {
                    inc.broken = true;
                }
                if !inc.broken {
                    self.ae_inbox.push(Queued {
                        peer: i,
                        session,
                        states: Vec::new(),
                        bytes: 0,
                        raise: Some(progress),
                    });
                }
                Ok(())
            }
            Message::AeBusy { session, .. } => {
                let p = &mut self.peers[i];
                if p.ae_out.as_ref().is_some_and(|s| s.session == session) {
                    p.ae_out = None;
                    // Another peer is repairing it; its Acks will likely show it caught up
                    // before this retry.
                    p.ae_retry_at = now + self.config.resend_timeout * 5;
                }
                Ok(())
            }
            Message::AeAck {
                session, chunks, ..
            } => {
                if let Some(s) = self.peers[i].ae_out.as_mut() {
                    if s.session == session {
                        s.last_heard = now;
                        s.chunks_acked = s.chunks_acked.max(chunks.min(s.next_chunk));
                    }
                }
                Ok(())
            }
            Message::Hello { .. } | Message::Deltas { .. } | Message::Ack { .. } => Ok(()),
        }
    }

    /// Commits the next received chunk of cart states (or progress raise): one per call,
    /// so that local writes never wait behind more than one chunk.
    pub(super) fn ae_commit(&mut self) {
        if self.ae_inbox.is_empty() {
            return;
        }
        let queued = vec![self.ae_inbox.remove(0)];
        let durability = self.config.durability;
        for q in queued {
            let live = self.peers[q.peer]
                .ae_in
                .as_ref()
                .is_some_and(|s| s.session == q.session);
            match q.raise {
                None => {
                    let result = self.node.commit_states(q.states, &[], durability);
                    let refused = match &result {
                        Ok(outcomes) => outcomes.contains(&StateOutcome::Refused),
                        Err(_) => true,
                    };
                    if let Err(e) = result {
                        self.push_event(Event::Storage(e.to_string()));
                    }
                    if let Some(inc) = self.peers[q.peer].ae_in.as_mut().filter(|_| live) {
                        inc.broken |= refused;
                        inc.chunks_applied += 1;
                        inc.ack_owed = true;
                    }
                }
                Some(progress) => {
                    let ok = self.peers[q.peer]
                        .ae_in
                        .as_ref()
                        .is_some_and(|s| s.session == q.session && !s.broken);
                    if !ok {
                        continue;
                    }
                    match self.node.commit_states(Vec::new(), &progress, durability) {
                        Ok(_) => {
                            self.peers[q.peer].ack_owed = true;
                            let peer = self.peers[q.peer].region.clone();
                            self.push_event(Event::AntiEntropyApplied {
                                peer,
                                session: q.session,
                            });
                            self.peers[q.peer].ae_in = None;
                        }
                        Err(e) => self.push_event(Event::Storage(e.to_string())),
                    }
                }
            }
        }
    }

    /// After an Ack from peer `i`: a finishing session whose progress the peer has reached
    /// is complete; the delta stream resumes.
    pub(super) fn ae_check_done(&mut self, i: usize, now: Instant) {
        let p = &self.peers[i];
        let Some(s) = &p.ae_out else {
            return;
        };
        if !matches!(s.phase, Phase::Finishing) || s.owed.is_some() {
            return;
        }
        let reached = s
            .progress
            .iter()
            .filter(|(o, _)| Some(*o) != p.node_id)
            .all(|(o, seq)| p.acked(*o) >= *seq);
        if !reached {
            return;
        }
        let s = self.peers[i].ae_out.take().expect("checked above");
        let p = &mut self.peers[i];
        p.ae.sessions_completed += 1;
        p.behind.clear();
        p.rewind(now);
        let peer = p.region.clone();
        self.push_event(Event::AntiEntropyCompleted {
            peer,
            session: s.session,
            ranges: s.ranges_differing,
            carts: s.carts_sent,
            bytes: s.bytes_sent,
            ms: now.saturating_duration_since(s.started).as_millis() as u64,
        });
        self.mark_sendable(i, now);
    }

    /// Peer `i`'s anti-entropy status.
    pub(super) fn ae_status(&self, i: usize) -> AntiEntropyStatus {
        let p = &self.peers[i];
        let mut st = p.ae.clone();
        st.carts_total = self.node.carts_stored();
        st.state = match (&p.ae_out, &p.ae_in) {
            (Some(s), _) => match &s.phase {
                Phase::Comparing { .. } => "comparing",
                Phase::Shipping { scanned, .. } => {
                    st.carts_scanned = *scanned;
                    "shipping"
                }
                Phase::Finishing => "finishing",
            },
            (None, Some(_)) => "receiving",
            (None, None) => "idle",
        }
        .to_owned();
        st
    }
}
