//! [`Node`]: the sans-IO write path of one region — apply validated requests to the cart,
//! encode, and one atomic [`Batch`] per group of writes.
//!
//! The node owns no thread, socket or runtime. Physical time comes from its
//! [`PhysicalClock`]; storage is any [`Storage`]. The HTTP server is a thin driver: it parses
//! requests into [`WriteRequest`]s (whose fields are [validated types](crate::validate)),
//! hands them to [`Node::apply_batch`] from one writer thread, renders the typed [`Answer`]s,
//! and reads carts with [`read_cart`].

use crate::cart::{Cart, Lattice};
use crate::codec::{self, CodecError, DeltaRecord, IdempotencyRecord};
use crate::digest::{self, DigestTree};
use crate::storage::{self, Batch, Cf, Durability, Storage, StorageError};
use crate::token::CausalToken;
use crate::validate::{CartId, IdempotencyKey, Increment, InputError, Quantity, Sku, QUANTITY_MAX};
use meridian_clocks::{ClockError, Hlc, HlcTimestamp, PhysicalClock, ReplicaId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Default for [`NodeConfig::cart_lines_max`].
pub const CART_LINES_MAX_DEFAULT: usize = 1000;
/// Default for [`NodeConfig::cart_bytes_max`]: 256 KiB.
pub const CART_BYTES_MAX_DEFAULT: usize = 256 * 1024;
/// Default for [`NodeConfig::idempotency_ttl`]: 24 hours.
pub const IDEMPOTENCY_TTL_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// The node's settings (the write-path part of the binary's config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's replica id: it names every dot and log entry this node creates, so it is
    /// never reused.
    pub node_id: ReplicaId,
    /// Most lines in one cart; an add or set of a new line past it is refused.
    pub cart_lines_max: usize,
    /// Largest encoded cart state in bytes; a write that would pass it is refused.
    pub cart_bytes_max: usize,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// The HLC's max offset, also the restart bound check.
    pub max_clock_offset: Duration,
    /// Start even if the persisted HLC bound is further ahead than the max offset.
    pub clock_bound_override: bool,
    /// A local add is queued for compaction once it leaves at least this many of this
    /// node's adds on its line ([`COMPACTION_LINE_ADDS_MIN_DEFAULT`]): so a line holds fewer
    /// than this many of a region's adds before they are coalesced, and a cart with a few
    /// adds per line costs no compaction writes.
    pub compaction_line_adds_min: usize,
}

/// Default [`NodeConfig::compaction_line_adds_min`]. With 2, every cart with two adds of a
/// line from one region costs a compaction write (12% of the writes under `bench-node`'s
/// load of 100,000 carts, and about as much throughput); with 8, a line still holds at
/// most 8 entries per region, O(regions), and that load makes almost none.
pub const COMPACTION_LINE_ADDS_MIN_DEFAULT: usize = 8;

impl NodeConfig {
    /// The defaults for `node_id`: the `*_DEFAULT` constants of this module and
    /// [`meridian_clocks::DEFAULT_MAX_OFFSET`].
    pub fn new(node_id: ReplicaId) -> Self {
        NodeConfig {
            node_id,
            cart_lines_max: CART_LINES_MAX_DEFAULT,
            cart_bytes_max: CART_BYTES_MAX_DEFAULT,
            idempotency_ttl: IDEMPOTENCY_TTL_DEFAULT,
            max_clock_offset: meridian_clocks::DEFAULT_MAX_OFFSET,
            clock_bound_override: false,
            compaction_line_adds_min: COMPACTION_LINE_ADDS_MIN_DEFAULT,
        }
    }
}

/// A mutation of one cart. Its fields are validated types, so it cannot hold a bad value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Add `quantity` to line `sku` (creating it).
    #[allow(missing_docs)]
    Add { sku: Sku, quantity: Increment },
    /// Set line `sku` to `quantity`; 0 removes the line.
    #[allow(missing_docs)]
    Set { sku: Sku, quantity: Quantity },
    /// Remove line `sku`.
    #[allow(missing_docs)]
    Remove { sku: Sku },
    /// Remove every line.
    Clear,
    /// Order exactly the observed lines and remove them.
    Checkout,
    /// Coalesce this node's own adds up to `stable` ([`Cart::compact`]): issued by the
    /// replication layer once they are causally stable, never by a client. It changes no
    /// line's quantity; its delta replicates like any write's. A frontier that is not
    /// causally stable loses or resurrects adds (see [`Cart::compact`]).
    #[allow(missing_docs)]
    Compact {
        stable: meridian_clocks::VectorClock,
    },
}

/// An `Idempotency-Key` and the fingerprint of the request that carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key, remembered for `idempotency_ttl`.
    pub key: IdempotencyKey,
    /// A hash of method, path and body ([`codec::fnv1a64`]): a retry must match it.
    pub fingerprint: u64,
}

/// One write to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRequest {
    /// The cart to change.
    pub cart: CartId,
    /// What to do.
    pub op: Op,
    /// The request's idempotency key, if it carried one.
    pub idempotency: Option<Idempotency>,
    /// The HTTP request id, carried by the write's delta to every region (only ids that
    /// pass [`codec::is_request_id`] are kept).
    pub request_id: Option<String>,
}

impl WriteRequest {
    /// A request without an idempotency key.
    pub fn new(cart: CartId, op: Op) -> Self {
        WriteRequest {
            cart,
            op,
            idempotency: None,
            request_id: None,
        }
    }

    /// The same request with its HTTP request id (ignored unless
    /// [`codec::is_request_id`]).
    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = codec::is_request_id(id).then(|| id.to_owned());
        self
    }

    /// `add(sku, quantity)` on `cart`, parsing each argument.
    pub fn add(cart: &str, sku: &str, quantity: u64) -> Result<Self, InputError> {
        let op = Op::Add {
            sku: Sku::parse(sku)?,
            quantity: Increment::new(quantity)?,
        };
        Ok(Self::new(CartId::parse(cart)?, op))
    }

    /// `set(sku, quantity)` on `cart`, parsing each argument.
    pub fn set(cart: &str, sku: &str, quantity: u64) -> Result<Self, InputError> {
        let op = Op::Set {
            sku: Sku::parse(sku)?,
            quantity: Quantity::new(quantity)?,
        };
        Ok(Self::new(CartId::parse(cart)?, op))
    }

    /// `remove(sku)` on `cart`, parsing each argument.
    pub fn remove(cart: &str, sku: &str) -> Result<Self, InputError> {
        let op = Op::Remove {
            sku: Sku::parse(sku)?,
        };
        Ok(Self::new(CartId::parse(cart)?, op))
    }

    /// `clear()` or `checkout()` (any [`Op`] without arguments) on `cart`.
    pub fn on(cart: &str, op: Op) -> Result<Self, InputError> {
        Ok(Self::new(CartId::parse(cart)?, op))
    }

    /// The same request carrying an idempotency key.
    pub fn with_idempotency(mut self, key: IdempotencyKey, fingerprint: u64) -> Self {
        self.idempotency = Some(Idempotency { key, fingerprint });
        self
    }
}

