//! Encoded sizes against the peer crate (not timed): the `AwSet` of 10k elements added
//! round robin by 3 replicas, in bincode (`config::standard()`), as `crdts::Orswot` and as
//! Meridian's own and delta-keyed forms. The bench `crdt` prints the same figures.
//!
//! Run: `cargo test -p meridian --test sizes -- --nocapture`.

use crdts::{CmRDT, CvRDT};
use meridian::clocks::ReplicaId;
use meridian::crdt::{AwSet, DeltaKeyed, Lattice};

fn bincode_len<T: serde::Serialize>(v: &T) -> usize {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .expect("encode")
        .len()
}

#[test]
fn awset_10k_delta_keyed_is_at_most_a_third_of_orswot() {
    const ELEMENTS: u64 = 10_000;
    const REPLICAS: u64 = 3;
    let mut ours: Vec<AwSet<u64>> = vec![AwSet::new(); REPLICAS as usize];
    let mut theirs: Vec<crdts::Orswot<u64, u64>> = vec![Default::default(); REPLICAS as usize];
    for x in 0..ELEMENTS {
        let r = (x % REPLICAS) as usize;
        ours[r].add(ReplicaId(r as u64 + 1), x).expect("fresh dot");
        let ctx = theirs[r].read_ctx().derive_add_ctx(r as u64 + 1);
        let op = theirs[r].add(x, ctx);
        theirs[r].apply(op);
    }
    let (mut o, mut t) = (AwSet::new(), crdts::Orswot::default());
    for r in 0..REPLICAS as usize {
        o.merge(&ours[r]);
        t.merge(theirs[r].clone());
    }
    assert_eq!(o.len(), t.read().val.len());
    let (own, keyed, orswot) = (
        bincode_len(&o),
        bincode_len(&DeltaKeyed(&o)),
        bincode_len(&t),
    );
    println!(
        "awset 10k: AwSet {own} B ({:.3}), DeltaKeyed<AwSet> {keyed} B ({:.3}), crdts::Orswot {orswot} B",
        own as f64 / orswot as f64,
        keyed as f64 / orswot as f64
    );
    assert!(keyed * 3 <= orswot, "{keyed} B vs {orswot} B");
    assert!(keyed < own);
}
