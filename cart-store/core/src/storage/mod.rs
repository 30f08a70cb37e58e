//! [`Storage`]: the key-value store under a node. Production uses RocksDB (`RocksStorage`
//! in `meridian-cart-store`); [`MemStorage`] models crashes for tests and simulation.
//!
//! A store has four column families ([`Cf`]). A local write is one [`Batch`] written
//! atomically by [`Storage::write`]: either all of it is visible after a crash, or none.

mod mem;

pub use mem::MemStorage;

/// A column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Cart id → encoded cart state.
    Carts,
    /// Local sequence number (big-endian) → encoded delta record: the outgoing delta log.
    Log,
    /// Idempotency key → encoded first response.
    Idempotency,
    /// Node id, format version, HLC upper bound, last sequence number.
    Meta,
}

impl Cf {
    /// Every column family.
    pub const ALL: [Cf; 4] = [Cf::Carts, Cf::Log, Cf::Idempotency, Cf::Meta];

    /// The RocksDB column family name.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Carts => "carts",
            Cf::Log => "delta_log",
            Cf::Idempotency => "idempotency",
            Cf::Meta => "meta",
        }
    }
}

/// One put (`value` is `Some`) or delete (`None`) of `key` in column family `cf`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct BatchOp {
    pub cf: Cf,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// Writes applied atomically, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<BatchOp>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.ops.push(BatchOp {
            cf,
            key: key.into(),
            value: Some(value),
        });
    }

    /// Adds a delete.
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp {
            cf,
            key: key.into(),
            value: None,
        });
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// `true` iff there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// How a write is made durable before it is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The write-ahead log is written (not fsynced) before the ack: survives `kill -9`,
    /// not a power failure.
    #[default]
    Process,
    /// The write is fsynced before the ack (group commit: a batch shares one fsync);
    /// survives power loss.
    Fsync,
}

/// What kind of storage failure happened: replication retries a transient one and stops
/// on corruption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// An I/O error (disk full, permission, device error): may pass.
    Io,
    /// The engine is busy, timed out or was asked to retry: try again.
    Busy,
    /// Stored data failed the engine's own checks.
    Corruption,
    /// The store could not be opened or is misconfigured (a missing column family).
    Open,
    /// Anything else the engine reports.
    Other,
}

/// A storage engine failed; the message is the engine's.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage: {message}")]
pub struct StorageError {
    kind: StorageErrorKind,
    message: String,
}

impl StorageError {
    /// An error of `kind` with the engine's `message`.
    pub fn new(kind: StorageErrorKind, message: impl Into<String>) -> Self {
        StorageError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StorageErrorKind {
        self.kind
    }

    /// `true` if retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, StorageErrorKind::Io | StorageErrorKind::Busy)
    }
}

/// An ordered key-value store with column families and atomic batches.
pub trait Storage: Send + Sync + 'static {
    /// The value at `key`, if any.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Applies `batch` atomically, as durable as `durability` says when this returns.
    fn write(&self, batch: &Batch, durability: Durability) -> Result<(), StorageError>;

    /// Calls `f(key, value)` for each entry with `key >= start`, in key order, until `f`
    /// returns `false`.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError>;

    /// Makes everything written so far durable against power loss.
    fn sync(&self) -> Result<(), StorageError>;
}

impl<S: Storage + ?Sized> Storage for std::sync::Arc<S> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).get(cf, key)
    }
    fn write(&self, batch: &Batch, durability: Durability) -> Result<(), StorageError> {
        (**self).write(batch, durability)
    }
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        (**self).scan(cf, start, f)
    }
    fn sync(&self) -> Result<(), StorageError> {
        (**self).sync()
    }
}

/// Counts the entries of `cf`.
pub fn count(s: &dyn Storage, cf: Cf) -> Result<u64, StorageError> {
    let mut n = 0u64;
    s.scan(cf, &[], &mut |_, _| {
        n += 1;
        true
    })?;
    Ok(n)
}

/// The contract every [`Storage`] implementation meets, as a test an implementation's own
/// tests call: column families are separate, batches apply in order, scans are ordered and
/// stop when asked, deletes delete.
pub mod contract {
    use super::*;

    /// The contract every implementation meets.
    pub fn check_contract(s: &dyn Storage) {
        assert_eq!(s.get(Cf::Carts, b"a").unwrap(), None);
        let mut b = Batch::new();
        b.put(Cf::Carts, b"b".to_vec(), b"2".to_vec());
        b.put(Cf::Carts, b"a".to_vec(), b"1".to_vec());
        b.put(Cf::Log, 1u64.to_be_bytes(), b"d1".to_vec());
        b.put(Cf::Meta, b"k".to_vec(), b"v".to_vec());
        s.write(&b, Durability::Process).unwrap();
        assert_eq!(s.get(Cf::Carts, b"a").unwrap(), Some(b"1".to_vec()));
        // Column families are separate namespaces.
        assert_eq!(s.get(Cf::Idempotency, b"a").unwrap(), None);
        let mut b = Batch::new();
        b.delete(Cf::Carts, b"b".to_vec());
        b.put(Cf::Carts, b"c".to_vec(), b"3".to_vec());
        s.write(&b, Durability::Fsync).unwrap();
        let mut seen = vec![];
        s.scan(Cf::Carts, b"", &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"c".to_vec(), b"3".to_vec())
            ]
        );
        let mut from_b = vec![];
        s.scan(Cf::Carts, b"b", &mut |k, _| {
            from_b.push(k.to_vec());
            false
        })
        .unwrap();
        assert_eq!(from_b, vec![b"c".to_vec()]);
        assert_eq!(count(s, Cf::Log).unwrap(), 1);
        s.sync().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_meets_the_contract() {
        contract::check_contract(&MemStorage::new());
    }
}
