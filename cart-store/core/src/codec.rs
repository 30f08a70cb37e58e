//! The on-disk formats: every value the node writes to [`Storage`](crate::Storage).
//!
//! Values are one format-version byte ([`FORMAT_VERSION`]) followed by bincode 2 (standard
//! config) of a serde type. Keys are raw bytes: cart ids and idempotency keys as UTF-8,
//! sequence numbers as big-endian `u64` (so byte order is numeric order). A format change is
//! deliberate: bump [`FORMAT_VERSION`], and the golden vectors below fail until updated.

use crate::cart::Cart;
use meridian_clocks::{HlcTimestamp, ReplicaId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The format version byte prefixed to every value.
pub const FORMAT_VERSION: u8 = 1;
/// The layout version stored under [`META_FORMAT`]: which keys exist and how they are
/// built. Layout 1 keyed the log by seq alone; layout 2 keys it by `(origin, seq)` and
/// stores per-origin progress. [`Node::open`](crate::Node::open) migrates 1 to 2.
pub const LAYOUT_VERSION: u8 = 2;
// Cart states and deltas are stored in the crdt's serde shape: a change there is a change
// of this format too.
const _: () = assert!(
    meridian_crdt::wire::FORMAT_VERSION == 1,
    "the crdt wire format changed: bump codec::FORMAT_VERSION and migrate stored carts"
);

/// Largest value the decoder accepts (the crdt's own decode limit).
pub const VALUE_BYTES_MAX: usize = meridian_crdt::wire::DECODE_BYTES_MAX;

/// Meta key: the layout version (one byte, [`LAYOUT_VERSION`]).
pub const META_FORMAT: &[u8] = b"format_version";
/// Meta key: the node id that owns the data directory (big-endian `u64`).
pub const META_NODE_ID: &[u8] = b"node_id";
/// Meta key: an upper bound on every HLC timestamp issued (packed, big-endian `u64`).
pub const META_HLC_BOUND: &[u8] = b"hlc_bound";
/// Meta key: the last local sequence number used (big-endian `u64`).
pub const META_SEQ: &[u8] = b"seq";
/// Meta key prefix: `progress/` + origin (big-endian `u64`) → the highest seq of that
/// origin applied here, contiguously (big-endian `u64`). Remote origins only.
pub const META_PROGRESS_PREFIX: &[u8] = b"progress/";

/// The meta key of `origin`'s progress.
pub fn progress_key(origin: ReplicaId) -> Vec<u8> {
    [META_PROGRESS_PREFIX, &origin.0.to_be_bytes()].concat()
}

/// A delta log key: origin then seq, both big-endian, so one origin's entries are
/// contiguous and in seq order.
pub fn log_key(origin: ReplicaId, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&origin.0.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Reads [`log_key`].
pub fn decode_log_key(bytes: &[u8]) -> Result<(ReplicaId, u64), CodecError> {
    if bytes.len() != 16 {
        return Err(CodecError::new(
            CodecErrorKind::Malformed,
            format!("delta log key: expected 16 bytes, found {}", bytes.len()),
        ));
    }
    let origin = decode_u64("delta log key origin", &bytes[..8])?;
    let seq = decode_u64("delta log key seq", &bytes[8..])?;
    Ok((ReplicaId(origin), seq))
}

/// Why a stored value could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecErrorKind {
    /// Written by another format version: a newer build, or not ours at all.
    Version,
    /// The bytes are not a value of the expected type (truncated, garbage, too long, or
    /// trailing bytes).
    Malformed,
    /// The value decoded but failed validation (a cart state or delta that breaks the
    /// crdt's invariants).
    Invalid,
}

/// A stored value that cannot be decoded: corruption, not a transient failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CodecError {
    kind: CodecErrorKind,
    message: String,
}

impl CodecError {
    fn new(kind: CodecErrorKind, message: String) -> Self {
        CodecError { kind, message }
    }

    /// What went wrong.
    pub fn kind(&self) -> CodecErrorKind {
        self.kind
    }
}

