//! The replication protocol's messages and their frames: the one boundary where bytes from
//! another region enter.
//!
//! A frame is a big-endian `u32` length, then the body: a big-endian `u16`
//! [`PROTOCOL_VERSION`] followed by one [`Message`] in bincode 2 (standard config). A frame
//! whose length passes [`FRAME_BYTES_MAX`], whose version differs, or whose body does not
//! decode exactly is refused with a [`FrameError`]; the driver then closes the connection
//! with the reason logged, and the node keeps serving.
//!
//! A [`Entry`] carries a delta log value exactly as the origin stored it (see
//! [`codec::encode_delta`](crate::codec::encode_delta)), so forwarding costs no re-encoding;
//! the receiver decodes it with a size limit and validates the delta
//! ([`meridian_crdt::wire::accept`]) before anything is merged.

use meridian_clocks::{HlcTimestamp, ReplicaId};
use serde::{Deserialize, Serialize};

/// The protocol version every frame carries. A change to [`Message`] bumps it.
pub const PROTOCOL_VERSION: u16 = 2;
/// Largest frame body (version and message) accepted: 4 MiB.
pub const FRAME_BYTES_MAX: usize = 4 << 20;
/// Most entries in one [`Message::Deltas`].
pub const ENTRIES_MAX: usize = 4096;
/// Most `(origin, seq)` pairs in one progress vector.
pub const PROGRESS_MAX: usize = 256;
/// Longest region name.
pub const REGION_BYTES_MAX: usize = 253;
/// Most tree nodes in one [`Message::AeDigests`] or [`Message::AeDiffer`]: the leaf count.
pub const AE_NODES_MAX: usize = crate::digest::LEAVES;
/// Most carts in one [`Message::AeCarts`].
pub const AE_CARTS_MAX: usize = 4096;

/// Per-origin progress: for each origin node, the highest seq through which its writes are
/// applied, contiguously. Sorted by origin, no duplicates.
pub type Progress = Vec<(ReplicaId, u64)>;

/// One delta of one origin, as its log stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The node that made the write.
    pub origin: ReplicaId,
    /// The origin's sequence number for it (contiguous from 1).
    pub seq: u64,
    /// The encoded [`DeltaRecord`](crate::codec::DeltaRecord).
    pub record: Vec<u8>,
}

