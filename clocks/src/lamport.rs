//! [`LamportClock`]: scalar logical time, totally ordered by `(counter, replica)`.

use crate::ReplicaId;
use serde::{Deserialize, Serialize};

/// A Lamport timestamp. The derived order is `(counter, replica)`: a total order that
/// extends happened-before, with ties between concurrent events broken by replica.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LamportTimestamp {
    /// Logical time. Field order matters: it is compared first.
    pub counter: u64,
    /// The replica that issued the timestamp; breaks ties.
    pub replica: ReplicaId,
}

/// A Lamport clock (Lamport 1978): one counter per replica.
///
/// ```
/// use meridian_clocks::{LamportClock, ReplicaId};
/// let mut a = LamportClock::new(ReplicaId(1));
/// let mut b = LamportClock::new(ReplicaId(2));
/// let sent = a.tick();
/// let received = b.observe(sent);
/// assert!(sent < received);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LamportClock {
    replica: ReplicaId,
    counter: u64,
}

impl LamportClock {
    /// A clock for `replica`, starting at 0 (the first tick returns 1).
    pub fn new(replica: ReplicaId) -> Self {
        LamportClock {
            replica,
            counter: 0,
        }
    }

    /// The replica this clock belongs to.
    #[inline]
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// The last timestamp issued or observed (counter 0 before any event).
    #[inline]
    pub fn current(&self) -> LamportTimestamp {
        LamportTimestamp {
            counter: self.counter,
            replica: self.replica,
        }
    }

    /// A local or send event: advance the counter and return the new timestamp.
    ///
    /// Saturates at `u64::MAX` instead of panicking (unreachable at one tick per nanosecond
    /// for 584 years, but a hostile peer may send `u64::MAX` to [`observe`](Self::observe)).
    #[inline]
    pub fn tick(&mut self) -> LamportTimestamp {
        self.counter = self.counter.saturating_add(1);
        self.current()
    }

    /// A receive event: `counter = max(counter, remote.counter) + 1`.
    #[inline]
    pub fn observe(&mut self, remote: LamportTimestamp) -> LamportTimestamp {
        self.counter = self.counter.max(remote.counter).saturating_add(1);
        self.current()
    }
}
