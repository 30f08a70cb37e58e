//! [`Error`]: why a remote state was rejected.

use meridian_clocks::Dot;
use std::fmt;

/// Why [`Validate::validate`](crate::Validate::validate) (or decoding) rejected a state.
///
/// Merging never fails; this error is for states that arrive from the network or disk and
/// break an invariant that every locally built state keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A store holds a dot that its own causal context does not contain ("a dot above its
    /// context"). Merging it would let the dot be dropped or resurrected unpredictably.
    DotOutsideContext {
        /// The first such dot, in store order.
        dot: Dot,
    },
    /// A dot held twice by one store (under two keys of a map, say). A dot names one event,
    /// and merge relies on it: such a state would merge differently in different orders.
    DuplicateDot {
        /// The smallest dot held twice.
        dot: Dot,
    },
    /// A dot with counter 0; counters start at 1.
    ZeroCounter {
        /// The first such dot, from the context's cloud or else the store.
        dot: Dot,
    },
    /// A dot or context counter above [`DOT_COUNTER_MAX`](crate::DOT_COUNTER_MAX). A replica
    /// that merged it could never allocate a fresh dot again.
    CounterTooLarge {
        /// The first such dot; for a version-vector entry, the top of its prefix.
        dot: Dot,
    },
    /// A mutator needed a fresh dot for `replica`, but the state has already seen that
    /// replica's dot at [`DOT_COUNTER_MAX`](crate::DOT_COUNTER_MAX). Nothing was changed;
    /// the replica must continue under a new id.
    DotsExhausted {
        /// The replica with no fresh dot left.
        replica: meridian_clocks::ReplicaId,
    },
    /// A causal context whose dot cloud holds a dot that belongs in its version vector.
    ContextNotCompact {
        /// The cloud dot that should have been folded into the prefix.
        dot: Dot,
    },
    /// A structural invariant of the encoding is broken (unsorted or duplicate entries, an
    /// empty entry that should have been omitted).
    Malformed {
        /// A sentence for logs that names the broken invariant and where (the key or dot).
        what: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::DotOutsideContext { dot } => {
                write!(f, "dot {dot} is in the store but not in its causal context")
            }
            Error::DuplicateDot { dot } => {
                write!(
                    f,
                    "dot {dot} is held twice in one store (one dot names one event)"
                )
            }
            Error::ZeroCounter { dot } => {
                write!(f, "dot {dot} has counter 0 (counters start at 1)")
            }
            Error::CounterTooLarge { dot } => write!(
                f,
                "dot {dot} has a counter above DOT_COUNTER_MAX ({})",
                crate::DOT_COUNTER_MAX
            ),
            Error::DotsExhausted { replica } => write!(
                f,
                "replica {replica} has no fresh dot left (its counter reached DOT_COUNTER_MAX); \
                 it must continue under a new replica id"
            ),
            Error::ContextNotCompact { dot } => {
                write!(
                    f,
                    "causal context is not compact: cloud dot {dot} extends the prefix"
                )
            }
            Error::Malformed { what } => write!(f, "malformed state: {what}"),
        }
    }
}

impl std::error::Error for Error {}
