//! Compaction's cost and payoff on three replicas wired by hand (no faults: the seeded
//! simulation in `replication_sim` checks correctness under faults): a hot cart keeps
//! getting adds from every region; with compaction it stays small, and so does what each
//! write costs the storage engine, since every write rewrites the whole cart.
//!
//! `cargo test -p meridian-cart-store-core --test compaction -- --nocapture` prints the
//! figures.

use meridian_cart_store_core::{
    codec, read_cart, CartId, Durability, MemStorage, Node, NodeConfig, Replica, ReplicationConfig,
    WriteRequest,
};
use meridian_clocks::{ManualClock, ReplicaId};
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000_000;
const REGIONS: [&str; 3] = ["virginia", "frankfurt", "tokyo"];
const ADDS: usize = 6_000;
const SKUS: usize = 4;

type R = Replica<MemStorage, ManualClock>;

fn cluster(compaction: Duration, now: Instant) -> (Vec<R>, ManualClock) {
    let clock = ManualClock::new(T0);
    let replicas = (0..3)
        .map(|i| {
            let node = Node::open(
                MemStorage::new(),
                clock.clone(),
                NodeConfig::new(ReplicaId(i as u64 + 1)),
            )
            .unwrap();
            let peers = (0..3)
                .filter(|j| *j != i)
                .map(|j| REGIONS[j].to_owned())
                .collect();
            let mut config = ReplicationConfig::new(REGIONS[i], peers, Durability::Fsync);
            config.compaction_interval = compaction;
            let mut r = Replica::new(node, config, now);
            for (j, region) in REGIONS.iter().enumerate() {
                if j != i {
                    r.handle_connect(now, region);
                }
            }
            r
        })
        .collect();
    (replicas, clock)
}

/// One round: every replica runs its timers and commits, and what it transmits is
/// delivered at once.
fn round(rs: &mut [R], clock: &ManualClock, now: &mut Instant) {
    *now += Duration::from_millis(10);
    clock.advance(10);
    for i in 0..rs.len() {
        rs[i].handle_timeout(*now);
        if rs[i].wants_commit() {
            rs[i].commit(*now, vec![]);
        }
        let from = rs[i].config().region.clone();
        let mut out = Vec::new();
        while let Some(t) = rs[i].poll_transmit(*now) {
            out.push(t);
        }
        for t in out {
            let to = REGIONS.iter().position(|r| *r == t.to).unwrap();
            rs[to].handle_message(*now, &from, t.message).unwrap();
        }
    }
}

struct Figures {
    bytes_per_write: f64,
    cart_bytes: usize,
    entries: usize,
}

fn run(compaction: Duration) -> Figures {
    let mut now = Instant::now();
    let (mut rs, clock) = cluster(compaction, now);
    let cart = "hot";
    for i in 0..ADDS {
        let sku = format!("s{}", i % SKUS);
        let r = &mut rs[i % 3];
        let res = r.commit(now, vec![WriteRequest::add(cart, &sku, 1).unwrap()]);
        res[0].as_ref().expect("every add is accepted");
        if i % 6 == 5 {
            round(&mut rs, &clock, &mut now);
        }
    }
    for _ in 0..100 {
        round(&mut rs, &clock, &mut now);
    }
    let id = CartId::parse(cart).unwrap();
    let state = read_cart(rs[0].node().storage(), &id).unwrap();
    for r in &rs[1..] {
        assert_eq!(read_cart(r.node().storage(), &id).unwrap(), state);
    }
    let per_sku = ADDS / SKUS;
    for s in 0..SKUS {
        assert_eq!(
            rs[0].node().read(cart).unwrap().lines[s].quantity as usize,
            per_sku
        );
    }
    // Every write applied here, its own and the other regions' (each rewrites the cart).
    let writes: u64 = rs[0].node().progress().iter().map(|(_, s)| s).sum();
    Figures {
        bytes_per_write: rs[0].node().bytes_written() as f64 / writes as f64,
        cart_bytes: codec::encode_cart(&state).len(),
        entries: (0..SKUS)
            .map(|s| state.entries(&format!("s{s}")).len())
            .sum(),
    }
}

#[test]
fn compaction_keeps_a_hot_cart_and_its_writes_small() {
    let off = run(Duration::ZERO);
    let on = run(Duration::from_millis(50));
    eprintln!(
        "{ADDS} adds over {SKUS} skus of one cart from 3 regions: without compaction {} entries, \
         {} bytes stored, {:.0} bytes written per write applied at virginia; with compaction {} entries, \
         {} bytes, {:.0} bytes per write (its own compaction writes included): {:.1}x less",
        off.entries,
        off.cart_bytes,
        off.bytes_per_write,
        on.entries,
        on.cart_bytes,
        on.bytes_per_write,
        off.bytes_per_write / on.bytes_per_write
    );
    assert_eq!(off.entries, ADDS);
    // At most `compaction_line_adds_min` (8) of a region's adds per line wait uncompacted.
    assert!(on.entries <= 3 * SKUS * 8, "{} entries", on.entries);
    assert!(on.bytes_per_write * 5.0 < off.bytes_per_write);
}