/// One entry of the delta log (keyed by origin and seq), as it is stored and replicated.
///
/// Two encodings: format version 1 (`cart`, `hlc`, `delta`), written when the write had no
/// request id and no idempotency key, and **delta format version 2**
/// ([`DELTA_FORMAT_VERSION`]), which adds both. Decoding reads either, so logs and peers of
/// the previous version stay readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaRecord {
    /// The cart the delta applies to.
    pub cart: String,
    /// When the write happened.
    pub hlc: HlcTimestamp,
    /// The delta: merged into any replica, it has the write's effect.
    pub delta: Cart,
    /// The HTTP request id of the write (`X-Request-Id`), so that its apply in another
    /// region is logged under the same id.
    pub request_id: Option<String>,
    /// The idempotency record the write stored, with its key: it replicates with the write,
    /// so a retry in another region replays the first answer.
    pub idempotency: Option<(String, IdempotencyRecord)>,
}

/// The version byte of a delta record with a request id or an idempotency record.
pub const DELTA_FORMAT_VERSION: u8 = 2;
/// Longest request id a delta record carries (the HTTP layer's limit).
pub const REQUEST_ID_BYTES_MAX: usize = 64;

/// Delta format version 1's shape.
#[derive(Serialize, Deserialize)]
struct DeltaV1 {
    cart: String,
    hlc: HlcTimestamp,
    delta: Cart,
}

/// Delta format version 2's shape.
#[derive(Serialize, Deserialize)]
struct DeltaV2 {
    cart: String,
    hlc: HlcTimestamp,
    delta: Cart,
    request_id: Option<String>,
    idempotency: Option<(String, IdempotencyRecord)>,
}

