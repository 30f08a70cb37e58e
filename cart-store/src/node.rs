//! [`Node`]: the sans-IO write path of one region — validate, apply to the cart, encode,
//! and one atomic [`Batch`] per group of writes.
//!
//! The node owns no thread, socket or runtime. Physical time comes from its
//! [`PhysicalClock`]; storage is any [`Storage`]. The HTTP server is a thin driver: it hands
//! [`WriteRequest`]s to [`Node::apply_batch`] from one writer thread and reads carts with
//! [`read_cart`].

use crate::cart::Cart;
use crate::codec::{self, DeltaRecord, IdempotencyRecord};
use crate::storage::{self, Batch, Cf, Storage, StorageError};
use crate::token::CausalToken;
use crate::validate::{self, QUANTITY_MAX};
use meridian_clocks::{ClockError, Hlc, HlcTimestamp, PhysicalClock, ReplicaId};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

/// The node's settings (the relevant part of [`Config`](crate::Config)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's replica id.
    pub node_id: ReplicaId,
    /// Most lines in one cart.
    pub cart_lines_max: usize,
    /// Largest encoded cart state.
    pub cart_bytes_max: usize,
    /// How long an idempotency record is kept.
    pub idempotency_ttl: Duration,
    /// The HLC's max offset.
    pub max_clock_offset: Duration,
    /// Start even if the persisted HLC bound is further ahead than the max offset.
    pub clock_bound_override: bool,
}

impl NodeConfig {
    /// Defaults for `node_id`: 1000 lines, 256 KiB per cart, 24 h idempotency, 500 ms max
    /// offset.
    pub fn new(node_id: ReplicaId) -> Self {
        NodeConfig {
            node_id,
            cart_lines_max: 1000,
            cart_bytes_max: 256 * 1024,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            max_clock_offset: meridian_clocks::DEFAULT_MAX_OFFSET,
            clock_bound_override: false,
        }
    }

    /// The node settings of a full config.
    pub fn from_config(c: &crate::Config) -> Self {
        NodeConfig {
            node_id: ReplicaId(c.node_id),
            cart_lines_max: c.cart_lines_max,
            cart_bytes_max: c.cart_bytes_max,
            idempotency_ttl: Duration::from_secs(c.idempotency_ttl_secs),
            max_clock_offset: c.max_clock_offset(),
            clock_bound_override: c.clock_bound_override,
        }
    }
}

/// A mutation of one cart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Add `quantity` (1–10000) to `sku`.
    Add {
        /// The sku.
        sku: String,
        /// How many.
        quantity: u64,
    },
    /// Set `sku` to `quantity` (0–10000; 0 removes the line).
    Set {
        /// The sku.
        sku: String,
        /// The new quantity.
        quantity: u64,
    },
    /// Remove the line.
    Remove {
        /// The sku.
        sku: String,
    },
    /// Remove every line.
    Clear,
    /// Order exactly the observed lines and remove them.
    Checkout,
}

/// An `Idempotency-Key` and the fingerprint of the request that carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    /// The key (1–255 visible ASCII characters).
    pub key: String,
    /// A hash of method, path and body ([`codec::fnv1a64`]): a retry must match it.
    pub fingerprint: u64,
}

/// One write to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRequest {
    /// The cart id.
    pub cart: String,
    /// What to do.
    pub op: Op,
    /// The request's idempotency key, if any.
    pub idempotency: Option<Idempotency>,
}

/// The answer to a write: an HTTP status and JSON body (stored for idempotent retries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status (200).
    pub status: u16,
    /// The JSON body.
    pub body: Vec<u8>,
    /// `true` when this is the stored answer to an earlier request with the same key.
    pub replayed: bool,
}

/// A line of a cart, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LineView {
    /// The sku.
    pub sku: String,
    /// Its quantity (≥ 1).
    pub quantity: u32,
}

/// `GET /carts/{cart}` and the answer to every cart mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CartView {
    /// The cart id.
    pub cart: String,
    /// Lines sorted by sku.
    pub lines: Vec<LineView>,
    /// The causal token of this answer.
    pub token: String,
}

/// The answer to a checkout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderView {
    /// The order id.
    pub order: String,
    /// The cart id.
    pub cart: String,
    /// Exactly the lines that were ordered.
    pub lines: Vec<LineView>,
    /// The causal token of this answer.
    pub token: String,
}

