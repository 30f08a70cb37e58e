//! The cost of one local write without HTTP: read and decode the cart, apply the add,
//! encode the state and delta, and commit one batch — over `MemStorage` and RocksDB
//! (WAL written, not fsynced: the default durability), singly and in groups of 64.
//!
//! Every fourth write to a line is a `set`, which drops the line's observed add dots: carts
//! stay at their realistic size (7 lines of a few dots) however long criterion runs. With
//! adds only, every add keeps its own dot and a cart grows with the run, which measures
//! the cart's growth rather than the write path (see the crdt's notes on add coalescing).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use meridian_cart_store::{
    Durability, MemStorage, Node, NodeConfig, RocksStorage, Storage, WriteRequest,
};
use meridian_clocks::{ReplicaId, SystemClock};

const CARTS: u64 = 1_000;

fn add(i: u64) -> WriteRequest {
    let (cart, sku) = (format!("cart-{}", i % CARTS), format!("sku-{}", i % 7));
    let req = if (i / (CARTS * 7)) % 4 == 3 {
        WriteRequest::set(&cart, &sku, 3)
    } else {
        WriteRequest::add(&cart, &sku, 1)
    };
    req.expect("valid ids")
}

fn bench_node<S: Storage>(c: &mut Criterion, name: &str, storage: S) {
    let mut node = Node::open(storage, SystemClock, NodeConfig::new(ReplicaId(1))).unwrap();
    let mut i = 0u64;
    c.bench_function(&format!("write_path/{name}/single"), |b| {
        b.iter(|| {
            i += 1;
            node.apply(add(i), Durability::Process).unwrap()
        })
    });
    c.bench_function(&format!("write_path/{name}/group_of_64"), |b| {
        b.iter_batched(
            || {
                (0..64)
                    .map(|_| {
                        i += 1;
                        add(i)
                    })
                    .collect::<Vec<_>>()
            },
            |reqs| node.apply_batch(reqs, Durability::Process),
            BatchSize::SmallInput,
        )
    });
}

fn write_path(c: &mut Criterion) {
    bench_node(c, "mem", MemStorage::new());
    let dir = tempfile::tempdir().unwrap();
    bench_node(c, "rocksdb", RocksStorage::open(dir.path()).unwrap());
}

criterion_group!(benches, write_path);
criterion_main!(benches);
