//! The sans-IO write path over `MemStorage`: semantics, validation, idempotency, group
//! commit, crashes and startup checks.

use meridian_cart_store_core::codec::{self, decode_delta_checked};
use meridian_cart_store_core::{
    Applied, Batch, Cart, Cf, Durability, IdempotencyKey, MemStorage, Node, NodeConfig, NodeError,
    Op, OpenError, Storage, StorageError, StorageErrorKind, WriteRequest,
};
use meridian_clocks::{ManualClock, ReplicaId};
use serde_json::Value;
use std::time::Duration;

const T0: u64 = 1_700_000_000_000;

fn cfg() -> NodeConfig {
    NodeConfig::new(ReplicaId(1))
}

fn open(s: &MemStorage, clock: &ManualClock) -> Node<MemStorage, ManualClock> {
    Node::open(s.clone(), clock.clone(), cfg()).unwrap()
}

fn req(cart: &str, op: Op) -> WriteRequest {
    WriteRequest::on(cart, op).unwrap()
}

fn add(cart: &str, sku: &str, quantity: u64) -> WriteRequest {
    WriteRequest::add(cart, sku, quantity).unwrap()
}

fn set(cart: &str, sku: &str, quantity: u64) -> WriteRequest {
    WriteRequest::set(cart, sku, quantity).unwrap()
}

fn with_key(r: WriteRequest, key: &str, fingerprint: u64) -> WriteRequest {
    r.with_idempotency(IdempotencyKey::parse(key).unwrap(), fingerprint)
}

fn lines<S: Storage>(node: &Node<S, ManualClock>, cart: &str) -> Vec<(String, u32)> {
    node.read(cart)
        .unwrap()
        .lines
        .into_iter()
        .map(|l| (l.sku, l.quantity))
        .collect()
}

fn l(sku: &str, q: u32) -> (String, u32) {
    (sku.to_owned(), q)
}

fn body(applied: &Applied) -> Value {
    serde_json::to_value(&applied.answer).unwrap()
}

#[test]
fn every_operation_has_its_effect() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    assert!(lines(&node, "c").is_empty(), "a new cart is empty");
    node.apply(add("c", "b", 2), Durability::Process).unwrap();
    node.apply(add("c", "a", 1), Durability::Process).unwrap();
    node.apply(add("c", "b", 3), Durability::Process).unwrap();
    assert_eq!(
        lines(&node, "c"),
        vec![l("a", 1), l("b", 5)],
        "sorted by sku"
    );
    let set = |q| set("c", "b", q);
    node.apply(set(7), Durability::Process).unwrap();
    assert_eq!(lines(&node, "c"), vec![l("a", 1), l("b", 7)]);
    node.apply(set(0), Durability::Process).unwrap();
    assert_eq!(lines(&node, "c"), vec![l("a", 1)]);
    let remove = WriteRequest::remove("c", "a").unwrap();
    node.apply(remove, Durability::Process).unwrap();
    assert!(lines(&node, "c").is_empty());
    node.apply(add("c", "x", 1), Durability::Process).unwrap();
    let r = node
        .apply(req("c", Op::Clear), Durability::Process)
        .unwrap();
    assert_eq!(body(&r)["lines"], serde_json::json!([]));
    assert!(lines(&node, "c").is_empty());
    assert_eq!(node.last_seq(), 8);
    assert_eq!(node.log_len(), 8);
    assert_eq!(node.carts_stored(), 1);
}

#[test]
fn replies_carry_the_cart_and_a_token() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    let r = node
        .apply(add("cart-1", "sku-1", 2), Durability::Process)
        .unwrap();
    assert!(!r.replayed);
    assert_eq!(
        body(&r),
        serde_json::json!({"cart": "cart-1", "lines": [{"sku": "sku-1", "quantity": 2}], "token": "v1:1=1"})
    );
    assert_eq!(node.token().to_string(), "v1:1=1");
}

#[test]
fn checkout_orders_exactly_the_observed_lines() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    let err = node
        .apply(req("c", Op::Checkout), Durability::Process)
        .unwrap_err();
    assert!(matches!(err, NodeError::EmptyCart(_)), "{err}");
    node.apply(add("c", "a", 2), Durability::Process).unwrap();
    node.apply(add("c", "b", 1), Durability::Process).unwrap();
    // In one batch: checkout, then an add the checkout did not observe.
    let out = node.apply_batch(
        vec![req("c", Op::Checkout), add("c", "a", 5)],
        Durability::Process,
    );
    let order = body(out[0].as_ref().unwrap());
    assert_eq!(order["order"], "order-1-3");
    assert_eq!(order["cart"], "c");
    assert_eq!(
        order["lines"],
        serde_json::json!([{"sku": "a", "quantity": 2}, {"sku": "b", "quantity": 1}])
    );
    assert_eq!(
        lines(&node, "c"),
        vec![l("a", 5)],
        "the later add stays in the cart"
    );
}