/// `true` for a request id a delta record may carry: 1–64 characters of
/// `[A-Za-z0-9._:-]` (the HTTP layer's rule), so a peer cannot forge log fields with it.
pub fn is_request_id(id: &str) -> bool {
    (1..=REQUEST_ID_BYTES_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Decodes a delta log entry and validates it: its delta, its request id and its
/// idempotency key.
pub fn decode_delta_checked(bytes: &[u8]) -> Result<DeltaRecord, CodecError> {
    let d = decode_delta(bytes)?;
    let invalid =
        |m: String| CodecError::new(CodecErrorKind::Invalid, format!("delta log entry: {m}"));
    meridian_crdt::wire::accept(d.delta.clone()).map_err(|e| invalid(e.to_string()))?;
    if let Some(id) = &d.request_id {
        if !is_request_id(id) {
            return Err(invalid(
                "request id is not 1-64 characters of [A-Za-z0-9._:-]".into(),
            ));
        }
    }
    if let Some((key, rec)) = &d.idempotency {
        crate::validate::IdempotencyKey::parse(key).map_err(|e| invalid(e.to_string()))?;
        serde_json::from_slice::<serde_json::Value>(&rec.body)
            .map_err(|e| invalid(format!("idempotency record body: {e}")))?;
    }
    Ok(d)
}

/// The first answer to a request that carried an `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// When it was stored (ms since the epoch); it expires after the configured TTL.
    pub created_ms: u64,
    /// FNV-1a of method, path and body: a retry must be the same request.
    pub fingerprint: u64,
    /// The HTTP status of the first answer.
    pub status: u16,
    /// The JSON body of the first answer.
    pub body: Vec<u8>,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(v, &mut out, bincode::config::standard())
        .expect("encoding to a Vec cannot fail");
    out
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or_else(|| {
        CodecError::new(CodecErrorKind::Malformed, format!("{what}: empty value"))
    })?;
    if version != FORMAT_VERSION {
        return Err(CodecError::new(
            CodecErrorKind::Version,
            format!("{what}: format version {version}, this build reads {FORMAT_VERSION}"),
        ));
    }
    let config = bincode::config::standard().with_limit::<VALUE_BYTES_MAX>();
    let (v, used) = bincode::serde::decode_from_slice(body, config)
        .map_err(|e| CodecError::new(CodecErrorKind::Malformed, format!("{what}: {e}")))?;
    if used != body.len() {
        return Err(CodecError::new(
            CodecErrorKind::Malformed,
            format!(
                "{what}: {} trailing bytes after the value",
                body.len() - used
            ),
        ));
    }
    Ok(v)
}

/// Encodes a cart state.
pub fn encode_cart(cart: &Cart) -> Vec<u8> {
    encode(cart)
}

/// Decodes a cart state.
pub fn decode_cart(bytes: &[u8]) -> Result<Cart, CodecError> {
    let cart: Cart = decode("cart state", bytes)?;
    meridian_crdt::wire::accept(cart)
        .map_err(|e| CodecError::new(CodecErrorKind::Invalid, format!("cart state: {e}")))
}

/// Encodes a delta log entry: format version 1 if it carries neither a request id nor an
/// idempotency record, else [`DELTA_FORMAT_VERSION`].
pub fn encode_delta(d: &DeltaRecord) -> Vec<u8> {
    if d.request_id.is_none() && d.idempotency.is_none() {
        return encode(&DeltaV1 {
            cart: d.cart.clone(),
            hlc: d.hlc,
            delta: d.delta.clone(),
        });
    }
    let mut out = vec![DELTA_FORMAT_VERSION];
    bincode::serde::encode_into_std_write(
        DeltaV2 {
            cart: d.cart.clone(),
            hlc: d.hlc,
            delta: d.delta.clone(),
            request_id: d.request_id.clone(),
            idempotency: d.idempotency.clone(),
        },
        &mut out,
        bincode::config::standard(),
    )
    .expect("encoding to a Vec cannot fail");
    out
}

/// Decodes a delta log entry of either version (not validated: see
/// [`decode_delta_checked`]).
pub fn decode_delta(bytes: &[u8]) -> Result<DeltaRecord, CodecError> {
    const WHAT: &str = "delta log entry";
    if bytes.first() == Some(&DELTA_FORMAT_VERSION) {
        let mut v1 = bytes.to_vec();
        // Same framing as every value, under its own version byte.
        v1[0] = FORMAT_VERSION;
        let d: DeltaV2 = decode(WHAT, &v1)?;
        return Ok(DeltaRecord {
            cart: d.cart,
            hlc: d.hlc,
            delta: d.delta,
            request_id: d.request_id,
            idempotency: d.idempotency,
        });
    }
    let d: DeltaV1 = decode(WHAT, bytes)?;
    Ok(DeltaRecord {
        cart: d.cart,
        hlc: d.hlc,
        delta: d.delta,
        request_id: None,
        idempotency: None,
    })
}

/// Encodes an idempotency record.
pub fn encode_idempotency(r: &IdempotencyRecord) -> Vec<u8> {
    encode(r)
}

/// Decodes an idempotency record.
pub fn decode_idempotency(bytes: &[u8]) -> Result<IdempotencyRecord, CodecError> {
    decode("idempotency record", bytes)
}

/// A big-endian `u64`: delta log keys and numeric meta values.
pub fn encode_u64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Reads [`encode_u64`].
pub fn decode_u64(what: &str, bytes: &[u8]) -> Result<u64, CodecError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        CodecError::new(
            CodecErrorKind::Malformed,
            format!("{what}: expected 8 bytes, found {}", bytes.len()),
        )
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// FNV-1a, 64 bits: a hash that is stable across builds and platforms (unlike std's).
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separator so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_testkit::hex;

    #[test]
    fn golden_idempotency_record() {
        let r = IdempotencyRecord {
            created_ms: 1_700_000_000_000,
            fingerprint: 0x0102_0304_0506_0708,
            status: 200,
            body: b"{}".to_vec(),
        };
        let bytes = encode_idempotency(&r);
        assert_eq!(
            hex(&bytes),
            "01fd0068e5cf8b010000fd0807060504030201c8027b7d"
        );
        assert_eq!(decode_idempotency(&bytes).unwrap(), r);
    }

    #[test]
    fn golden_keys_and_hash() {
        assert_eq!(hex(&encode_u64(258)), "0000000000000102");
        assert_eq!(
            hex(&log_key(ReplicaId(3), 258)),
            "00000000000000030000000000000102"
        );
        assert_eq!(
            decode_log_key(&log_key(ReplicaId(3), 258)).unwrap(),
            (ReplicaId(3), 258)
        );
        assert!(decode_log_key(&[0; 8]).is_err());
        assert_eq!(
            hex(&progress_key(ReplicaId(1))),
            "70726f67726573732f0000000000000001"
        );
        assert_eq!(decode_u64("seq", &encode_u64(u64::MAX)).unwrap(), u64::MAX);
        assert_eq!(
            fnv1a64(&[b"POST", b"/carts/a/items"]),
            0xcadc_dea4_16bf_e998
        );
        assert_ne!(fnv1a64(&[b"ab", b"c"]), fnv1a64(&[b"a", b"bc"]));
    }

    #[test]
    fn cart_and_delta_round_trip() {
        let mut cart = Cart::default();
        let delta = cart.add(ReplicaId(7), "sku-1", 3).unwrap();
        assert_eq!(decode_cart(&encode_cart(&cart)).unwrap(), cart);
        let rec = DeltaRecord {
            cart: "c1".into(),
            hlc: HlcTimestamp::new(5, 1),
            delta: delta.clone(),
            request_id: None,
            idempotency: None,
        };
        let v1 = encode_delta(&rec);
        assert_eq!(
            v1[0], 1,
            "nothing extra: version 1, readable by older nodes"
        );
        assert_eq!(decode_delta(&v1).unwrap(), rec);
        let rec2 = DeltaRecord {
            request_id: Some("req-1".into()),
            idempotency: Some((
                "key-1".into(),
                IdempotencyRecord {
                    created_ms: 9,
                    fingerprint: 3,
                    status: 200,
                    body: b"{}".to_vec(),
                },
            )),
            ..rec
        };
        let v2 = encode_delta(&rec2);
        assert_eq!(v2[0], DELTA_FORMAT_VERSION);
        assert_eq!(decode_delta_checked(&v2).unwrap(), rec2);
    }

    #[test]
    fn golden_delta_v2_and_hostile_extras() {
        let rec = DeltaRecord {
            cart: "c".into(),
            hlc: HlcTimestamp::new(5, 1),
            delta: Cart::default(),
            request_id: Some("r".into()),
            idempotency: None,
        };
        let bytes = encode_delta(&rec);
        assert_eq!(hex(&bytes), GOLDEN_DELTA_V2);
        assert_eq!(decode_delta(&bytes).unwrap(), rec);
        // A peer's request id that could forge a log line, and a bad idempotency key.
        let forged = DeltaRecord {
            request_id: Some("x request_id=evil\n".into()),
            ..rec.clone()
        };
        let err = decode_delta_checked(&encode_delta(&forged)).unwrap_err();
        assert_eq!(err.kind(), CodecErrorKind::Invalid, "{err}");
        let bad_key = DeltaRecord {
            idempotency: Some((
                String::new(),
                IdempotencyRecord {
                    created_ms: 0,
                    fingerprint: 0,
                    status: 200,
                    body: b"{}".to_vec(),
                },
            )),
            ..rec
        };
        let err = decode_delta_checked(&encode_delta(&bad_key)).unwrap_err();
        assert_eq!(err.kind(), CodecErrorKind::Invalid, "{err}");
    }

    const GOLDEN_DELTA_V2: &str = "020163fc0100050000000001017200";

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let mut cart = Cart::default();
        cart.add(ReplicaId(7), "sku-1", 3).unwrap();
        let good = encode_cart(&cart);
        use CodecErrorKind::*;
        let cases: Vec<(Vec<u8>, CodecErrorKind, &str)> = vec![
            (vec![], Malformed, "empty value"),
            (vec![9, 0, 0], Version, "format version 9"),
            (
                [good.clone(), vec![0]].concat(),
                Malformed,
                "trailing bytes",
            ),
            (good[..good.len() - 2].to_vec(), Malformed, "cart state"),
            (
                vec![1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                Malformed,
                "cart state",
            ),
        ];
        for (bytes, kind, want) in cases {
            let err = decode_cart(&bytes).unwrap_err();
            assert_eq!(err.kind(), kind, "{err}");
            assert!(
                err.to_string().contains(want),
                "{err:?} should contain {want:?}"
            );
        }
        assert!(decode_u64("seq", &[1, 2])
            .unwrap_err()
            .to_string()
            .contains("8 bytes"));
    }
}
