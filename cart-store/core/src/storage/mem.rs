//! [`MemStorage`]: an in-memory store that models crashes.

use super::{Batch, Cf, Durability, Storage, StorageError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

type Tables = BTreeMap<Cf, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Debug, Default)]
struct Inner {
    /// What a reader sees: every write.
    visible: Tables,
    /// What survives a power failure: synced writes only.
    durable: Tables,
    /// Writes since the last sync, in order.
    unsynced: Vec<Batch>,
}

fn apply(t: &mut Tables, b: &Batch) {
    for op in b.ops() {
        let table = t.entry(op.cf).or_default();
        match &op.value {
            Some(v) => {
                table.insert(op.key.clone(), v.clone());
            }
            None => {
                table.remove(&op.key);
            }
        }
    }
}

/// An in-memory [`Storage`]. Clones share the same data.
///
/// It keeps what a reader sees apart from what is durable. [`crash`](Self::crash) models a
/// power failure: it returns the store a restarted machine would find, holding only the
/// writes that were synced (by `write(_, Durability::Fsync)` or [`Storage::sync`]), in order. A
/// `write(_, Durability::Process)` survives a crash of the process (use [`reopen`](Self::reopen)), as
/// RocksDB's unsynced WAL does.
///
/// ```
/// use meridian_cart_store_core::{Batch, Cf, Durability, MemStorage, Storage};
/// let s = MemStorage::new();
/// let mut b = Batch::new();
/// b.put(Cf::Carts, b"synced".to_vec(), b"1".to_vec());
/// s.write(&b, Durability::Fsync)?;
/// let mut b = Batch::new();
/// b.put(Cf::Carts, b"unsynced".to_vec(), b"2".to_vec());
/// s.write(&b, Durability::Process)?;
/// let after = s.crash();
/// assert!(after.get(Cf::Carts, b"synced")?.is_some());
/// assert!(after.get(Cf::Carts, b"unsynced")?.is_none());
/// # Ok::<(), meridian_cart_store_core::StorageError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    inner: Arc<Mutex<Inner>>,
}

impl MemStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The store after a power failure: only synced writes remain.
    pub fn crash(&self) -> MemStorage {
        let inner = self.inner.lock().expect("MemStorage lock");
        MemStorage {
            inner: Arc::new(Mutex::new(Inner {
                visible: inner.durable.clone(),
                durable: inner.durable.clone(),
                unsynced: Vec::new(),
            })),
        }
    }

    /// The store after the process died but the machine did not: every write remains (it
    /// is in the OS's page cache), still unsynced.
    pub fn reopen(&self) -> MemStorage {
        let inner = self.inner.lock().expect("MemStorage lock");
        MemStorage {
            inner: Arc::new(Mutex::new(Inner {
                visible: inner.visible.clone(),
                durable: inner.durable.clone(),
                unsynced: inner.unsynced.clone(),
            })),
        }
    }

    /// Number of writes not yet synced.
    pub fn unsynced_writes(&self) -> usize {
        self.inner.lock().expect("MemStorage lock").unsynced.len()
    }
}

impl Storage for MemStorage {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let inner = self.inner.lock().expect("MemStorage lock");
        Ok(inner.visible.get(&cf).and_then(|t| t.get(key)).cloned())
    }

    fn write(&self, batch: &Batch, durability: Durability) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().expect("MemStorage lock");
        apply(&mut inner.visible, batch);
        inner.unsynced.push(batch.clone());
        if durability == Durability::Fsync {
            let pending = std::mem::take(&mut inner.unsynced);
            for b in &pending {
                apply(&mut inner.durable, b);
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        // Copy out so `f` may call back into the store.
        let entries: Vec<(Vec<u8>, Vec<u8>)> = {
            let inner = self.inner.lock().expect("MemStorage lock");
            inner
                .visible
                .get(&cf)
                .map(|t| {
                    t.range(start.to_vec()..)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        for (k, v) in &entries {
            if !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().expect("MemStorage lock");
        let pending = std::mem::take(&mut inner.unsynced);
        for b in &pending {
            apply(&mut inner.durable, b);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_prefix_and_reopen_keeps_all() {
        let s = MemStorage::new();
        let put = |k: &[u8], durability| {
            let mut b = Batch::new();
            b.put(Cf::Carts, k.to_vec(), b"v".to_vec());
            s.write(&b, durability).unwrap();
        };
        put(b"a", Durability::Process);
        put(b"b", Durability::Fsync); // syncs a and b
        put(b"c", Durability::Process);
        assert_eq!(s.unsynced_writes(), 1);
        let crashed = s.crash();
        assert!(crashed.get(Cf::Carts, b"a").unwrap().is_some());
        assert!(crashed.get(Cf::Carts, b"b").unwrap().is_some());
        assert!(crashed.get(Cf::Carts, b"c").unwrap().is_none());
        let reopened = s.reopen();
        assert!(reopened.get(Cf::Carts, b"c").unwrap().is_some());
        // ...and c is still unsynced there.
        assert!(reopened.crash().get(Cf::Carts, b"c").unwrap().is_none());
        s.sync().unwrap();
        assert!(s.crash().get(Cf::Carts, b"c").unwrap().is_some());
    }
}