#[test]
fn invalid_requests_cannot_be_built() {
    let cases: Vec<(Result<WriteRequest, _>, &str)> = vec![
        (WriteRequest::add("bad cart", "a", 1), "cart id"),
        (WriteRequest::add("..", "a", 1), "path segment"),
        (WriteRequest::add(&"c".repeat(129), "a", 1), "129 bytes"),
        (WriteRequest::add("c", "a/b", 1), "sku"),
        (WriteRequest::add("c", "", 1), "sku is empty"),
        (WriteRequest::add("c", "a", 0), "add takes 1..=10000"),
        (WriteRequest::add("c", "a", 10_001), "add takes 1..=10000"),
        (WriteRequest::set("c", "a", 10_001), "set takes 0..=10000"),
        (WriteRequest::set("c", "a", 1 << 32), "set takes 0..=10000"),
    ];
    for (r, want) in cases {
        let e = r.unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    }
}

#[test]
fn an_add_past_the_line_maximum_is_refused() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    node.apply(add("c", "a", 10_000), Durability::Process)
        .unwrap();
    let e = node
        .apply(add("c", "a", 1), Durability::Process)
        .unwrap_err();
    assert!(
        matches!(
            e,
            NodeError::LineFull {
                current: 10_000,
                adding: 1,
                max: 10_000,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(lines(&node, "c"), vec![l("a", 10_000)]);
    // A set below the maximum, then adds up to it, are fine.
    node.apply(set("c", "a", 9_998), Durability::Process)
        .unwrap();
    node.apply(add("c", "a", 2), Durability::Process).unwrap();
    assert_eq!(lines(&node, "c"), vec![l("a", 10_000)]);
}

#[test]
fn a_write_that_changes_nothing_commits_nothing() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    let before = s.unsynced_writes();
    let r = node
        .apply(
            WriteRequest::remove("never", "a").unwrap(),
            Durability::Process,
        )
        .unwrap();
    assert_eq!(body(&r)["lines"], serde_json::json!([]));
    node.apply(req("never", Op::Clear), Durability::Process)
        .unwrap();
    node.apply(set("never", "a", 0), Durability::Process)
        .unwrap();
    assert_eq!(s.unsynced_writes(), before, "no batch was written");
    assert_eq!(
        (node.last_seq(), node.log_len(), node.carts_stored()),
        (0, 0, 0)
    );
    // With a key, only the idempotency record is written, so a retry after a later change
    // replays the no-op instead of removing the new line.
    let keyed = || with_key(WriteRequest::remove("c", "a").unwrap(), "k", 9);
    node.apply(keyed(), Durability::Process).unwrap();
    assert_eq!((node.last_seq(), node.log_len()), (0, 0));
    node.apply(add("c", "a", 1), Durability::Process).unwrap();
    assert!(node.apply(keyed(), Durability::Process).unwrap().replayed);
    assert_eq!(lines(&node, "c"), vec![l("a", 1)]);
}

#[test]
fn a_cart_holds_at_most_cart_lines_max_lines() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut config = cfg();
    config.cart_lines_max = 2;
    let mut node = Node::open(s, clock, config).unwrap();
    node.apply(add("c", "a", 1), Durability::Process).unwrap();
    node.apply(add("c", "b", 1), Durability::Process).unwrap();
    let e = node
        .apply(add("c", "c", 1), Durability::Process)
        .unwrap_err();
    assert!(matches!(e, NodeError::CartFull { max: 2, .. }), "{e}");
    // Existing lines can still grow, and a set of an existing line is fine.
    node.apply(add("c", "a", 1), Durability::Process).unwrap();
    let set_new = set("c", "z", 1);
    assert!(matches!(
        node.apply(set_new, Durability::Process),
        Err(NodeError::CartFull { .. })
    ));
    assert_eq!(lines(&node, "c"), vec![l("a", 2), l("b", 1)]);
}