/// Why one write (or read) was refused. The message says what to change.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A cart id or sku has the wrong syntax.
    #[error("{0}")]
    InvalidId(String),
    /// A quantity is out of range.
    #[error("{0}")]
    InvalidQuantity(String),
    /// The cart has `cart_lines_max` lines already.
    #[error("cart {cart:?} already has {max} lines, the maximum; remove a line first")]
    CartFull {
        /// The cart.
        cart: String,
        /// The limit.
        max: usize,
    },
    /// The cart's encoded state would exceed `cart_bytes_max`.
    #[error(
        "cart {cart:?} would take {bytes} bytes, more than the maximum {max}: every add is \
         kept separately until a set, remove or clear of its line; set the line's quantity to \
         compact it"
    )]
    CartTooLarge {
        /// The cart.
        cart: String,
        /// Its encoded size after the write.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Checkout of a cart with no lines.
    #[error("cart {0:?} is empty; there is nothing to check out")]
    EmptyCart(String),
    /// An idempotency key was reused for a different request.
    #[error(
        "Idempotency-Key {0:?} was already used for a different request; use a new key for a \
         new request"
    )]
    IdempotencyMismatch(String),
    /// A stored value could not be decoded.
    #[error("stored data for cart {cart:?} is corrupt: {detail}")]
    Corrupt {
        /// The cart.
        cart: String,
        /// The decoder's message.
        detail: String,
    },
    /// A delta log entry could not be decoded.
    #[error("the delta log entry with key {key:02x?} is corrupt: {detail}")]
    CorruptLog {
        /// The entry's key.
        key: Vec<u8>,
        /// The decoder's message.
        detail: String,
    },
    /// The storage engine failed.
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
    Corrupt(String),
}