/// A replication message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The first message on a new connection, each way: who the sender is and what it has
    /// durably applied. The receiver resumes sending from `progress`.
    Hello {
        /// The sender's region (must match its certificate's name).
        region: String,
        /// The sender's node id.
        node_id: ReplicaId,
        /// The sender's clock when it sent this.
        hlc: HlcTimestamp,
        /// The sender's durable per-origin progress.
        progress: Progress,
        /// The sender's last committed own seq, as in [`Message::Ack`].
        committed: u64,
    },
    /// Deltas, in seq order per origin.
    Deltas {
        /// The sender's clock when it sent this.
        hlc: HlcTimestamp,
        /// The entries.
        entries: Vec<Entry>,
    },
    /// The sender's durable per-origin progress: applied and committed, never merely
    /// received.
    Ack {
        /// The sender's clock when it sent this.
        hlc: HlcTimestamp,
        /// The sender's durable per-origin progress.
        progress: Progress,
        /// The sender's last committed own seq when it sent this: every write it makes
        /// later (seq above this) has observed at least `progress`. Causal stability is
        /// computed from it.
        committed: u64,
    },
    /// Anti-entropy, from the node repairing a peer: its digests of some nodes of one level
    /// of its [`DigestTree`](crate::digest::DigestTree). Level 0 (the root) opens a session.
    AeDigests {
        /// The sender's clock when it sent this.
        hlc: HlcTimestamp,
        /// Names the session (one comparison and its repair).
        session: u64,
        /// The tree level, 0 (root) to `LEVELS - 1` (leaves).
        level: u8,
        /// `(index, digest)` per node, indexes increasing.
        nodes: Vec<(u32, u64)>,
    },
    /// Anti-entropy, from the node being repaired: which of the nodes just compared differ.
    AeDiffer {
        /// The sender's clock when it sent this.
        hlc: HlcTimestamp,
        /// The session.
        session: u64,
        /// The level compared.
        level: u8,
        /// The indexes whose digests differ and where the sender holds carts, increasing:
        /// to descend into.
        nodes: Vec<u32>,
        /// The indexes whose digests differ and where the sender holds no cart,
        /// increasing: to ship whole, without descending.
        empty: Vec<u32>,
    },
    /// Anti-entropy: whole cart states of the ranges that differ, numbered from 0 per
    /// session.
    AeCarts {
        /// The sender's clock when it sent this.
        hlc: HlcTimestamp,
        /// The session.
        session: u64,
        /// This chunk's number.
        chunk: u32,
        /// `(cart id, encoded cart state)`, as the sender stores them.
        carts: Vec<(String, Vec<u8>)>,
    },
    /// Anti-entropy: every differing range has been shipped in `chunks` chunks. `progress`
    /// is the sender's durable progress when the comparison began: every cart it holds
    /// reflects at least that much, so once the receiver has merged them all, it has too.
    AeDone {
        /// The sender's clock when it sent this.
        hlc: HlcTimestamp,
        /// The session.
        session: u64,
        /// How many chunks were sent.
        chunks: u32,
        /// The sender's durable progress at the session's start.
        progress: Progress,
    },
    /// Anti-entropy: another peer is repairing this node already; try later.
    AeBusy {
        /// The sender's clock when it sent this.
        hlc: HlcTimestamp,
        /// The session refused.
        session: u64,
    },
    /// Anti-entropy: the receiver has applied every chunk before `chunks`.
    AeAck {
        /// The sender's clock when it sent this.
        hlc: HlcTimestamp,
        /// The session.
        session: u64,
        /// Chunks applied, counted from the session's start.
        chunks: u32,
    },
}

impl Message {
    /// The sender's clock reading this message carries.
    pub fn hlc(&self) -> HlcTimestamp {
        match self {
            Message::Hello { hlc, .. }
            | Message::Deltas { hlc, .. }
            | Message::Ack { hlc, .. }
            | Message::AeDigests { hlc, .. }
            | Message::AeDiffer { hlc, .. }
            | Message::AeCarts { hlc, .. }
            | Message::AeDone { hlc, .. }
            | Message::AeBusy { hlc, .. }
            | Message::AeAck { hlc, .. } => *hlc,
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Deltas { .. } => "deltas",
            Message::Ack { .. } => "ack",
            Message::AeDigests { .. } => "ae_digests",
            Message::AeDiffer { .. } => "ae_differ",
            Message::AeCarts { .. } => "ae_carts",
            Message::AeDone { .. } => "ae_done",
            Message::AeBusy { .. } => "ae_busy",
            Message::AeAck { .. } => "ae_ack",
        }
    }
}

/// Why a frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameErrorKind {
    /// The length prefix is larger than [`FRAME_BYTES_MAX`].
    TooLarge,
    /// Another protocol version.
    Version,
    /// The body is not a message (truncated, garbage, trailing bytes).
    Malformed,
    /// The message decoded but breaks a limit or a rule (too many entries, unsorted
    /// progress, an overlong region name).
    Invalid,
}

/// A frame that was refused; the message says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("replication frame refused: {message}")]
pub struct FrameError {
    kind: FrameErrorKind,
    message: String,
}

impl FrameError {
    fn new(kind: FrameErrorKind, message: impl Into<String>) -> Self {
        FrameError {
            kind,
            message: message.into(),
        }
    }

    /// What was wrong.
    pub fn kind(&self) -> FrameErrorKind {
        self.kind
    }
}

