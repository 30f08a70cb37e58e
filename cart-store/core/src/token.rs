//! [`CausalToken`]: the `Causal-Token` a client hands back for read-your-writes.
//!
//! A token is the set of writes a client has seen, as a version vector over nodes:
//! `v1:` followed by `node=seq` entries joined by `,`, sorted by node, e.g. `v1:1=42` or
//! (once replication exists) `v1:1=42,2=17`. A node has *covered* a token when, for every
//! entry, it has applied that node's writes up to `seq`. A single node can only cover its
//! own entry; an entry of another node is waited for, then answered with 503.

use meridian_clocks::ReplicaId;
use std::fmt;
use std::str::FromStr;

/// Most entries in a token (one per region).
pub const TOKEN_ENTRIES_MAX: usize = 64;
/// Longest token text.
pub const TOKEN_BYTES_MAX: usize = 2048;

/// A causal position: for each node, the last of its writes observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CausalToken {
    entries: Vec<(ReplicaId, u64)>,
}

impl CausalToken {
    /// The token of one node's position.
    pub fn single(node: ReplicaId, seq: u64) -> Self {
        CausalToken {
            entries: vec![(node, seq)],
        }
    }

    /// The token of these `(node, seq)` entries, sorted by node with no duplicates.
    pub fn from_entries(entries: Vec<(ReplicaId, u64)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        CausalToken { entries }
    }

    /// `(node, seq)` entries, sorted by node.
    pub fn entries(&self) -> &[(ReplicaId, u64)] {
        &self.entries
    }

    /// The sequence number this token requires of `node` (0 if none).
    pub fn seq_of(&self, node: ReplicaId) -> u64 {
        self.entries
            .iter()
            .find(|(n, _)| *n == node)
            .map_or(0, |e| e.1)
    }
}

impl fmt::Display for CausalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v1:")?;
        for (i, (n, s)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={s}", n.0)?;
        }
        Ok(())
    }
}

/// Why a `Causal-Token` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenErrorKind {
    /// Longer than [`TOKEN_BYTES_MAX`] or more than [`TOKEN_ENTRIES_MAX`] entries.
    TooLong,
    /// No `v1:` prefix: another version, or not a token.
    Version,
    /// An entry is not `node=seq` in decimal, or nodes are not strictly increasing.
    Syntax,
}

/// A `Causal-Token` that was refused; the message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid Causal-Token: {message} (expected the `token` of an earlier response, like v1:1=42)"
)]
pub struct TokenError {
    kind: TokenErrorKind,
    message: String,
}

impl TokenError {
    fn new(kind: TokenErrorKind, message: String) -> Self {
        TokenError { kind, message }
    }

    /// What is wrong.
    pub fn kind(&self) -> TokenErrorKind {
        self.kind
    }
}

impl FromStr for CausalToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        if s.len() > TOKEN_BYTES_MAX {
            return Err(TokenError::new(
                TokenErrorKind::TooLong,
                format!("{} bytes is too long", s.len()),
            ));
        }
        let body = s.strip_prefix("v1:").ok_or_else(|| {
            TokenError::new(
                TokenErrorKind::Version,
                "missing the version prefix `v1:`".into(),
            )
        })?;
        let mut entries = Vec::new();
        if body.is_empty() {
            // The empty position (`CausalToken::default()`): it covers nothing.
            return Ok(CausalToken { entries });
        }
        for part in body.split(',') {
            let (n, q) = part.split_once('=').ok_or_else(|| {
                TokenError::new(
                    TokenErrorKind::Syntax,
                    format!("entry {part:?} is not node=seq"),
                )
            })?;
            let num = |x: &str| -> Result<u64, TokenError> {
                if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(TokenError::new(
                        TokenErrorKind::Syntax,
                        format!("{x:?} is not a decimal integer"),
                    ));
                }
                x.parse().map_err(|_| {
                    TokenError::new(
                        TokenErrorKind::Syntax,
                        format!("{x:?} does not fit in 64 bits"),
                    )
                })
            };
            let (n, q) = (num(n)?, num(q)?);
            if let Some(&(ReplicaId(last), _)) = entries.last() {
                if n <= last {
                    return Err(TokenError::new(
                        TokenErrorKind::Syntax,
                        "nodes must be strictly increasing".into(),
                    ));
                }
            }
            entries.push((ReplicaId(n), q));
            if entries.len() > TOKEN_ENTRIES_MAX {
                return Err(TokenError::new(
                    TokenErrorKind::TooLong,
                    format!("more than {TOKEN_ENTRIES_MAX} entries"),
                ));
            }
        }
        Ok(CausalToken { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_golden() {
        let t = CausalToken::single(ReplicaId(1), 42);
        assert_eq!(t.to_string(), "v1:1=42");
        assert_eq!("v1:1=42".parse::<CausalToken>().unwrap(), t);
        let two: CausalToken = "v1:1=42,7=3".parse().unwrap();
        assert_eq!(two.seq_of(ReplicaId(7)), 3);
        assert_eq!(two.seq_of(ReplicaId(2)), 0);
        assert_eq!(two.to_string(), "v1:1=42,7=3");
        // The empty position round-trips too.
        assert_eq!(CausalToken::default().to_string(), "v1:");
        assert_eq!("v1:".parse::<CausalToken>(), Ok(CausalToken::default()));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let cases = [
            ("", "version prefix"),
            ("v2:1=1", "version prefix"),
            ("v1:,", "not node=seq"),
            ("v1:1=1,", "not node=seq"),
            ("v1:1=x", "not a decimal"),
            ("v1:1=-1", "not a decimal"),
            ("v1:1=99999999999999999999", "64 bits"),
            ("v1:2=1,1=1", "strictly increasing"),
        ];
        for (text, want) in cases {
            let e = text.parse::<CausalToken>().unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