/// A line of a cart, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LineView {
    /// The line's sku.
    pub sku: String,
    /// Its quantity, at least 1 (a line at 0 is absent).
    pub quantity: u32,
}

/// `GET /carts/{cart}` and the answer to every cart mutation but checkout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CartView {
    /// The cart id.
    pub cart: String,
    /// Lines sorted by sku.
    pub lines: Vec<LineView>,
    /// The causal token of this answer (also in the `Causal-Token` header).
    pub token: String,
}

/// The answer to a checkout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderView {
    /// The order id, `order-<node>-<seq>`: unique across regions.
    pub order: String,
    /// The cart id.
    pub cart: String,
    /// Exactly the lines that were ordered.
    pub lines: Vec<LineView>,
    /// The causal token of this answer.
    pub token: String,
}

/// The answer to a write: the cart after it, or the order a checkout placed. It serializes
/// as the bare view (the API's JSON body), and that JSON is what an idempotency record
/// keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    /// A checkout's order (tried first when decoding: only it has an `order` field).
    Order(OrderView),
    /// The cart after any other write.
    Cart(CartView),
}

impl Answer {
    /// The causal token of this answer.
    pub fn token(&self) -> &str {
        match self {
            Answer::Order(o) => &o.token,
            Answer::Cart(c) => &c.token,
        }
    }
}

/// A write's answer, and whether it is the stored answer to an earlier request with the
/// same idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// What the client is told.
    pub answer: Answer,
    /// `true` when this replays the first answer to the same `Idempotency-Key`.
    pub replayed: bool,
}

/// Why one write (or read) was refused. The message says what to change; the fields are
/// what the message names.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum NodeError {
    /// A cart id, sku or quantity was refused.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The cart has `cart_lines_max` lines already.
    #[error("cart {cart:?} already has {max} lines, the maximum; remove a line first")]
    CartFull { cart: CartId, max: usize },
    /// An add would take the line past [`QUANTITY_MAX`].
    #[error(
        "line {sku:?} of cart {cart:?} holds {current}; adding {adding} would pass the maximum \
         {max} (set the quantity instead)"
    )]
    LineFull {
        cart: CartId,
        sku: Sku,
        current: u32,
        adding: u32,
        max: u32,
    },
    /// The cart's encoded state would exceed `cart_bytes_max`.
    #[error(
        "cart {cart:?} would take {bytes} bytes, more than the maximum {max}: each add is \
         kept separately until every region has applied it and it is compacted, so adds pile \
         up while a region is unreachable; set the line's quantity to compact it now"
    )]
    CartTooLarge {
        cart: CartId,
        bytes: usize,
        max: usize,
    },
    /// Checkout of a cart with no lines.
    #[error("cart {0:?} is empty; there is nothing to check out")]
    EmptyCart(CartId),
    /// An idempotency key was reused for a different request.
    #[error(
        "Idempotency-Key {0:?} was already used for a different request; use a new key for a \
         new request"
    )]
    IdempotencyMismatch(String),
    /// A stored cart could not be decoded: corruption, confined to this cart.
    #[error("stored data for cart {cart:?} is corrupt: {source}")]
    Corrupt { cart: String, source: CodecError },
    /// A delta log entry could not be decoded.
    #[error("the delta log entry with key {key:02x?} is corrupt: {source}")]
    CorruptLog { key: Vec<u8>, source: CodecError },
    /// This node id has used every dot it may in this cart (`meridian_crdt::DOT_COUNTER_MAX`,
    /// 2^53 − 1 writes): it cannot write the cart without reusing a dot, which would lose
    /// writes. Retire the node id and start a node with a new one.
    #[error("{0}; this node id must be retired (start a node with a new node_id)")]
    DotsExhausted(#[from] meridian_crdt::Error),
    /// The storage engine failed (see [`StorageError::is_transient`]).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a node could not start on a data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The data was written by an incompatible version.
    #[error(
        "data format version {found}, but this build reads version {}",
        codec::FORMAT_VERSION
    )]
    FormatVersion {
        /// The version found.
        found: String,
    },
    /// The data directory belongs to another node.
    #[error(
        "the data directory belongs to node_id {found}, but the config says node_id {configured}; \
         refusing to start (node ids are never reused: point data_dir at this node's own \
         directory, or use a new empty one)"
    )]
    WrongNode {
        /// The node id stored in the directory.
        found: u64,
        /// The node id configured.
        configured: u64,
    },
    /// The persisted HLC bound is too far ahead of the clock.
    #[error("{0} (config key: clock_bound_override = true)")]
    Clock(#[from] ClockError),
    /// A metadata value is corrupt.
    #[error("metadata is corrupt: {0}")]
    Corrupt(CodecError),
}

/// Reads a cart straight from storage (readers need not wait for the writer).
pub fn read_cart(storage: &dyn Storage, cart: &CartId) -> Result<Cart, NodeError> {
    match storage.get(Cf::Carts, cart.as_str().as_bytes())? {
        None => Ok(Cart::default()),
        Some(bytes) => codec::decode_cart(&bytes).map_err(|source| NodeError::Corrupt {
            cart: cart.to_string(),
            source,
        }),
    }
}

/// Most delta log entries [`read_log`] returns at once.
pub const LOG_READ_MAX: usize = 4096;

/// Reads up to `limit` (at most [`LOG_READ_MAX`]) of `origin`'s delta log entries with
/// seq `>= from`, in order, validating each.
pub fn read_log(
    storage: &dyn Storage,
    origin: ReplicaId,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, DeltaRecord)>, NodeError> {
    read_log_raw(storage, origin, from, limit, usize::MAX)?
        .into_iter()
        .map(|(seq, bytes)| {
            codec::decode_delta_checked(&bytes)
                .map(|d| (seq, d))
                .map_err(|source| NodeError::CorruptLog {
                    key: codec::log_key(origin, seq).to_vec(),
                    source,
                })
        })
        .collect()
}