/// Encodes `msg` as one frame: length prefix, version, body.
pub fn encode_frame(msg: &Message) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    bincode::serde::encode_into_std_write(msg, &mut out, bincode::config::standard())
        .expect("encoding to a Vec cannot fail");
    let len = u32::try_from(out.len() - 4).expect("a message fits in a u32 length");
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads a frame's length prefix: the body length that follows, or an error if it passes
/// [`FRAME_BYTES_MAX`] (checked before anything is allocated for the body).
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::new(
            FrameErrorKind::TooLarge,
            format!("frame of {len} bytes, more than the maximum {FRAME_BYTES_MAX}"),
        ));
    }
    Ok(len)
}

/// Decodes a frame body (what follows the length prefix), checking the version and every
/// limit.
pub fn decode_body(body: &[u8]) -> Result<Message, FrameError> {
    if body.len() > FRAME_BYTES_MAX {
        return Err(FrameError::new(
            FrameErrorKind::TooLarge,
            format!(
                "frame of {} bytes, more than the maximum {FRAME_BYTES_MAX}",
                body.len()
            ),
        ));
    }
    if body.len() < 2 {
        return Err(FrameError::new(
            FrameErrorKind::Malformed,
            "frame shorter than its version",
        ));
    }
    let version = u16::from_be_bytes([body[0], body[1]]);
    if version != PROTOCOL_VERSION {
        return Err(FrameError::new(
            FrameErrorKind::Version,
            format!("protocol version {version}, this build speaks {PROTOCOL_VERSION}"),
        ));
    }
    let config = bincode::config::standard().with_limit::<FRAME_BYTES_MAX>();
    let (msg, used): (Message, usize) = bincode::serde::decode_from_slice(&body[2..], config)
        .map_err(|e| FrameError::new(FrameErrorKind::Malformed, e.to_string()))?;
    if used != body.len() - 2 {
        return Err(FrameError::new(
            FrameErrorKind::Malformed,
            format!("{} trailing bytes after the message", body.len() - 2 - used),
        ));
    }
    validate(&msg)?;
    Ok(msg)
}

/// Decodes one whole frame (prefix and body), refusing trailing bytes.
pub fn decode_frame(frame: &[u8]) -> Result<Message, FrameError> {
    let prefix: [u8; 4] = frame
        .get(..4)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| FrameError::new(FrameErrorKind::Malformed, "frame shorter than 4 bytes"))?;
    let len = frame_len(prefix)?;
    if frame.len() - 4 != len {
        return Err(FrameError::new(
            FrameErrorKind::Malformed,
            format!(
                "length prefix says {len} bytes, the frame has {}",
                frame.len() - 4
            ),
        ));
    }
    decode_body(&frame[4..])
}

fn validate(msg: &Message) -> Result<(), FrameError> {
    let invalid = |m: String| Err(FrameError::new(FrameErrorKind::Invalid, m));
    match msg {
        Message::Hello {
            region, progress, ..
        } => {
            if region.is_empty() || region.len() > REGION_BYTES_MAX {
                return invalid(format!(
                    "region name of {} bytes (1-{REGION_BYTES_MAX})",
                    region.len()
                ));
            }
            check_progress(progress)
        }
        Message::Ack { progress, .. } => check_progress(progress),
        Message::Deltas { entries, .. } => {
            if entries.len() > ENTRIES_MAX {
                return invalid(format!(
                    "{} entries, more than the maximum {ENTRIES_MAX}",
                    entries.len()
                ));
            }
            if let Some(e) = entries.iter().find(|e| e.seq == 0) {
                return invalid(format!("entry of origin {} with seq 0", e.origin.0));
            }
            Ok(())
        }
        Message::AeDigests { level, nodes, .. } => {
            let indexes: Vec<u32> = nodes.iter().map(|(i, _)| *i).collect();
            check_nodes(*level, &indexes)
        }
        Message::AeDiffer {
            level,
            nodes,
            empty,
            ..
        } => {
            check_nodes(*level, nodes)?;
            check_nodes(*level, empty)?;
            if nodes.len() + empty.len() > AE_NODES_MAX {
                return invalid(format!(
                    "{} tree nodes, more than the maximum {AE_NODES_MAX}",
                    nodes.len() + empty.len()
                ));
            }
            Ok(())
        }
        Message::AeCarts { carts, .. } => {
            if carts.len() > AE_CARTS_MAX {
                return invalid(format!(
                    "{} carts, more than the maximum {AE_CARTS_MAX}",
                    carts.len()
                ));
            }
            Ok(())
        }
        Message::AeDone { progress, .. } => check_progress(progress),
        Message::AeAck { .. } | Message::AeBusy { .. } => Ok(()),
    }
}

