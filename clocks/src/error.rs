//! [`ClockError`]: the operating errors of [`Hlc`](crate::Hlc).

use crate::HlcTimestamp;
use std::fmt;
use std::time::Duration;

/// An HLC refused a timestamp. The clock is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClockError {
    /// A remote timestamp leads local physical time by more than the maximum offset.
    RemoteAhead {
        /// The refused timestamp.
        remote: HlcTimestamp,
        /// Local physical time when it was refused (ms since the epoch).
        physical_ms: u64,
        /// How far the remote `l` was ahead of local physical time.
        ahead: Duration,
        /// The configured bound.
        max_offset: Duration,
    },
    /// On restart, the persisted upper bound leads physical time by more than the maximum
    /// offset: the clock was wrong before the restart, or is wrong now.
    BoundAhead {
        /// The persisted bound.
        bound: HlcTimestamp,
        /// Physical time at start (ms since the epoch).
        physical_ms: u64,
        /// How far the bound leads physical time.
        gap: Duration,
        /// The configured bound.
        max_offset: Duration,
    },
}

impl fmt::Display for ClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockError::RemoteAhead {
                remote,
                ahead,
                max_offset,
                ..
            } => write!(
                f,
                "remote timestamp {remote} is {} ms ahead of local physical time \
                 (max offset {} ms)",
                ahead.as_millis(),
                max_offset.as_millis()
            ),
            ClockError::BoundAhead {
                bound,
                gap,
                max_offset,
                ..
            } => write!(
                f,
                "persisted HLC upper bound {bound} is {} ms ahead of physical time \
                 (max offset {} ms): the clock was wrong before this restart or is wrong \
                 now; fix the clock, or start with the explicit override to continue after \
                 the bound",
                gap.as_millis(),
                max_offset.as_millis()
            ),
        }
    }
}

impl std::error::Error for ClockError {}
