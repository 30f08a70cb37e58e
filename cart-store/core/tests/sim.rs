//! Seeded simulation of one node over `MemStorage`: random batches of random writes, some
//! synced and some not, with power failures and process crashes in between. After every
//! step the node must agree with a plain reference model, and after a power failure with the
//! model as of the last sync. Some requests carry idempotency keys from a small pool, so
//! retries, misuses and keys lost in a crash all occur. A failure names its seed; `MERIDIAN_SEED=n` replays one seed.

use meridian_cart_store_core::{
    CartId, Durability, IdempotencyKey, Increment, MemStorage, Node, NodeConfig, NodeError, Op,
    Quantity, Sku, WriteRequest,
};
use meridian_clocks::{ManualClock, ReplicaId};
use meridian_testkit::SplitMix64 as Rng;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
struct Model {
    carts: BTreeMap<String, BTreeMap<String, u32>>,
    /// Idempotency key → fingerprint of the request that used it.
    keys: BTreeMap<String, u64>,
}

const CARTS: u64 = 4;
const SKUS: u64 = 4;
const LINES_MAX: usize = 3;

fn random_op(rng: &mut Rng) -> WriteRequest {
    let cart = CartId::parse(&format!("c{}", rng.below(CARTS))).unwrap();
    let sku = Sku::parse(&format!("s{}", rng.below(SKUS))).unwrap();
    let op = match rng.below(10) {
        0..=3 => Op::Add {
            sku,
            quantity: Increment::new(1 + rng.below(3)).unwrap(),
        },
        4 | 5 => Op::Set {
            sku,
            quantity: Quantity::new(rng.below(4)).unwrap(),
        },
        6 => Op::Remove { sku },
        7 => Op::Clear,
        _ => Op::Checkout,
    };
    let req = WriteRequest::new(cart, op);
    if rng.below(3) == 0 {
        // Same key, usually the same request (a retry), sometimes another (a misuse).
        let key = IdempotencyKey::parse(&format!("k{}", rng.below(3))).unwrap();
        req.with_idempotency(key, rng.below(2))
    } else {
        req
    }
}

/// Applies `req` to the model; `Ok(true)` for a replay, `Err` when the node must refuse it.
fn model_apply(m: &mut Model, req: &WriteRequest) -> Result<bool, &'static str> {
    if let Some(idem) = &req.idempotency {
        match m.keys.get(idem.key.as_str()) {
            Some(f) if *f == idem.fingerprint => return Ok(true),
            Some(_) => return Err("mismatch"),
            None => {}
        }
    }
    model_apply_op(&mut m.carts, req)?;
    if let Some(idem) = &req.idempotency {
        m.keys
            .insert(idem.key.as_str().to_owned(), idem.fingerprint);
    }
    Ok(false)
}

fn model_apply_op(
    carts: &mut BTreeMap<String, BTreeMap<String, u32>>,
    req: &WriteRequest,
) -> Result<(), &'static str> {
    let cart = carts.entry(req.cart.to_string()).or_default();
    let full = |cart: &BTreeMap<String, u32>, sku: &str| {
        !cart.contains_key(sku) && cart.len() >= LINES_MAX
    };
    match &req.op {
        Op::Add { sku, quantity } => {
            if full(cart, sku.as_str()) {
                return Err("full");
            }
            *cart.entry(sku.to_string()).or_default() += quantity.get();
        }
        Op::Set { sku, quantity } => {
            if quantity.get() == 0 {
                cart.remove(sku.as_str());
            } else {
                if full(cart, sku.as_str()) {
                    return Err("full");
                }
                cart.insert(sku.to_string(), quantity.get());
            }
        }
        Op::Remove { sku } => {
            cart.remove(sku.as_str());
        }
        Op::Clear => cart.clear(),
        Op::Checkout => {
            if cart.is_empty() {
                return Err("empty");
            }
            cart.clear();
        }
        // Changes no quantity.
        Op::Compact { .. } => {}
    }
    Ok(())
}

