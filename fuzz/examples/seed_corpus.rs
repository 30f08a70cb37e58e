//! Writes the committed seed corpus, `fuzz/corpus/<target>/`, from the valid values of
//! `meridian_fuzz::seeds`: each value's bincode encoding, and its JSON for a few, so that
//! both decoders start from real shapes. Rerun after a wire format change:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus
//! ```

use meridian_cart_store_core::codec::{self, DeltaRecord, IdempotencyRecord};
use meridian_cart_store_core::CausalToken;
use meridian_clocks::ReplicaId;
use meridian_fuzz::{encode, seeds};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Also write JSON for this many values of each target (the rest are bincode only).
const JSON_SEEDS_MAX: usize = 4;

fn write<T: Serialize>(dir: &Path, values: &[T]) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut n = 0;
    let mut put = |name: String, bytes: &[u8]| {
        n += 1;
        std::fs::write(dir.join(name), bytes)
    };
    for (i, v) in values.iter().enumerate() {
        put(format!("bincode-{i:02}"), &encode(v))?;
        if i < JSON_SEEDS_MAX {
            if let Ok(text) = serde_json::to_vec(v) {
                put(format!("json-{i:02}"), &text)?;
            }
        }
    }
    // Two and three values back to back: the operands of associativity.
    for (i, w) in values.windows(3).enumerate().step_by(2) {
        let pair = [encode(&w[0]), encode(&w[2])].concat();
        put(format!("pair-{i:02}"), &pair)?;
        let triple = [encode(&w[0]), encode(&w[1]), encode(&w[2])].concat();
        put(format!("triple-{i:02}"), &triple)?;
    }
    Ok(n)
}

/// Files `<prefix>-NN`, already encoded.
fn write_raw(
    dir: &Path,
    prefix: &str,
    values: impl IntoIterator<Item = Vec<u8>>,
) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut n = 0;
    for (i, bytes) in values.into_iter().enumerate() {
        std::fs::write(dir.join(format!("{prefix}-{i:02}")), bytes)?;
        n += 1;
    }
    Ok(n)
}

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let dir = |t: &str| root.join(t);
    let mut total = 0;
    total += write(&dir("crdt_gcounter"), &seeds::gcounters())?;
    total += write(&dir("crdt_pncounter"), &seeds::pncounters())?;
    total += write(&dir("crdt_gset"), &seeds::gsets())?;
    total += write(&dir("crdt_lww"), &seeds::lww_registers())?;
    total += write(&dir("crdt_mvreg"), &seeds::mv_registers())?;
    total += write(&dir("crdt_awset"), &seeds::awsets())?;
    total += write(&dir("crdt_awset").join("unit"), &seeds::awsets_of_unit())?;
    total += write(
        &dir("crdt_awset").join("delta_keyed"),
        &seeds::awsets_delta_keyed(),
    )?;
    total += write(
        &dir("crdt_awset").join("delta_keyed_u8"),
        &seeds::awsets_delta_keyed_u8(),
    )?;
    total += write(&dir("crdt_ormap"), &seeds::ormaps())?;
    total += write(&dir("crdt_ormap").join("nested"), &seeds::nested_ormaps())?;
    total += write(&dir("crdt_ormap").join("dotfun"), &seeds::dotfun_ormaps())?;
    total += write(&dir("crdt_cart"), &seeds::carts())?;
    total += write(&dir("crdt_snapshot"), &seeds::snapshots())?;
    total += write(&dir("clocks_hlc"), &seeds::timestamps())?;
    let texts: Vec<String> = seeds::timestamps().iter().map(|t| t.to_string()).collect();
    for (i, t) in texts.iter().enumerate() {
        std::fs::write(dir("clocks_hlc").join(format!("text-{i:02}")), t)?;
        total += 1;
    }
    total += write(&dir("clocks_wire").join("vclock"), &seeds::vector_clocks())?;
    total += write(&dir("clocks_wire").join("context"), &seeds::contexts())?;
    total += write(&dir("clocks_wire").join("dot"), &seeds::dots())?;
    total += write(
        &dir("clocks_wire").join("lamport"),
        &seeds::lamport_timestamps(),
    )?;
    total += write_raw(
        &dir("core_codec"),
        "cart",
        seeds::carts().iter().map(codec::encode_cart),
    )?;
    let deltas = seeds::carts()
        .into_iter()
        .zip(seeds::timestamps())
        .map(|(delta, hlc)| {
            codec::encode_delta(&DeltaRecord {
                cart: "alice".into(),
                hlc,
                delta,
                request_id: Some("req-1".into()),
                idempotency: None,
            })
        });
    total += write_raw(&dir("core_codec"), "delta", deltas)?;
    let records =
        [(200, &b"{}"[..]), (201, br#"{"lines":[]}"#), (409, b"")].map(|(status, body)| {
            codec::encode_idempotency(&IdempotencyRecord {
                created_ms: 1_700_000_000_000,
                fingerprint: codec::fnv1a64(&[b"POST", b"/carts/alice/items", body]),
                status,
                body: body.to_vec(),
            })
        });
    total += write_raw(&dir("core_codec"), "idempotency", records)?;
    total += write_raw(
        &dir("core_codec"),
        "u64",
        [0, 1, u64::MAX].map(|v| codec::encode_u64(v).to_vec()),
    )?;
    let tokens = [
        CausalToken::default(),
        CausalToken::single(ReplicaId(1), 1),
        CausalToken::single(ReplicaId(u64::MAX), u64::MAX),
        "v1:1=5,2=7,30=1".parse().expect("a valid token"),
    ];
    total += write_raw(
        &dir("core_token"),
        "token",
        tokens.iter().map(|t| t.to_string().into_bytes()),
    )?;
    total += write_raw(&dir("core_frame"), "frame", frames())?;
    println!("wrote {total} seed files under {}", root.display());
    Ok(())
}

/// Frame bodies (without the length prefix) of each message kind, with real deltas.
fn frames() -> Vec<Vec<u8>> {
    use meridian_cart_store_core::replication::wire::{encode_frame, Entry, Message};
    use meridian_clocks::HlcTimestamp;
    let hlc = HlcTimestamp::new(1_700_000_000_000, 0);
    let deltas = seeds::carts()
        .into_iter()
        .enumerate()
        .map(|(i, delta)| Entry {
            origin: ReplicaId(2),
            seq: i as u64 + 1,
            record: codec::encode_delta(&DeltaRecord {
                cart: format!("c{}", i % 2),
                hlc,
                delta,
                request_id: None,
                idempotency: None,
            }),
        })
        .collect();
    let progress = vec![(ReplicaId(1), 3), (ReplicaId(2), 5)];
    [
        Message::Hello {
            region: "peer".into(),
            node_id: ReplicaId(2),
            hlc,
            progress: progress.clone(),
            committed: 3,
        },
        Message::Ack {
            hlc,
            progress,
            committed: 3,
        },
        Message::Deltas {
            hlc,
            entries: deltas,
        },
    ]
    .iter()
    .map(|m| encode_frame(m)[4..].to_vec())
    .collect()
}