/// Reads a cart straight from storage (readers need not wait for the writer).
pub fn read_cart(storage: &dyn Storage, cart: &str) -> Result<Cart, NodeError> {
    if !validate::is_id(cart) {
        return Err(NodeError::InvalidId(validate::id_problem("cart id", cart)));
    }
    match storage.get(Cf::Carts, cart.as_bytes())? {
        None => Ok(Cart::default()),
        Some(bytes) => codec::decode_cart(&bytes).map_err(|e| NodeError::Corrupt {
            cart: cart.to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// Most delta log entries [`read_log`] returns at once.
pub const LOG_READ_MAX: usize = 4096;

/// Reads up to `limit` (at most [`LOG_READ_MAX`]) entries of the outgoing delta log with
/// sequence number `>= from`, in order, validating each. This is what replication ships.
pub fn read_log(
    storage: &dyn Storage,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, DeltaRecord)>, NodeError> {
    let limit = limit.min(LOG_READ_MAX);
    let mut out = Vec::new();
    let mut bad: Option<NodeError> = None;
    if limit == 0 {
        return Ok(out);
    }
    storage.scan(Cf::Log, &codec::encode_u64(from), &mut |k, v| {
        let decoded = codec::decode_u64("delta log key", k)
            .and_then(|seq| Ok((seq, codec::decode_delta_checked(v)?)));
        match decoded {
            Ok(entry) => out.push(entry),
            Err(e) => {
                bad = Some(NodeError::CorruptLog {
                    key: k.to_vec(),
                    detail: e.to_string(),
                });
                return false;
            }
        }
        out.len() < limit
    })?;
    match bad {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The API view of a cart.
pub fn cart_view(cart_id: &str, cart: &Cart, token: &CausalToken) -> CartView {
    CartView {
        cart: cart_id.to_owned(),
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
    carts_stored: u64,
    log_len: u64,
    sweep_cursor: Vec<u8>,
}

struct Pending {
    carts: HashMap<String, (Cart, bool)>,
    idempotency: HashMap<String, IdempotencyRecord>,
    batch: Batch,
    seq: u64,
    new_carts: u64,
    log_entries: u64,
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
                b.put(Cf::Meta, codec::META_FORMAT, vec![codec::FORMAT_VERSION]);
                b.put(
                    Cf::Meta,
                    codec::META_NODE_ID,
                    codec::encode_u64(config.node_id.0).to_vec(),
                );
                storage.write(&b, true)?;
            }
            (Some(f), Some(n)) => {
                if f.as_slice() != [codec::FORMAT_VERSION] {
                    return Err(OpenError::FormatVersion {
                        found: format!("{f:?}"),
                    });
                }
                let found = codec::decode_u64("node_id", n)
                    .map_err(|e| OpenError::Corrupt(e.to_string()))?;
                if found != config.node_id.0 {
                    return Err(OpenError::WrongNode {
                        found,
                        configured: config.node_id.0,
                    });
                }
            }
            _ => {
                return Err(OpenError::Corrupt(
                    "only one of format_version and node_id is present".into(),
                ))
            }
        }
        let meta_u64 = |key: &[u8], what: &str| -> Result<u64, OpenError> {
            match storage.get(Cf::Meta, key)? {
                None => Ok(0),
                Some(v) => {
                    codec::decode_u64(what, &v).map_err(|e| OpenError::Corrupt(e.to_string()))
                }
            }
        };
        let bound = HlcTimestamp::from_u64(meta_u64(codec::META_HLC_BOUND, "hlc_bound")?);
        let last_seq = meta_u64(codec::META_SEQ, "seq")?;
        let hlc = if config.clock_bound_override {
            Hlc::resume_past_bound_unchecked(clock, config.max_clock_offset, bound)
        } else {
            Hlc::resume(clock, config.max_clock_offset, bound)?
        };
        let carts_stored = storage::count(&storage, Cf::Carts)?;
        let log_len = storage::count(&storage, Cf::Log)?;
        Ok(Node {
            storage,
            hlc,
            config,
            last_seq,
            carts_stored,
            log_len,
            sweep_cursor: Vec::new(),
        })
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The HLC.
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

    /// The causal token covering every committed local write.
    pub fn token(&self) -> CausalToken {
        CausalToken::single(self.config.node_id.0, self.last_seq)
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
        let c = read_cart(&self.storage, cart)?;
        Ok(cart_view(cart, &c, &self.token()))
    }

    /// Applies one write and commits it (see [`apply_batch`](Self::apply_batch)).
    pub fn apply(&mut self, req: WriteRequest, sync: bool) -> Result<Reply, NodeError> {
        self.apply_batch(vec![req], sync)
            .pop()
            .expect("one reply per request")
    }

    /// Applies `reqs` in order and commits them as **one** storage batch (group commit):
    /// every cart state, delta log entry and idempotency record, plus the HLC bound and
    /// last sequence number. With `sync`, the batch is fsynced before this returns.
    ///
    /// Returns one result per request, in order. If the commit fails, every request that
    /// would have written gets the storage error, and nothing is applied.
    pub fn apply_batch(
        &mut self,
        reqs: Vec<WriteRequest>,
        sync: bool,
    ) -> Vec<Result<Reply, NodeError>> {
        let now_ms = self.hlc.physical_clock().now_ms();
        let mut p = Pending {
            carts: HashMap::new(),
            idempotency: HashMap::new(),
            batch: Batch::new(),
            seq: self.last_seq,
            new_carts: 0,
            log_entries: 0,
        };
        let mut results: Vec<Result<(Reply, bool), NodeError>> = reqs
            .into_iter()
            .map(|r| self.apply_one(r, now_ms, &mut p))
            .collect();
        if p.batch.is_empty() {
            return results.into_iter().map(|r| r.map(|x| x.0)).collect();
        }
        p.batch.put(
            Cf::Meta,
            codec::META_HLC_BOUND,
            codec::encode_u64(self.hlc.last().to_u64()).to_vec(),
        );
        p.batch
            .put(Cf::Meta, codec::META_SEQ, codec::encode_u64(p.seq).to_vec());
        match self.storage.write(&p.batch, sync) {
            Ok(()) => {
                self.last_seq = p.seq;
                self.carts_stored += p.new_carts;
                self.log_len += p.log_entries;
                results.into_iter().map(|r| r.map(|x| x.0)).collect()
            }
            Err(e) => {
                for r in &mut results {
                    if matches!(r, Ok((_, true))) {
                        *r = Err(NodeError::Storage(e.clone()));
                    }
                }
                results.into_iter().map(|r| r.map(|x| x.0)).collect()
            }
        }
    }

    /// Returns the reply and whether it depends on this batch being committed.
    fn apply_one(
        &self,
        req: WriteRequest,
        now_ms: u64,
        p: &mut Pending,
    ) -> Result<(Reply, bool), NodeError> {
        validate_request(&req)?;
        if let Some(idem) = &req.idempotency {
            if let Some(rec) = self.lookup_idempotency(&idem.key, now_ms, p)? {
                if rec.fingerprint != idem.fingerprint {
                    return Err(NodeError::IdempotencyMismatch(idem.key.clone()));
                }
                // A replay of a write earlier in this batch stands or falls with it.
                let pending = p.idempotency.contains_key(&idem.key);
                return Ok((
                    Reply {
                        status: rec.status,
                        body: rec.body,
                        replayed: true,
                    },
                    pending,
                ));
            }
        }
        let (mut cart, existed) = match p.carts.get(&req.cart) {
            Some((c, existed)) => (c.clone(), *existed),
            None => match self.storage.get(Cf::Carts, req.cart.as_bytes())? {
                None => (Cart::default(), false),
                Some(bytes) => (
                    codec::decode_cart(&bytes).map_err(|e| NodeError::Corrupt {
                        cart: req.cart.clone(),
                        detail: e.to_string(),
                    })?,
                    true,
                ),
            },
        };
        let r = self.config.node_id;
        let max = self.config.cart_lines_max;
        let full = |cart: &Cart, sku: &str| cart.quantity(sku) == 0 && cart.len() >= max;
        let seq = p.seq + 1;
        let ts = self.hlc.now();
        let token = CausalToken::single(r.0, seq);
        let (delta, status, body) = match &req.op {
            Op::Add { sku, quantity } => {
                if full(&cart, sku) {
                    return Err(NodeError::CartFull {
                        cart: req.cart,
                        max,
                    });
                }
                let d = cart.add(r, sku, *quantity as u32);
                (d, 200, json(&cart_view(&req.cart, &cart, &token)))
            }
            Op::Set { sku, quantity } => {
                if *quantity > 0 && full(&cart, sku) {
                    return Err(NodeError::CartFull {
                        cart: req.cart,
                        max,
                    });
                }
                let d = cart.set(r, ts, sku, *quantity as u32);
                (d, 200, json(&cart_view(&req.cart, &cart, &token)))
            }
            Op::Remove { sku } => {
                let d = cart.remove(sku);
                (d, 200, json(&cart_view(&req.cart, &cart, &token)))
            }
            Op::Clear => {
                let d = cart.clear();
                (d, 200, json(&cart_view(&req.cart, &cart, &token)))
            }
            Op::Checkout => {
                let snapshot = cart.snapshot();
                if snapshot.is_empty() {
                    return Err(NodeError::EmptyCart(req.cart));
                }
                let lines = snapshot
                    .lines()
                    .iter()
                    .map(|(sku, quantity)| LineView {
                        sku: sku.clone(),
                        quantity: *quantity,
                    })
                    .collect();
                let d = cart.checkout(&snapshot);
                let order = OrderView {
                    order: format!("order-{}-{seq}", r.0),
                    cart: req.cart.clone(),
                    lines,
                    token: token.to_string(),
                };
                (d, 200, json(&order))
            }
        };
        let encoded = codec::encode_cart(&cart);
        if encoded.len() > self.config.cart_bytes_max {
            return Err(NodeError::CartTooLarge {
                cart: req.cart,
                bytes: encoded.len(),
                max: self.config.cart_bytes_max,
            });
        }
        // Assert before writing: what we store decodes (and validates) to what we hold.
        debug_assert_eq!(codec::decode_cart(&encoded).as_ref(), Ok(&cart));
        p.batch.put(Cf::Carts, req.cart.as_bytes(), encoded);
        p.batch.put(
            Cf::Log,
            codec::encode_u64(seq).to_vec(),
            codec::encode_delta(&DeltaRecord {
                cart: req.cart.clone(),
                hlc: ts,
                delta,
            }),
        );
        if let Some(idem) = req.idempotency {
            let rec = IdempotencyRecord {
                created_ms: now_ms,
                fingerprint: idem.fingerprint,
                status,
                body: body.clone(),
            };
            p.batch.put(
                Cf::Idempotency,
                idem.key.as_bytes(),
                codec::encode_idempotency(&rec),
            );
            p.idempotency.insert(idem.key, rec);
        }
        if !existed {
            p.new_carts += 1;
        }
        p.log_entries += 1;
        p.seq = seq;
        p.carts.insert(req.cart, (cart, true));
        Ok((
            Reply {
                status,
                body,
                replayed: false,
            },
            true,
        ))
    }

    fn lookup_idempotency(
        &self,
        key: &str,
        now_ms: u64,
        p: &Pending,
    ) -> Result<Option<IdempotencyRecord>, NodeError> {
        let rec = match p.idempotency.get(key) {
            Some(r) => r.clone(),
            None => match self.storage.get(Cf::Idempotency, key.as_bytes())? {
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
        self.storage.write(&b, false)?;
        Ok(doomed.len())
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("API views serialize")
}

fn validate_request(req: &WriteRequest) -> Result<(), NodeError> {
    if !validate::is_id(&req.cart) {
        return Err(NodeError::InvalidId(validate::id_problem(
            "cart id", &req.cart,
        )));
    }
    let sku = match &req.op {
        Op::Add { sku, .. } | Op::Set { sku, .. } | Op::Remove { sku } => Some(sku),
        Op::Clear | Op::Checkout => None,
    };
    if let Some(sku) = sku {
        if !validate::is_id(sku) {
            return Err(NodeError::InvalidId(validate::id_problem("sku", sku)));
        }
    }
    match req.op {
        Op::Add { quantity, .. } if !(1..=u64::from(QUANTITY_MAX)).contains(&quantity) => {
            Err(NodeError::InvalidQuantity(format!(
                "quantity {quantity} is out of range: add takes 1..={QUANTITY_MAX}"
            )))
        }
        Op::Set { quantity, .. } if quantity > u64::from(QUANTITY_MAX) => {
            Err(NodeError::InvalidQuantity(format!(
                "quantity {quantity} is out of range: set takes 0..={QUANTITY_MAX} (0 removes the line)"
            )))
        }
        _ => Ok(()),
    }
}
