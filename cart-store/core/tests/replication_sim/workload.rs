//! Client operations: adds, sets, removes, clears and checkouts on a few carts and skus,
//! some with idempotency keys, and retries of keyed requests (same key, same request).

use meridian_cart_store_core::{
    CartId, IdempotencyKey, Increment, Op, Quantity, Sku, WriteRequest,
};
use meridian_testkit::SplitMix64 as Rng;

pub const CARTS: u64 = 3;
pub const SKUS: u64 = 4;
/// Most keyed requests remembered for retries.
const KEYED_MAX: usize = 64;

pub fn cart_name(c: u64) -> String {
    format!("c{c}")
}

/// The client side: what was sent with a key, so it can be retried.
#[derive(Debug, Default)]
pub struct Workload {
    next_key: u64,
    /// `(node, request)` of keyed requests sent.
    keyed: Vec<(usize, WriteRequest)>,
}

impl Workload {
    /// The next request for `node`: usually new, sometimes a retry of an earlier keyed one
    /// (at the same node, where the key is known, or at another).
    pub fn next(&mut self, rng: &mut Rng, node: usize, nodes: usize) -> (usize, WriteRequest) {
        if !self.keyed.is_empty() && rng.chance(0.1) {
            let (first, req) = self.keyed[rng.below(self.keyed.len() as u64) as usize].clone();
            let at = if rng.chance(0.8) {
                first
            } else {
                rng.below(nodes as u64) as usize
            };
            return (at, req);
        }
        let req = random_request(rng);
        if !rng.chance(0.3) {
            return (node, req);
        }
        self.next_key += 1;
        let key = IdempotencyKey::parse(&format!("k{}", self.next_key)).expect("valid key");
        let req = req.with_idempotency(key, self.next_key);
        if self.keyed.len() >= KEYED_MAX {
            self.keyed.remove(0);
        }
        self.keyed.push((node, req.clone()));
        (node, req)
    }
}

fn random_request(rng: &mut Rng) -> WriteRequest {
    let cart = CartId::parse(&cart_name(rng.below(CARTS))).expect("valid cart");
    let sku = Sku::parse(&format!("s{}", rng.below(SKUS))).expect("valid sku");
    let op = match rng.below(20) {
        0..=7 => Op::Add {
            sku,
            quantity: Increment::new(1 + rng.below(3)).expect("valid increment"),
        },
        8..=11 => Op::Set {
            sku,
            quantity: Quantity::new(rng.below(5)).expect("valid quantity"),
        },
        12..=14 => Op::Remove { sku },
        15 | 16 => Op::Clear,
        _ => Op::Checkout,
    };
    WriteRequest::new(cart, op)
}