#[test]
fn idempotent_retry_returns_the_first_answer_and_applies_once() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    let first = node
        .apply(with_key(add("c", "a", 2), "k1", 42), Durability::Fsync)
        .unwrap();
    node.apply(add("c", "b", 1), Durability::Fsync).unwrap();
    let retry = node
        .apply(with_key(add("c", "a", 2), "k1", 42), Durability::Fsync)
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.answer, first.answer, "the first answer");
    assert_eq!(lines(&node, "c"), vec![l("a", 2), l("b", 1)]);
    let e = node
        .apply(with_key(add("c", "a", 3), "k1", 43), Durability::Fsync)
        .unwrap_err();
    assert!(matches!(e, NodeError::IdempotencyMismatch(_)), "{e}");

    // Across a power failure (it was synced) and restart.
    let mut node = open(&s.crash(), &clock);
    let again = node
        .apply(with_key(add("c", "a", 2), "k1", 42), Durability::Fsync)
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.answer, first.answer);
    assert_eq!(lines(&node, "c"), vec![l("a", 2), l("b", 1)]);
}

#[test]
fn duplicate_keys_in_one_batch_apply_once() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    let out = node.apply_batch(
        vec![
            with_key(add("c", "a", 2), "k", 1),
            with_key(add("c", "a", 2), "k", 1),
        ],
        Durability::Fsync,
    );
    assert!(!out[0].as_ref().unwrap().replayed);
    assert!(out[1].as_ref().unwrap().replayed);
    assert_eq!(lines(&node, "c"), vec![l("a", 2)]);
}

#[test]
fn idempotency_records_expire_after_the_ttl() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut config = cfg();
    config.idempotency_ttl = Duration::from_secs(60);
    let mut node = Node::open(s.clone(), clock.clone(), config).unwrap();
    node.apply(with_key(add("c", "a", 1), "k", 7), Durability::Process)
        .unwrap();
    clock.advance(59_000);
    assert!(
        node.apply(with_key(add("c", "a", 1), "k", 7), Durability::Process)
            .unwrap()
            .replayed
    );
    assert_eq!(node.sweep_idempotency(100).unwrap(), 0);
    clock.advance(1_000);
    // Expired: the same key is a new request now.
    let r = node
        .apply(with_key(add("c", "a", 1), "k", 7), Durability::Process)
        .unwrap();
    assert!(!r.replayed);
    assert_eq!(lines(&node, "c"), vec![l("a", 2)]);
    clock.advance(60_000);
    assert_eq!(node.sweep_idempotency(100).unwrap(), 1);
    assert_eq!(s.get(Cf::Idempotency, b"k").unwrap(), None);
}

#[test]
fn a_batch_is_one_atomic_storage_write() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    s.sync().unwrap();
    let out = node.apply_batch(
        vec![
            add("c1", "a", 1),
            add("c1", "a", 2),
            req("empty", Op::Checkout),
            add("c2", "b", 3),
        ],
        Durability::Process,
    );
    assert!(
        matches!(out[2], Err(NodeError::EmptyCart(_))),
        "{:?}",
        out[2]
    );
    assert_eq!(s.unsynced_writes(), 1, "one batch for the whole group");
    assert_eq!(
        lines(&node, "c1"),
        vec![l("a", 3)],
        "writes to one cart chain"
    );
    assert_eq!(node.last_seq(), 3);
    assert_eq!(node.carts_stored(), 2);
    // Each accepted write has its delta in the log, keyed by sequence number, and the
    // deltas replay to the stored state (delta = state).
    let mut replay = std::collections::BTreeMap::<String, Cart>::new();
    let mut seqs = vec![];
    s.scan(Cf::Log, &[], &mut |k, v| {
        seqs.push(codec::decode_log_key(k).unwrap().1);
        let d = decode_delta_checked(v).unwrap();
        meridian_cart_store_core::cart::Lattice::merge(
            replay.entry(d.cart.clone()).or_default(),
            &d.delta,
        );
        true
    })
    .unwrap();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(replay["c1"].lines(), vec![l("a", 3)]);
    assert_eq!(replay["c2"].lines(), vec![l("b", 3)]);
}

