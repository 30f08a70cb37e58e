//! [`RocksStorage`]: the production [`Storage`], on RocksDB.

use meridian_cart_store_core::storage::{
    Batch, Cf, Durability, Storage, StorageError, StorageErrorKind,
};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteOptions, DB};
use std::path::Path;

/// RocksDB with one column family per [`Cf`], opened with `open_cf_descriptors`.
///
/// `write(_, Durability::Process)` appends to the WAL without fsync (survives `kill -9`);
/// `write(_, Durability::Fsync)` fsyncs the WAL before returning. Compression is off (the crate is built
/// without compression libraries); cart states are small.
pub struct RocksStorage {
    db: DB,
}

impl std::fmt::Debug for RocksStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStorage")
            .field("path", &self.db.path())
            .finish()
    }
}

fn err(e: rocksdb::Error) -> StorageError {
    use rocksdb::ErrorKind as K;
    let kind = match e.kind() {
        K::IOError => StorageErrorKind::Io,
        K::Busy | K::TimedOut | K::TryAgain | K::Incomplete | K::ShutdownInProgress => {
            StorageErrorKind::Busy
        }
        K::Corruption => StorageErrorKind::Corruption,
        K::InvalidArgument | K::NotSupported => StorageErrorKind::Open,
        _ => StorageErrorKind::Other,
    };
    StorageError::new(kind, e.into_string())
}

impl RocksStorage {
    /// Opens (creating if missing) the database in `dir`.
    pub fn open(dir: &Path) -> Result<RocksStorage, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        let cfs = Cf::ALL.iter().map(|cf| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::None);
            ColumnFamilyDescriptor::new(cf.name(), o)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| {
            let kind = err(e.clone()).kind();
            let kind = if kind == StorageErrorKind::Other {
                StorageErrorKind::Open
            } else {
                kind
            };
            StorageError::new(
                kind,
                format!(
                    "cannot open RocksDB in {}: {}",
                    dir.display(),
                    e.into_string()
                ),
            )
        })?;
        Ok(RocksStorage { db })
    }

    fn handle(&self, cf: Cf) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db.cf_handle(cf.name()).ok_or_else(|| {
            StorageError::new(
                StorageErrorKind::Open,
                format!("column family {} is missing", cf.name()),
            )
        })
    }
}

impl Storage for RocksStorage {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.handle(cf)?, key).map_err(err)
    }

    fn write(&self, batch: &Batch, durability: Durability) -> Result<(), StorageError> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            let h = self.handle(op.cf)?;
            match &op.value {
                Some(v) => wb.put_cf(h, &op.key, v),
                None => wb.delete_cf(h, &op.key),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(durability == Durability::Fsync);
        self.db.write_opt(wb, &wo).map_err(err)
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let it = self.db.iterator_cf(
            self.handle(cf)?,
            IteratorMode::From(start, Direction::Forward),
        );
        for item in it {
            let (k, v) = item.map_err(err)?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_cart_store_core::storage::contract::check_contract;

    #[test]
    fn rocks_storage_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        check_contract(&RocksStorage::open(dir.path()).unwrap());
    }

    #[test]
    fn rocks_storage_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStorage::open(dir.path()).unwrap();
            let mut b = Batch::new();
            b.put(Cf::Idempotency, b"k".to_vec(), b"v".to_vec());
            s.write(&b, Durability::Process).unwrap();
        }
        let s = RocksStorage::open(dir.path()).unwrap();
        assert_eq!(s.get(Cf::Idempotency, b"k").unwrap(), Some(b"v".to_vec()));
    }
}
