//! Persistent chat rooms (XEP-0045 §10.2 `muc#roomconfig_persistentroom`): one record per
//! room, keyed by the room's localpart. The record is opaque bytes that `crate::muc`
//! encodes and decodes; this file never interprets them.
//!
//! Saves and deletions are hot writes through the group-commit writer; the full load happens
//! once, when the server starts.

use std::future::Future;

use redb::{ReadableTable, TableDefinition};

use super::{Store, StoreError};

/// room localpart → encoded room (configuration, affiliations, subject).
const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("muc_rooms");

pub(super) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ROOMS)?;
    Ok(())
}

impl Store {
    /// Replaces the stored record of `room`.
    pub fn muc_save(
        &self,
        room: &str,
        record: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let room = room.to_owned();
        self.write(move |txn| {
            txn.open_table(ROOMS)?
                .insert(room.as_str(), record.as_slice())?;
            Ok(())
        })
    }

    /// Forgets `room` (destroyed, or no longer persistent).
    pub fn muc_delete(
        &self,
        room: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let room = room.to_owned();
        self.write(move |txn| {
            txn.open_table(ROOMS)?.remove(room.as_str())?;
            Ok(())
        })
    }

    /// Every stored room, in name order.
    pub fn muc_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(ROOMS)?;
        let mut rooms = Vec::new();
        for entry in table.iter()? {
            let (name, record) = entry?;
            rooms.push((name.value().to_owned(), record.value().to_vec()));
        }
        Ok(rooms)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::TempDir;
    use super::super::{Store, DEFAULT_CACHE_BYTES};

    #[test]
    fn rooms_survive_reopen_and_delete() {
        let dir = TempDir::new("muc");
        {
            let store = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap();
            smol::block_on(store.muc_save("b", b"two".to_vec())).unwrap();
            smol::block_on(store.muc_save("a", b"one".to_vec())).unwrap();
            smol::block_on(store.muc_save("c", b"three".to_vec())).unwrap();
            smol::block_on(store.muc_delete("c")).unwrap();
            store.close();
        }
        let store = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(
            store.muc_all().unwrap(),
            vec![("a".into(), b"one".to_vec()), ("b".into(), b"two".to_vec())]
        );
    }
}