/// Reads `origin`'s log entries with seq `>= from` as stored (encoded), in order: at most
/// `limit` (and [`LOG_READ_MAX`]) entries, and no more than `bytes_max` bytes of values
/// except that the first entry is always returned. This is what replication ships.
pub fn read_log_raw(
    storage: &dyn Storage,
    origin: ReplicaId,
    from: u64,
    limit: usize,
    bytes_max: usize,
) -> Result<Vec<(u64, Vec<u8>)>, NodeError> {
    let limit = limit.min(LOG_READ_MAX);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut bad: Option<NodeError> = None;
    if limit == 0 {
        return Ok(out);
    }
    storage.scan(Cf::Log, &codec::log_key(origin, from), &mut |k, v| {
        let seq = match codec::decode_log_key(k) {
            Ok((o, _)) if o != origin => return false,
            Ok((_, seq)) => seq,
            Err(source) => {
                bad = Some(NodeError::CorruptLog {
                    key: k.to_vec(),
                    source,
                });
                return false;
            }
        };
        if !out.is_empty() && bytes.saturating_add(v.len()) > bytes_max {
            return false;
        }
        bytes += v.len();
        out.push((seq, v.to_vec()));
        out.len() < limit
    })?;
    match bad {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The token of `own` at `seq` plus the remote progress.
fn token_of(own: ReplicaId, seq: u64, remote: &BTreeMap<ReplicaId, u64>) -> CausalToken {
    let mut entries: BTreeMap<ReplicaId, u64> = remote.clone();
    entries.insert(own, seq);
    CausalToken::from_entries(entries.into_iter().collect())
}

/// The persisted remote progress (`progress/<origin>` meta keys).
fn load_progress(storage: &dyn Storage) -> Result<BTreeMap<ReplicaId, u64>, OpenError> {
    let mut out = BTreeMap::new();
    let mut bad = None;
    storage.scan(Cf::Meta, codec::META_PROGRESS_PREFIX, &mut |k, v| {
        let Some(origin) = k.strip_prefix(codec::META_PROGRESS_PREFIX) else {
            return false;
        };
        match codec::decode_u64("progress origin", origin)
            .and_then(|o| Ok((o, codec::decode_u64("progress", v)?)))
        {
            Ok((o, s)) => {
                out.insert(ReplicaId(o), s);
                true
            }
            Err(e) => {
                bad = Some(e);
                false
            }
        }
    })?;
    match bad {
        Some(e) => Err(OpenError::Corrupt(e)),
        None => Ok(out),
    }
}

/// Layout 1 keyed the log by seq alone (every entry was this node's): rekey it as
/// `(node_id, seq)`, in one synced batch.
fn migrate_layout_1(storage: &dyn Storage, node_id: ReplicaId) -> Result<(), OpenError> {
    let mut b = Batch::new();
    let mut bad = None;
    storage.scan(
        Cf::Log,
        &[],
        &mut |k, v| match codec::decode_u64("layout 1 log key", k) {
            Ok(seq) => {
                b.delete(Cf::Log, k.to_vec());
                b.put(Cf::Log, codec::log_key(node_id, seq).to_vec(), v.to_vec());
                true
            }
            Err(e) => {
                bad = Some(e);
                false
            }
        },
    )?;
    if let Some(e) = bad {
        return Err(OpenError::Corrupt(e));
    }
    b.put(Cf::Meta, codec::META_FORMAT, vec![codec::LAYOUT_VERSION]);
    storage.write(&b, Durability::Fsync)?;
    Ok(())
}

/// The API view of a cart.
pub fn cart_view(cart_id: &CartId, cart: &Cart, token: &CausalToken) -> CartView {
    CartView {
        cart: cart_id.to_string(),
        lines: lines_view(cart),
        token: token.to_string(),
    }
}

fn lines_view(cart: &Cart) -> Vec<LineView> {
    cart.lines()
        .into_iter()
        .map(|(sku, quantity)| LineView { sku, quantity })
        .collect()
}

/// One region's write path. See the [module docs](self).
#[derive(Debug)]
pub struct Node<S: Storage, C: PhysicalClock> {
    storage: S,
    hlc: Hlc<C>,
    config: NodeConfig,
    last_seq: u64,
    /// Per remote origin, the highest seq applied (contiguously) and committed.
    remote: BTreeMap<ReplicaId, u64>,
    /// Per origin (this node's own included), the progress that is durable: synced, or
    /// committed with `Durability::Fsync`.
    durable: BTreeMap<ReplicaId, u64>,
    carts_stored: u64,
    log_len: u64,
    sweep_cursor: Vec<u8>,
    /// The Merkle tree of every stored cart, kept in step with each committed batch.
    digests: DigestTree,
    /// Other origins' compaction deltas applied here that a peer may still lack, by cart:
    /// a remove, set, clear or checkout of the cart carries them (see `Node::carried`).
    carried: HashMap<CartId, Vec<(ReplicaId, u64, Cart)>>,
    carried_len: usize,
    /// Bytes of keys and values in every committed batch since open.
    bytes_written: u64,
}

/// A delta of another origin to apply, decoded and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The node that made the write.
    pub origin: ReplicaId,
    /// The origin's seq for it.
    pub seq: u64,
    /// The decoded record (its delta already passed `meridian_crdt::wire::accept`).
    pub record: DeltaRecord,
    /// The record as the origin encoded it: stored as is in this node's log, for
    /// forwarding.
    pub bytes: Vec<u8>,
}

/// What became of one [`RemoteEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteOutcome {
    /// Merged and committed.
    Applied,
    /// Already applied: nothing to do.
    Duplicate,
    /// An earlier entry of the origin is missing: dropped, to be resent.
    Gap,
    /// Refused: the merged cart would not fit the decode limit, or the cart id is bad. The
    /// origin's progress stops before it; nothing is lost (the sender keeps it).
    Refused,
}

/// A whole cart state from a peer (anti-entropy), decoded and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteState {
    /// The cart.
    pub cart: CartId,
    /// Its state at the peer (it passed `meridian_crdt::wire::accept`).
    pub state: Cart,
}

/// What became of one [`RemoteState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateOutcome {
    /// Merged: the stored cart changed.
    Merged,
    /// The stored cart already held everything in it.
    Unchanged,
    /// Refused: the merged cart would not fit the decode limit.
    Refused,
}

/// The highest `set` timestamp in `cart`, if it has a set.
pub fn max_timestamp(cart: &Cart) -> Option<HlcTimestamp> {
    cart.lines()
        .iter()
        .flat_map(|(sku, _)| cart.entries(sku))
        .filter_map(|(_, e)| match e {
            meridian_crdt::cart::Entry::Set { ts, .. } => Some(*ts),
            meridian_crdt::cart::Entry::Add(_) => None,
        })
        .max()
}

/// Scans every stored cart: their digest tree, and how many there are.
fn build_digests(storage: &dyn Storage) -> Result<(DigestTree, u64), StorageError> {
    let mut tree = DigestTree::new();
    let mut n = 0u64;
    storage.scan(Cf::Carts, &[], &mut |k, v| {
        n += 1;
        if let Ok(id) = std::str::from_utf8(k) {
            tree.insert(id, digest::cart_digest(id, v));
        }
        true
    })?;
    Ok((tree, n))
}