fn check(node: &Node<MemStorage, ManualClock>, model: &Model, seed: u64, step: usize) {
    for c in 0..CARTS {
        let cart = format!("c{c}");
        let got: BTreeMap<String, u32> = node
            .read(&cart)
            .unwrap()
            .lines
            .into_iter()
            .map(|l| (l.sku, l.quantity))
            .collect();
        let want = model.carts.get(&cart).cloned().unwrap_or_default();
        assert_eq!(
            got,
            want,
            "{}: step {step}, cart {cart}",
            meridian_testkit::replay("node sim", seed)
        );
    }
}

fn run(seed: u64) {
    let mut rng = Rng::new(seed);
    let clock = ManualClock::new(1_700_000_000_000);
    let mut config = NodeConfig::new(ReplicaId(1));
    config.cart_lines_max = LINES_MAX;
    let mut storage = MemStorage::new();
    let mut node = Node::open(storage.clone(), clock.clone(), config.clone()).unwrap();
    let mut model = Model::default();
    let mut durable = Model::default();
    for step in 0..60 {
        clock.advance(rng.below(5));
        let trace = std::env::var("SIM_TRACE").is_ok();
        match rng.below(12) {
            0 => {
                // Power failure: only synced batches remain.
                if trace {
                    eprintln!("step {step}: power failure");
                }
                storage = storage.crash();
                node = Node::open(storage.clone(), clock.clone(), config.clone()).unwrap();
                model = durable.clone();
            }
            1 => {
                // Process crash: everything written remains.
                if trace {
                    eprintln!("step {step}: process crash");
                }
                storage = storage.reopen();
                node = Node::open(storage.clone(), clock.clone(), config.clone()).unwrap();
                // Opening syncs what survived, so replication never ships a write that a
                // later power failure could take back.
                assert_eq!(storage.unsynced_writes(), 0, "open syncs");
                durable = model.clone();
            }
            _ => {
                let n = 1 + rng.below(6) as usize;
                let reqs: Vec<WriteRequest> = (0..n).map(|_| random_op(&mut rng)).collect();
                let sync = rng.below(2) == 0;
                let durability = if sync {
                    Durability::Fsync
                } else {
                    Durability::Process
                };
                let out = node.apply_batch(reqs.clone(), durability);
                if trace {
                    eprintln!("step {step}: sync={sync}");
                    for (r, o) in reqs.iter().zip(&out) {
                        eprintln!(
                            "   {} {:?} -> {:?}",
                            r.cart,
                            r.op,
                            o.as_ref().map(|x| &x.answer)
                        );
                    }
                }
                for (i, (req, res)) in reqs.iter().zip(&out).enumerate() {
                    let want = model_apply(&mut model, req);
                    match (want, res) {
                        (Ok(replay), Ok(r)) if r.replayed == replay => {}
                        (Err("mismatch"), Err(NodeError::IdempotencyMismatch(_))) => {}
                        (Err("full"), Err(NodeError::CartFull { .. }))
                        | (Err("empty"), Err(NodeError::EmptyCart(_))) => {}
                        (w, r) => panic!(
                            "{}: step {step}, request {i} {req:?}: model {w:?}, node {r:?}",
                            meridian_testkit::replay("node sim", seed)
                        ),
                    }
                }
                // A synced commit makes everything before it durable too (as a WAL fsync
                // does); a batch with nothing to commit (refusals, replays, no-ops without
                // a key) syncs nothing, and then earlier unsynced writes stay unsynced.
                if storage.unsynced_writes() == 0 {
                    durable = model.clone();
                }
            }
        }
        check(&node, &model, seed, step);
    }
}

#[test]
fn node_agrees_with_the_model_through_crashes() {
    for seed in meridian_testkit::seeds("node sim", 0..300) {
        run(seed);
    }
}