fn check_nodes(level: u8, nodes: &[u32]) -> Result<(), FrameError> {
    let invalid = |m: String| Err(FrameError::new(FrameErrorKind::Invalid, m));
    if level >= crate::digest::LEVELS {
        return invalid(format!(
            "tree level {level}, the tree has {}",
            crate::digest::LEVELS
        ));
    }
    let width = crate::digest::level_width(level);
    if nodes.len() > AE_NODES_MAX.min(width) {
        return invalid(format!(
            "{} tree nodes, level {level} has {width}",
            nodes.len()
        ));
    }
    if nodes.windows(2).any(|w| w[0] >= w[1]) {
        return invalid("tree node indexes are not strictly increasing".into());
    }
    if let Some(i) = nodes.iter().find(|i| **i as usize >= width) {
        return invalid(format!("tree node {i} past level {level}'s {width}"));
    }
    Ok(())
}

fn check_progress(p: &Progress) -> Result<(), FrameError> {
    if p.len() > PROGRESS_MAX {
        return Err(FrameError::new(
            FrameErrorKind::Invalid,
            format!(
                "progress of {} origins, more than the maximum {PROGRESS_MAX}",
                p.len()
            ),
        ));
    }
    if p.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(FrameError::new(
            FrameErrorKind::Invalid,
            "progress origins are not strictly increasing",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_testkit::hex;

    fn ack() -> Message {
        Message::Ack {
            hlc: HlcTimestamp::new(1_700_000_000_000, 3),
            progress: vec![(ReplicaId(1), 42), (ReplicaId(2), 7)],
            committed: 42,
        }
    }

    #[test]
    fn golden_frames() {
        let f = encode_frame(&ack());
        assert_eq!(hex(&f), "00000012000202fd03000068e5cf8b0102012a02072a");
        assert_eq!(decode_frame(&f).unwrap(), ack());
        let d = Message::Deltas {
            hlc: HlcTimestamp::new(5, 0),
            entries: vec![Entry {
                origin: ReplicaId(9),
                seq: 1,
                record: vec![1, 2, 3],
            }],
        };
        let f = encode_frame(&d);
        assert_eq!(hex(&f), "0000000f000201fc0000050001090103010203");
        assert_eq!(decode_frame(&f).unwrap(), d);
    }

    #[test]
    fn bad_frames_are_errors() {
        use FrameErrorKind::*;
        let good = encode_frame(&ack());
        let mut wrong_version = good.clone();
        wrong_version[5] = 9;
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        let unsorted = encode_frame(&Message::Ack {
            hlc: HlcTimestamp::ZERO,
            progress: vec![(ReplicaId(2), 1), (ReplicaId(1), 1)],
            committed: 0,
        });
        let zero_seq = encode_frame(&Message::Deltas {
            hlc: HlcTimestamp::ZERO,
            entries: vec![Entry {
                origin: ReplicaId(1),
                seq: 0,
                record: vec![],
            }],
        });
        let cases: Vec<(Vec<u8>, FrameErrorKind)> = vec![
            (vec![], Malformed),
            (vec![0, 0, 0, 1, 0], Malformed),
            (wrong_version, Version),
            (huge, TooLarge),
            ([good.clone(), vec![0]].concat(), Malformed),
            (good[..good.len() - 1].to_vec(), Malformed),
            (unsorted, Invalid),
            (zero_seq, Invalid),
        ];
        for (bytes, kind) in cases {
            let err = decode_frame(&bytes).unwrap_err();
            assert_eq!(err.kind(), kind, "{bytes:02x?}: {err}");
        }
    }
}