/// Most compaction deltas of other origins kept to be carried by drops (see
/// `Node::carried`); kept only until every peer has applied them.
pub const CARRIED_COMPACTIONS_MAX: usize = 4096;

/// The outcome of one [`Node::commit`].
#[derive(Debug)]
pub struct Committed {
    /// One result per local request, in order.
    pub local: Vec<Result<Applied, NodeError>>,
    /// One outcome per remote entry, in order (all `Err` if the commit failed).
    pub remote: Vec<Result<RemoteOutcome, NodeError>>,
    /// The local adds of this batch that left their line with at least
    /// [`NodeConfig::compaction_line_adds_min`] of this node's adds, so that compaction may
    /// coalesce them once stable: `(cart, seq, dot counter)`.
    /// Empty if the commit failed.
    pub compactable: Vec<(CartId, u64, u64)>,
    /// The [`Op::Compact`] writes of this batch that changed their cart: `(cart, seq)`.
    /// Empty if the commit failed.
    pub compacted: Vec<(CartId, u64)>,
}

/// The writes of one batch before they are committed.
struct Pending {
    /// Carts changed earlier in this batch, and whether each existed before it.
    carts: HashMap<CartId, PendingCart>,
    /// Idempotency records written earlier in this batch.
    idempotency: HashMap<IdempotencyKey, IdempotencyRecord>,
    /// The stored digest of every cart loaded in this batch, before it (`None`: absent).
    digests_before: HashMap<CartId, Option<u64>>,
    batch: Batch,
    seq: u64,
    /// Remote progress as this batch leaves it.
    remote: BTreeMap<ReplicaId, u64>,
    new_carts: u64,
    log_entries: u64,
    compactable: Vec<(CartId, u64, u64)>,
    compacted: Vec<(CartId, u64)>,
    /// Other origins' compactions applied in this batch (see `Node::carried`).
    carried: Vec<(CartId, ReplicaId, u64, Cart)>,
}

struct PendingCart {
    cart: Cart,
    existed: bool,
}

/// One request's outcome before commit.
struct Staged {
    applied: Applied,
    /// The answer stands or falls with this batch's commit.
    needs_commit: bool,
}

impl<S: Storage, C: PhysicalClock> Node<S, C> {
    /// Opens a node on `storage`: checks the format version and node id, and resumes the
    /// HLC from the persisted upper bound. A fresh store is claimed for this node id.
    pub fn open(storage: S, clock: C, config: NodeConfig) -> Result<Self, OpenError> {
        let format = storage.get(Cf::Meta, codec::META_FORMAT)?;
        let node = storage.get(Cf::Meta, codec::META_NODE_ID)?;
        match (&format, &node) {
            (None, None) => {
                let mut b = Batch::new();
                b.put(Cf::Meta, codec::META_FORMAT, vec![codec::LAYOUT_VERSION]);
                b.put(
                    Cf::Meta,
                    codec::META_NODE_ID,
                    codec::encode_u64(config.node_id.0).to_vec(),
                );
                storage.write(&b, Durability::Fsync)?;
            }
            (Some(f), Some(n)) => {
                let found = codec::decode_u64("node_id", n).map_err(OpenError::Corrupt)?;
                if found != config.node_id.0 {
                    return Err(OpenError::WrongNode {
                        found,
                        configured: config.node_id.0,
                    });
                }
                match f.as_slice() {
                    [v] if *v == codec::LAYOUT_VERSION => {}
                    [1] => migrate_layout_1(&storage, config.node_id)?,
                    _ => {
                        return Err(OpenError::FormatVersion {
                            found: format!("{f:?}"),
                        })
                    }
                }
            }
            _ => {
                return Err(OpenError::FormatVersion {
                    found: "only one of format_version and node_id is present".into(),
                })
            }
        }
        // Whatever survived the last stop is made durable before anything is shipped, so
        // what peers are told is durable really is.
        storage.sync()?;
        let meta_u64 = |key: &[u8], what: &str| -> Result<u64, OpenError> {
            match storage.get(Cf::Meta, key)? {
                None => Ok(0),
                Some(v) => codec::decode_u64(what, &v).map_err(OpenError::Corrupt),
            }
        };
        let bound = HlcTimestamp::from_u64(meta_u64(codec::META_HLC_BOUND, "hlc_bound")?);
        let last_seq = meta_u64(codec::META_SEQ, "seq")?;
        let remote = load_progress(&storage)?;
        let hlc = if config.clock_bound_override {
            Hlc::resume_past_bound_unchecked(clock, config.max_clock_offset, bound)
        } else {
            Hlc::resume(clock, config.max_clock_offset, bound)?
        };
        let (digests, carts_stored) = build_digests(&storage)?;
        let log_len = storage::count(&storage, Cf::Log)?;
        let mut durable = remote.clone();
        durable.insert(config.node_id, last_seq);
        Ok(Node {
            storage,
            hlc,
            config,
            last_seq,
            remote,
            durable,
            carts_stored,
            log_len,
            sweep_cursor: Vec::new(),
            digests,
            carried: HashMap::new(),
            carried_len: 0,
            bytes_written: 0,
        })
    }

    /// The storage the node commits to (readers may read it directly).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The clock that stamps every write (its bound is persisted with each batch).
    pub fn hlc(&self) -> &Hlc<C> {
        &self.hlc
    }

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The last local sequence number committed.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The causal token of the committed state: every origin's committed progress.
    pub fn token(&self) -> CausalToken {
        token_of(self.config.node_id, self.last_seq, &self.remote)
    }

    /// Committed per-origin progress, this node's own included, sorted by origin.
    pub fn progress(&self) -> Vec<(ReplicaId, u64)> {
        let mut p: BTreeMap<ReplicaId, u64> = self.remote.clone();
        p.insert(self.config.node_id, self.last_seq);
        p.into_iter().collect()
    }

    /// The committed progress of remote `origin` (0 if none).
    pub fn remote_progress(&self, origin: ReplicaId) -> u64 {
        self.remote.get(&origin).copied().unwrap_or(0)
    }

    /// Durable per-origin progress, this node's own included: what survives a power
    /// failure, and so all that peers are told or sent.
    pub fn durable_progress(&self) -> &BTreeMap<ReplicaId, u64> {
        &self.durable
    }