#[test]
fn a_crash_loses_exactly_the_unsynced_writes() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    node.apply(add("c", "a", 1), Durability::Fsync).unwrap();
    node.apply(add("c", "b", 1), Durability::Process).unwrap();
    // A process crash keeps the unsynced write (it reached the OS)...
    let node2 = open(&s.reopen(), &clock);
    assert_eq!(lines(&node2, "c"), vec![l("a", 1), l("b", 1)]);
    assert_eq!(node2.last_seq(), 2);
    // ...a power failure does not, and the node resumes from the synced sequence.
    let mut node3 = open(&s.crash(), &clock);
    assert_eq!(lines(&node3, "c"), vec![l("a", 1)]);
    assert_eq!(node3.last_seq(), 1);
    node3.apply(add("c", "z", 1), Durability::Fsync).unwrap();
    assert_eq!(node3.last_seq(), 2);
}

#[test]
fn the_hlc_resumes_above_the_persisted_bound() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    node.apply(add("c", "a", 1), Durability::Fsync).unwrap();
    let issued = node.hlc().last();
    // The wall clock steps back 300 ms (within max offset) across the restart.
    clock.set(T0 - 300);
    let node = open(&s, &clock);
    assert!(node.hlc().now() > issued);
}

#[test]
fn startup_refuses_a_bound_too_far_ahead_unless_overridden() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    node.apply(add("c", "a", 1), Durability::Fsync).unwrap();
    clock.set(T0 - 3_600_000);
    let e = Node::open(s.clone(), clock.clone(), cfg()).unwrap_err();
    assert!(matches!(e, OpenError::Clock(_)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("3600000 ms ahead"), "{msg}");
    assert!(msg.contains("clock_bound_override"), "{msg}");
    let mut config = cfg();
    config.clock_bound_override = true;
    let node = Node::open(s, clock, config).unwrap();
    assert_eq!(lines(&node, "c"), vec![l("a", 1)]);
}

#[test]
fn a_store_of_another_node_is_refused() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    open(&s, &clock);
    let e = Node::open(s, clock, NodeConfig::new(ReplicaId(2))).unwrap_err();
    assert!(
        matches!(
            e,
            OpenError::WrongNode {
                found: 1,
                configured: 2
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("belongs to node_id 1"), "{e}");
}

#[test]
fn a_store_of_another_format_version_is_refused() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    open(&s, &clock);
    let mut b = Batch::new();
    b.put(Cf::Meta, codec::META_FORMAT, vec![9]);
    s.write(&b, Durability::Fsync).unwrap();
    let e = Node::open(s, clock, cfg()).unwrap_err();
    assert!(matches!(e, OpenError::FormatVersion { .. }), "{e}");
}

#[test]
fn a_corrupt_cart_is_an_error_for_that_cart_only() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    node.apply(add("good", "a", 1), Durability::Process)
        .unwrap();
    node.apply(add("bad", "a", 1), Durability::Process).unwrap();
    let mut bytes = s.get(Cf::Carts, b"bad").unwrap().unwrap();
    let last = bytes.len() - 1;
    bytes[1] ^= 0xff;
    bytes[last] ^= 0xff;
    bytes.truncate(last - 1);
    let mut b = Batch::new();
    b.put(Cf::Carts, b"bad".to_vec(), bytes);
    s.write(&b, Durability::Process).unwrap();
    let e = node.read("bad").unwrap_err();
    assert!(matches!(e, NodeError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("\"bad\""), "{e}");
    let e = node
        .apply(add("bad", "b", 1), Durability::Process)
        .unwrap_err();
    assert!(matches!(e, NodeError::Corrupt { .. }), "{e}");
    assert_eq!(lines(&node, "good"), vec![l("a", 1)]);
    node.apply(add("good", "b", 1), Durability::Process)
        .unwrap();
}

#[test]
fn the_idempotency_sweep_is_bounded_and_resumes() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut config = cfg();
    config.idempotency_ttl = Duration::from_secs(1);
    let mut node = Node::open(s.clone(), clock.clone(), config).unwrap();
    for i in 0..5 {
        node.apply(
            with_key(add("c", "a", 1), &format!("k{i}"), 1),
            Durability::Process,
        )
        .unwrap();
    }
    clock.advance(2_000);
    node.apply(with_key(add("c", "a", 1), "fresh", 1), Durability::Process)
        .unwrap();
    let mut deleted = vec![];
    for _ in 0..4 {
        deleted.push(node.sweep_idempotency(2).unwrap());
    }
    assert!(deleted.iter().all(|d| *d <= 2), "{deleted:?}");
    assert_eq!(deleted.iter().sum::<usize>(), 5, "{deleted:?}");
    assert!(s.get(Cf::Idempotency, b"fresh").unwrap().is_some());
}