    /// Makes every committed write durable ([`Storage::sync`]); durable progress becomes
    /// committed progress.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.storage.sync()?;
        self.mark_durable();
        Ok(())
    }

    /// `true` if some committed progress is not yet durable.
    pub fn has_unsynced(&self) -> bool {
        self.durable.get(&self.config.node_id) != Some(&self.last_seq)
            || self
                .remote
                .iter()
                .any(|(o, s)| self.durable.get(o) != Some(s))
    }

    /// A sync that started when committed progress was `progress` has finished: that much
    /// is durable (more may have been committed since, and is not).
    pub fn mark_durable_through(&mut self, progress: &[(ReplicaId, u64)]) {
        for (o, s) in progress {
            let d = self.durable.entry(*o).or_insert(0);
            *d = (*d).max(*s);
        }
    }

    fn mark_durable(&mut self) {
        self.durable = self.remote.clone();
        self.durable.insert(self.config.node_id, self.last_seq);
    }

    /// The compactions a remove, set, clear or checkout of `cart` carries: those of other
    /// origins this node has applied and not yet heard every peer apply (committed, and
    /// earlier in this batch).
    ///
    /// Why: a compaction coalesces a group of adds under the newest of their dots, so a
    /// drop made after it names only that dot. Merged with the compaction's delta, it drops
    /// the whole group in a region that has not applied the compaction yet (which comes
    /// from another region, on another link); without it, that region would drop the one
    /// entry and keep showing the rest of the group until the compaction arrived.
    fn carried<'a>(&'a self, cart: &CartId, p: &'a Pending) -> Vec<&'a Cart> {
        let committed = self
            .carried
            .get(cart)
            .into_iter()
            .flatten()
            .map(|(_, _, c)| c);
        let pending = p
            .carried
            .iter()
            .filter(|(id, ..)| id == cart)
            .map(|(.., c)| c);
        committed.chain(pending).collect()
    }

    fn carry(&mut self, cart: CartId, origin: ReplicaId, seq: u64, delta: Cart) {
        if self.carried_len >= CARRIED_COMPACTIONS_MAX {
            // Past the bound the transient above can show again; nothing is lost.
            return;
        }
        self.carried_len += 1;
        self.carried
            .entry(cart)
            .or_default()
            .push((origin, seq, delta));
    }

    /// Forgets the carried compactions that `everywhere(origin, seq)` says every peer has
    /// applied: a drop made from now on reaches each peer after them.
    pub fn forget_carried(&mut self, everywhere: impl Fn(ReplicaId, u64) -> bool) {
        if self.carried_len == 0 {
            return;
        }
        let mut n = 0;
        self.carried.retain(|_, v| {
            v.retain(|(o, s, _)| !everywhere(*o, *s));
            n += v.len();
            !v.is_empty()
        });
        self.carried_len = n;
    }

    /// Bytes of keys and values this node has committed to storage since it opened (what
    /// a write costs the storage engine before its own write amplification).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// How many compaction deltas drops currently carry (see `Node::carried`).
    pub fn carried_len(&self) -> usize {
        self.carried_len
    }

    /// Deletes `origin`'s log entries with seq in `from..=through`, at most `limit` of them,
    /// in one unsynced batch (a lost delete is redone later). Returns how many were deleted
    /// and the last seq deleted. Start `from` past what was trimmed before: the scan would
    /// otherwise walk every deletion marker the store still keeps.
    pub fn trim_log(
        &mut self,
        origin: ReplicaId,
        from: u64,
        through: u64,
        limit: usize,
    ) -> Result<(usize, u64), StorageError> {
        let mut doomed = Vec::new();
        let mut last = 0;
        self.storage
            .scan(
                Cf::Log,
                &codec::log_key(origin, from),
                &mut |k, _| match codec::decode_log_key(k) {
                    Ok((o, s)) if o == origin && s <= through => {
                        doomed.push(k.to_vec());
                        last = s;
                        doomed.len() < limit
                    }
                    _ => false,
                },
            )?;
        if doomed.is_empty() {
            return Ok((0, 0));
        }
        let mut b = Batch::new();
        for k in &doomed {
            b.delete(Cf::Log, k.clone());
        }
        self.storage.write(&b, Durability::Process)?;
        self.log_len = self.log_len.saturating_sub(doomed.len() as u64);
        Ok((doomed.len(), last))
    }

    /// The Merkle tree of every stored cart (see [`digest`]).
    pub fn digests(&self) -> &DigestTree {
        &self.digests
    }

    /// Anti-entropy's write: merges whole cart states received from a peer, then raises
    /// per-origin progress to `raise` (when a peer has shipped every cart that differed, its
    /// progress at the start of the comparison holds for this node too), in one batch.
    ///
    /// States are joined into what is stored, so order and repeats do not matter. A state
    /// whose merge would not fit the decode limit is refused and left out; the caller must
    /// then not raise progress on its account. The HLC moves past every timestamp merged
    /// (the caller has held back states stamped too far ahead).
    pub fn commit_states(
        &mut self,
        states: Vec<RemoteState>,
        raise: &[(ReplicaId, u64)],
        durability: Durability,
    ) -> Result<Vec<StateOutcome>, NodeError> {
        let mut p = self.pending();
        let mut outcomes = Vec::with_capacity(states.len());
        for st in states {
            let PendingCart { mut cart, existed } = self.load(&st.cart, &mut p)?;
            let before = cart.clone();
            cart.merge(&st.state);
            if existed && cart == before {
                outcomes.push(StateOutcome::Unchanged);
                continue;
            }
            let encoded = codec::encode_cart(&cart);
            if encoded.len() > codec::VALUE_BYTES_MAX {
                outcomes.push(StateOutcome::Refused);
                continue;
            }
            if let Some(ts) = max_timestamp(&st.state) {
                let _ = self.hlc.update(ts);
            }
            p.batch.put(Cf::Carts, st.cart.as_str().as_bytes(), encoded);
            if !existed {
                p.new_carts += 1;
            }
            p.carts.insert(
                st.cart,
                PendingCart {
                    cart,
                    existed: true,
                },
            );
            outcomes.push(StateOutcome::Merged);
        }
        for &(o, s) in raise {
            if o == self.config.node_id || p.remote.get(&o).copied().unwrap_or(0) >= s {
                continue;
            }
            p.batch.put(
                Cf::Meta,
                codec::progress_key(o),
                codec::encode_u64(s).to_vec(),
            );
            p.remote.insert(o, s);
        }
        if p.batch.is_empty() {
            return Ok(outcomes);
        }
        p.batch.put(
            Cf::Meta,
            codec::META_HLC_BOUND,
            codec::encode_u64(self.hlc.last().to_u64()).to_vec(),
        );
        self.storage.write(&p.batch, durability)?;
        self.remote = p.remote;
        self.carts_stored += p.new_carts;
        self.update_digests(&p.batch, &p.digests_before);
        if durability == Durability::Fsync {
            self.mark_durable();
        }
        Ok(outcomes)
    }

    /// Applies a committed batch's cart writes to the digest tree.
    fn update_digests(&mut self, batch: &Batch, before: &HashMap<CartId, Option<u64>>) {
        // A cart written twice in one batch: its last value is what is stored.
        let mut last: HashMap<&[u8], &[u8]> = HashMap::new();
        for op in batch.ops() {
            if op.cf == Cf::Carts {
                if let Some(v) = &op.value {
                    last.insert(&op.key, v);
                }
            }
        }
        let before: HashMap<&str, Option<u64>> =
            before.iter().map(|(c, d)| (c.as_str(), *d)).collect();
        for (key, value) in last {
            let Ok(id) = std::str::from_utf8(key) else {
                continue;
            };
            let old = before.get(id).copied().flatten();
            self.digests
                .replace(id, old, digest::cart_digest(id, value));
        }
    }

    /// Number of carts in storage.
    pub fn carts_stored(&self) -> u64 {
        self.carts_stored
    }

    /// Number of entries in the outgoing delta log.
    pub fn log_len(&self) -> u64 {
        self.log_len
    }

    /// Reads a cart.
    pub fn read(&self, cart: &str) -> Result<CartView, NodeError> {
        let cart = CartId::parse(cart)?;
        let c = read_cart(&self.storage, &cart)?;
        Ok(cart_view(&cart, &c, &self.token()))
    }

    /// Applies one write and commits it (see [`apply_batch`](Self::apply_batch)).
    pub fn apply(
        &mut self,
        req: WriteRequest,
        durability: Durability,
    ) -> Result<Applied, NodeError> {
        let mut out = self.apply_batch(vec![req], durability);
        assert_eq!(out.len(), 1, "one answer per request");
        out.remove(0)
    }

    /// Applies `reqs` in order and commits them as **one** storage batch (group commit):
    /// every cart state, delta log entry and idempotency record, plus the HLC bound and
    /// last sequence number, as durable as `durability` says before this returns.
    ///
    /// Returns one result per request, in order. If the commit fails, every request that
    /// would have written gets the storage error, and nothing is applied. A write that
    /// changes nothing (removing an absent line, clearing an empty cart) stores no cart and
    /// no log entry; only its idempotency record, if it has a key.
    pub fn apply_batch(
        &mut self,
        reqs: Vec<WriteRequest>,
        durability: Durability,
    ) -> Vec<Result<Applied, NodeError>> {
        self.commit(Vec::new(), reqs, durability).local
    }

    /// Applies remote entries, then local requests, and commits them all as **one**
    /// storage batch (see [`apply_batch`](Self::apply_batch)): remote applies share the
    /// group commit and its fsync.
    ///
    /// A remote entry is applied only if it is the next seq of its origin (counting the
    /// entries before it in `remote`); the rest are duplicates or gaps, and change nothing.
    pub fn commit(
        &mut self,
        remote: Vec<RemoteEntry>,
        reqs: Vec<WriteRequest>,
        durability: Durability,
    ) -> Committed {
        let now_ms = self.hlc.physical_clock().now_ms();
        let mut p = self.pending();
        let (mut compactable, mut compacted) = (Vec::new(), Vec::new());
        let mut remote_results: Vec<Result<RemoteOutcome, NodeError>> = remote
            .into_iter()
            .map(|e| self.apply_remote(e, &mut p))
            .collect();
        let mut results: Vec<Result<Staged, NodeError>> = reqs
            .into_iter()
            .map(|r| self.apply_one(r, now_ms, &mut p))
            .collect();
        if !p.batch.is_empty() {
            p.batch.put(
                Cf::Meta,
                codec::META_HLC_BOUND,
                codec::encode_u64(self.hlc.last().to_u64()).to_vec(),
            );
            p.batch
                .put(Cf::Meta, codec::META_SEQ, codec::encode_u64(p.seq).to_vec());
            match self.storage.write(&p.batch, durability) {
                Ok(()) => {
                    self.bytes_written += p
                        .batch
                        .ops()
                        .iter()
                        .map(|op| (op.key.len() + op.value.as_ref().map_or(0, Vec::len)) as u64)
                        .sum::<u64>();
                    compactable = p.compactable;
                    compacted = p.compacted;
                    for (cart, origin, seq, delta) in p.carried {
                        self.carry(cart, origin, seq, delta);
                    }
                    self.last_seq = p.seq;
                    self.remote = p.remote;
                    self.carts_stored += p.new_carts;
                    self.log_len += p.log_entries;
                    self.update_digests(&p.batch, &p.digests_before);
                    if durability == Durability::Fsync {
                        self.mark_durable();
                    }
                }
                Err(e) => {
                    for r in &mut results {
                        if matches!(r, Ok(s) if s.needs_commit) {
                            *r = Err(NodeError::Storage(e.clone()));
                        }
                    }
                    for r in &mut remote_results {
                        if matches!(r, Ok(RemoteOutcome::Applied)) {
                            *r = Err(NodeError::Storage(e.clone()));
                        }
                    }
                }
            }
        }
        Committed {
            local: results.into_iter().map(|r| r.map(|s| s.applied)).collect(),
            remote: remote_results,
            compactable,
            compacted,
        }
    }

    /// An empty batch, starting from the committed state.
    fn pending(&self) -> Pending {
        Pending {
            carts: HashMap::new(),
            idempotency: HashMap::new(),
            digests_before: HashMap::new(),
            batch: Batch::new(),
            seq: self.last_seq,
            remote: self.remote.clone(),
            new_carts: 0,
            log_entries: 0,
            compactable: Vec::new(),
            compacted: Vec::new(),
            carried: Vec::new(),
        }
    }

    /// Stages one remote entry into `p` if it is its origin's next seq.
    fn apply_remote(&self, e: RemoteEntry, p: &mut Pending) -> Result<RemoteOutcome, NodeError> {
        if e.origin == self.config.node_id {
            // Our own write, come back: we have it (or it was lost in a power failure
            // before it was ever shipped, which cannot happen: only durable entries ship).
            return Ok(RemoteOutcome::Duplicate);
        }
        let have = p.remote.get(&e.origin).copied().unwrap_or(0);
        if e.seq <= have {
            return Ok(RemoteOutcome::Duplicate);
        }
        if e.seq != have + 1 {
            return Ok(RemoteOutcome::Gap);
        }
        let Ok(id) = CartId::parse(&e.record.cart) else {
            return Ok(RemoteOutcome::Refused);
        };
        let PendingCart { mut cart, existed } = self.load(&id, p)?;
        cart.merge(&e.record.delta);
        let encoded = codec::encode_cart(&cart);
        if encoded.len() > codec::VALUE_BYTES_MAX {
            // Stored, it could not be read back: refuse rather than corrupt the cart.
            return Ok(RemoteOutcome::Refused);
        }
        // The receive event: the HLC moves past the write it applies (the caller has held
        // back entries stamped too far ahead, so this only fails on a clock that jumped
        // back since).
        let _ = self.hlc.update(e.record.hlc);
        if e.record.delta.is_compaction() {
            p.carried
                .push((id.clone(), e.origin, e.seq, e.record.delta.clone()));
        }
        p.batch.put(Cf::Carts, id.as_str().as_bytes(), encoded);
        p.batch
            .put(Cf::Log, codec::log_key(e.origin, e.seq).to_vec(), e.bytes);
        p.batch.put(
            Cf::Meta,
            codec::progress_key(e.origin),
            codec::encode_u64(e.seq).to_vec(),
        );
        p.remote.insert(e.origin, e.seq);
        if let Some((key, rec)) = &e.record.idempotency {
            // The first answer to this key in any region replays here too, unless this
            // region already answered the key itself (it keeps its own answer).
            if let Ok(key) = IdempotencyKey::parse(key) {
                let now_ms = self.hlc.physical_clock().now_ms();
                if self.lookup_idempotency(&key, now_ms, p)?.is_none() {
                    p.batch.put(
                        Cf::Idempotency,
                        key.as_str().as_bytes(),
                        codec::encode_idempotency(rec),
                    );
                    p.idempotency.insert(key, rec.clone());
                }
            }
        }
        if !existed {
            p.new_carts += 1;
        }
        p.log_entries += 1;
        p.carts.insert(
            id,
            PendingCart {
                cart,
                existed: true,
            },
        );
        Ok(RemoteOutcome::Applied)
    }

    /// Stages one request into `p`.
    fn apply_one(
        &self,
        req: WriteRequest,
        now_ms: u64,
        p: &mut Pending,
    ) -> Result<Staged, NodeError> {
        if let Some(idem) = &req.idempotency {
            if let Some(staged) = self.replay(idem, now_ms, p)? {
                return Ok(staged);
            }
        }
        let PendingCart { mut cart, existed } = self.load(&req.cart, p)?;
        let seq = p.seq + 1;
        let ts = self.hlc.now();
        let token = token_of(self.config.node_id, seq, &p.remote);
        let Some((mut delta, answer)) = self.mutate(&req, &mut cart, ts, seq, &token)? else {
            return self.no_op(req, &cart, now_ms, p);
        };
        if matches!(
            req.op,
            Op::Remove { .. } | Op::Set { .. } | Op::Clear | Op::Checkout
        ) {
            // What this write saw includes the other regions' compactions it applied; a
            // region that has not applied one yet gets it with this write (see
            // `Node::carried`).
            for c in self.carried(&req.cart, p) {
                delta.merge(c);
            }
        }
        let encoded = codec::encode_cart(&cart);
        // A compaction only shrinks the cart: it must go through even for a cart that
        // merges have taken past the limit, which is when it is needed most.
        if encoded.len() > self.config.cart_bytes_max && !matches!(req.op, Op::Compact { .. }) {
            return Err(NodeError::CartTooLarge {
                cart: req.cart,
                bytes: encoded.len(),
                max: self.config.cart_bytes_max,
            });
        }
        // Assert before writing: what we store decodes (and validates) to what we hold.
        debug_assert_eq!(codec::decode_cart(&encoded).as_ref(), Ok(&cart));
        p.batch
            .put(Cf::Carts, req.cart.as_str().as_bytes(), encoded);
        let idem_record = req.idempotency.as_ref().map(|idem| {
            (
                idem.key.as_str().to_owned(),
                idempotency_record(idem, now_ms, &answer),
            )
        });
        p.batch.put(
            Cf::Log,
            codec::log_key(self.config.node_id, seq).to_vec(),
            codec::encode_delta(&DeltaRecord {
                cart: req.cart.to_string(),
                hlc: ts,
                delta,
                request_id: req.request_id,
                idempotency: idem_record,
            }),
        );
        if let Op::Compact { .. } = &req.op {
            p.compacted.push((req.cart.clone(), seq));
        }
        if let Op::Add { sku, .. } = &req.op {
            let me = self.config.node_id;
            let own_adds = cart
                .entries(sku.as_str())
                .iter()
                .filter(|(d, e)| d.replica == me && matches!(e, meridian_crdt::Entry::Add(_)))
                .count();
            if own_adds >= self.config.compaction_line_adds_min.max(2) {
                let counter = cart.context().max_counter(me);
                p.compactable.push((req.cart.clone(), seq, counter));
            }
        }
        if let Some(idem) = req.idempotency {
            stage_idempotency(p, idem, now_ms, &answer);
        }
        if !existed {
            p.new_carts += 1;
        }
        p.log_entries += 1;
        p.seq = seq;
        p.carts.insert(
            req.cart,
            PendingCart {
                cart,
                existed: true,
            },
        );
        Ok(Staged {
            applied: Applied {
                answer,
                replayed: false,
            },
            needs_commit: true,
        })
    }

    /// The stored answer to an earlier request with this key, if there is one.
    fn replay(
        &self,
        idem: &Idempotency,
        now_ms: u64,
        p: &Pending,
    ) -> Result<Option<Staged>, NodeError> {
        let Some(rec) = self.lookup_idempotency(&idem.key, now_ms, p)? else {
            return Ok(None);
        };
        if rec.fingerprint != idem.fingerprint {
            return Err(NodeError::IdempotencyMismatch(idem.key.as_str().to_owned()));
        }
        // A record whose answer no longer decodes is treated as absent, like a corrupt one.
        let Ok(answer) = serde_json::from_slice::<Answer>(&rec.body) else {
            return Ok(None);
        };
        Ok(Some(Staged {
            applied: Applied {
                answer,
                replayed: true,
            },
            // A replay of a write earlier in this batch stands or falls with it.
            needs_commit: p.idempotency.contains_key(&idem.key),
        }))
    }

    /// The cart as this batch has left it so far, and whether it existed before.
    fn load(&self, id: &CartId, p: &mut Pending) -> Result<PendingCart, NodeError> {
        if let Some(pc) = p.carts.get(id) {
            return Ok(PendingCart {
                cart: pc.cart.clone(),
                existed: pc.existed,
            });
        }
        let stored = self.storage.get(Cf::Carts, id.as_str().as_bytes())?;
        p.digests_before.insert(
            id.clone(),
            stored.as_ref().map(|b| digest::cart_digest(id.as_str(), b)),
        );
        let Some(bytes) = stored else {
            return Ok(PendingCart {
                cart: Cart::default(),
                existed: false,
            });
        };
        let cart = codec::decode_cart(&bytes).map_err(|source| NodeError::Corrupt {
            cart: id.to_string(),
            source,
        })?;
        Ok(PendingCart {
            cart,
            existed: true,
        })
    }

    /// Applies the operation to `cart`: its delta and answer, or `None` if it changes
    /// nothing. Refuses what the limits forbid before touching the cart.
    fn mutate(
        &self,
        req: &WriteRequest,
        cart: &mut Cart,
        ts: HlcTimestamp,
        seq: u64,
        token: &CausalToken,
    ) -> Result<Option<(Cart, Answer)>, NodeError> {
        let r = self.config.node_id;
        let delta = match &req.op {
            Op::Add { sku, quantity } => {
                self.check_room(&req.cart, cart, sku)?;
                let current = cart.quantity(sku.as_str());
                if current.saturating_add(quantity.get()) > QUANTITY_MAX {
                    return Err(NodeError::LineFull {
                        cart: req.cart.clone(),
                        sku: sku.clone(),
                        current,
                        adding: quantity.get(),
                        max: QUANTITY_MAX,
                    });
                }
                cart.add(r, sku.as_str(), quantity.get())?
            }
            Op::Set { sku, quantity } => {
                if quantity.get() > 0 {
                    self.check_room(&req.cart, cart, sku)?;
                }
                cart.set(r, ts, sku.as_str(), quantity.get())?
            }
            Op::Remove { sku } => cart.remove(sku.as_str()),
            Op::Clear => cart.clear(),
            Op::Checkout => return self.checkout(req, cart, seq, token).map(Some),
            Op::Compact { stable } => cart.compact(stable),
        };
        if is_no_op(&delta) {
            return Ok(None);
        }
        let answer = Answer::Cart(cart_view(&req.cart, cart, token));
        Ok(Some((delta, answer)))
    }

    fn checkout(
        &self,
        req: &WriteRequest,
        cart: &mut Cart,
        seq: u64,
        token: &CausalToken,
    ) -> Result<(Cart, Answer), NodeError> {
        let snapshot = cart.snapshot();
        if snapshot.is_empty() {
            return Err(NodeError::EmptyCart(req.cart.clone()));
        }
        let lines = snapshot
            .lines()
            .iter()
            .map(|(sku, quantity)| LineView {
                sku: sku.clone(),
                quantity: *quantity,
            })
            .collect();
        let delta = cart.checkout(&snapshot);
        let order = OrderView {
            order: format!("order-{}-{seq}", self.config.node_id.0),
            cart: req.cart.to_string(),
            lines,
            token: token.to_string(),
        };
        Ok((delta, Answer::Order(order)))
    }

    /// A new line must fit under `cart_lines_max`.
    fn check_room(&self, id: &CartId, cart: &Cart, sku: &Sku) -> Result<(), NodeError> {
        let max = self.config.cart_lines_max;
        if cart.quantity(sku.as_str()) == 0 && cart.len() >= max {
            return Err(NodeError::CartFull {
                cart: id.clone(),
                max,
            });
        }
        Ok(())
    }

    /// A write that changes nothing commits nothing but its idempotency record (so that a
    /// retry after a later change still replays this answer instead of acting anew).
    fn no_op(
        &self,
        req: WriteRequest,
        cart: &Cart,
        now_ms: u64,
        p: &mut Pending,
    ) -> Result<Staged, NodeError> {
        let token = token_of(self.config.node_id, p.seq, &p.remote);
        let answer = Answer::Cart(cart_view(&req.cart, cart, &token));
        let needs_commit = match req.idempotency {
            Some(idem) => {
                stage_idempotency(p, idem, now_ms, &answer);
                true
            }
            None => false,
        };
        Ok(Staged {
            applied: Applied {
                answer,
                replayed: false,
            },
            needs_commit,
        })
    }

    fn lookup_idempotency(
        &self,
        key: &IdempotencyKey,
        now_ms: u64,
        p: &Pending,
    ) -> Result<Option<IdempotencyRecord>, NodeError> {
        let rec = match p.idempotency.get(key) {
            Some(r) => r.clone(),
            None => match self.storage.get(Cf::Idempotency, key.as_str().as_bytes())? {
                None => return Ok(None),
                // A corrupt record is treated as absent: the request is applied (a
                // duplicate at worst), rather than refused forever.
                Some(bytes) => match codec::decode_idempotency(&bytes) {
                    Ok(r) => r,
                    Err(_) => return Ok(None),
                },
            },
        };
        if self.expired(&rec, now_ms) {
            return Ok(None);
        }
        Ok(Some(rec))
    }

    fn expired(&self, rec: &IdempotencyRecord, now_ms: u64) -> bool {
        let ttl_ms = u64::try_from(self.config.idempotency_ttl.as_millis()).unwrap_or(u64::MAX);
        rec.created_ms.saturating_add(ttl_ms) <= now_ms
    }

    /// Examines up to `limit` idempotency records, continuing where the previous call
    /// stopped (wrapping around), and deletes the expired or undecodable ones. Returns how
    /// many were deleted. The work per call is bounded, however many records exist.
    pub fn sweep_idempotency(&mut self, limit: usize) -> Result<usize, StorageError> {
        let now_ms = self.hlc.physical_clock().now_ms();
        let mut doomed = Vec::new();
        let mut examined = 0usize;
        let mut last_key: Option<Vec<u8>> = None;
        self.storage
            .scan(Cf::Idempotency, &self.sweep_cursor, &mut |k, v| {
                examined += 1;
                let dead = codec::decode_idempotency(v).map_or(true, |r| self.expired(&r, now_ms));
                if dead {
                    doomed.push(k.to_vec());
                }
                last_key = Some(k.to_vec());
                examined < limit
            })?;
        self.sweep_cursor = match last_key {
            // Stopped at the limit: continue after the last key examined.
            Some(mut k) if examined >= limit => {
                k.push(0);
                k
            }
            // Reached the end: start over next time.
            _ => Vec::new(),
        };
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut b = Batch::new();
        for k in &doomed {
            b.delete(Cf::Idempotency, k.clone());
        }
        self.storage.write(&b, Durability::Process)?;
        Ok(doomed.len())
    }
}

/// `true` iff `delta` changes no replica: no entry and nothing observed.
fn is_no_op(delta: &Cart) -> bool {
    delta.is_empty() && delta.context().is_empty()
}

fn idempotency_record(idem: &Idempotency, now_ms: u64, answer: &Answer) -> IdempotencyRecord {
    IdempotencyRecord {
        created_ms: now_ms,
        fingerprint: idem.fingerprint,
        status: 200,
        body: serde_json::to_vec(answer).expect("API views serialize"),
    }
}

fn stage_idempotency(p: &mut Pending, idem: Idempotency, now_ms: u64, answer: &Answer) {
    let rec = idempotency_record(&idem, now_ms, answer);
    p.batch.put(
        Cf::Idempotency,
        idem.key.as_str().as_bytes(),
        codec::encode_idempotency(&rec),
    );
    p.idempotency.insert(idem.key, rec);
}