/// A store whose writes fail (after the node has opened on it).
#[derive(Clone, Default)]
struct FailingStorage {
    inner: MemStorage,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Storage for FailingStorage {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(cf, key)
    }
    fn write(&self, b: &Batch, durability: Durability) -> Result<(), StorageError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StorageError::new(StorageErrorKind::Io, "no space left"));
        }
        self.inner.write(b, durability)
    }
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        self.inner.scan(cf, start, f)
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.inner.sync()
    }
}

#[test]
fn a_failed_commit_fails_every_write_of_the_batch_and_changes_nothing() {
    let s = FailingStorage::default();
    let clock = ManualClock::new(T0);
    let mut node = Node::open(s.clone(), clock, cfg()).unwrap();
    node.apply(add("c", "a", 1), Durability::Fsync).unwrap();
    node.apply(
        with_key(add("c", "old", 1), "old-key", 1),
        Durability::Fsync,
    )
    .unwrap();
    s.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let out = node.apply_batch(
        vec![
            with_key(add("c", "a", 1), "k", 1),
            // A replay of the first: it must not claim success for an uncommitted write.
            with_key(add("c", "a", 1), "k", 1),
            // A replay of a committed write still answers.
            with_key(add("c", "old", 1), "old-key", 1),
        ],
        Durability::Fsync,
    );
    assert!(matches!(out[0], Err(NodeError::Storage(_))), "{:?}", out[0]);
    assert!(matches!(out[1], Err(NodeError::Storage(_))), "{:?}", out[1]);
    assert!(out[2].as_ref().unwrap().replayed);
    assert_eq!(node.last_seq(), 2);
    s.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let r = node
        .apply(with_key(add("c", "a", 1), "k", 1), Durability::Fsync)
        .unwrap();
    assert!(!r.replayed, "the failed write left no idempotency record");
    assert_eq!(lines(&node, "c"), vec![l("a", 2), l("old", 1)]);
    assert_eq!(node.last_seq(), 3);
}

#[test]
fn the_delta_log_reads_back_in_order_from_any_position() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut node = open(&s, &clock);
    for i in 0..10u64 {
        node.apply(add(&format!("c{}", i % 3), "a", 1), Durability::Process)
            .unwrap();
    }
    let all = meridian_cart_store_core::read_log(&s, ReplicaId(1), 0, 100).unwrap();
    assert_eq!(
        all.iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(all.windows(2).all(|w| w[0].1.hlc < w[1].1.hlc), "HLC order");
    let page = meridian_cart_store_core::read_log(&s, ReplicaId(1), 4, 3).unwrap();
    assert_eq!(page.iter().map(|e| e.0).collect::<Vec<_>>(), vec![4, 5, 6]);
    assert_eq!(page[0].1.cart, "c0");
    assert!(meridian_cart_store_core::read_log(&s, ReplicaId(1), 11, 10)
        .unwrap()
        .is_empty());
    // A corrupt entry is an error, not a panic or a silent skip.
    let mut b = Batch::new();
    b.put(
        Cf::Log,
        codec::log_key(ReplicaId(1), 5).to_vec(),
        vec![1, 2, 3],
    );
    s.write(&b, Durability::Process).unwrap();
    let e = meridian_cart_store_core::read_log(&s, ReplicaId(1), 0, 100).unwrap_err();
    assert!(matches!(e, NodeError::CorruptLog { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("[00, 00, 00, 00, 00, 00, 00, 01, 00, 00, 00, 00, 00, 00, 00, 05]"),
        "{e}"
    );
}

#[test]
fn a_cart_that_would_outgrow_cart_bytes_max_is_refused_and_a_set_compacts_it() {
    let (s, clock) = (MemStorage::new(), ManualClock::new(T0));
    let mut config = cfg();
    config.cart_bytes_max = 300;
    let mut node = Node::open(s, clock, config).unwrap();
    let mut accepted = 0;
    let err = loop {
        match node.apply(add("c", "a", 1), Durability::Process) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1000, "never refused");
    };
    assert!(
        matches!(err, NodeError::CartTooLarge { max: 300, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("set the line"), "{err}");
    assert_eq!(
        lines(&node, "c"),
        vec![l("a", accepted)],
        "the refused add left no trace"
    );
    node.apply(set("c", "a", u64::from(accepted)), Durability::Process)
        .unwrap();
    node.apply(add("c", "a", 1), Durability::Process).unwrap();
    assert_eq!(lines(&node, "c"), vec![l("a", accepted + 1)]);
}
