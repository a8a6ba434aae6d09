//! Persistent chat rooms (XEP-0045 §10.2 `muc#roomconfig_persistentroom`): one record per
//! room, keyed by the room's localpart. The record is opaque bytes that `crate::muc`
//! encodes and decodes; this file never interprets them.
//!
//! Saves and deletions are hot writes through the group-commit writer; the full load happens
//! once, when the server starts.
//!
//! A persistent room's discussion history is a second record, also opaque, in its own table:
//! it changes with every message, so `crate::muc` writes the history of every changed room
//! together every few seconds instead of with each message, and deleting a room deletes both.

use std::future::Future;

use redb::{ReadableTable, TableDefinition};

use super::{Store, StoreError};

/// room localpart → encoded room (configuration, affiliations, subject).
const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("muc_rooms");
/// room localpart → encoded history (the messages a joining occupant is sent). Created on
/// open, so a schema-2 file written before it existed opens unchanged.
const HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("muc_history");

pub(super) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ROOMS)?;
    txn.open_table(HISTORY)?;
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

    /// Forgets `room` and its history (destroyed, or no longer persistent).
    pub fn muc_delete(
        &self,
        room: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let room = room.to_owned();
        self.write(move |txn| {
            txn.open_table(ROOMS)?.remove(room.as_str())?;
            txn.open_table(HISTORY)?.remove(room.as_str())?;
            Ok(())
        })
    }

    /// Replaces the stored history of several rooms in one op: `Some` stores the record,
    /// `None` removes the room's history.
    pub fn muc_history_save(
        &self,
        batch: Vec<(Box<str>, Option<Vec<u8>>)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        self.write(move |txn| {
            let mut table = txn.open_table(HISTORY)?;
            for (room, record) in &batch {
                match record {
                    Some(record) => table.insert(&**room, record.as_slice())?,
                    None => table.remove(&**room)?,
                };
            }
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

    /// Every stored history, in room name order.
    pub fn muc_history_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(HISTORY)?;
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

    #[test]
    fn histories_are_saved_in_batches_and_go_with_their_room() {
        let dir = TempDir::new("muc-history");
        {
            let store = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap();
            smol::block_on(store.muc_save("a", b"room a".to_vec())).unwrap();
            smol::block_on(store.muc_save("b", b"room b".to_vec())).unwrap();
            let batch = vec![
                ("a".into(), Some(b"old".to_vec())),
                ("b".into(), Some(b"bee".to_vec())),
                ("c".into(), Some(b"sea".to_vec())),
            ];
            smol::block_on(store.muc_history_save(batch)).unwrap();
            let batch = vec![("a".into(), Some(b"new".to_vec())), ("c".into(), None)];
            smol::block_on(store.muc_history_save(batch)).unwrap();
            smol::block_on(store.muc_delete("b")).unwrap();
            store.close();
        }
        let store = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(
            store.muc_history_all().unwrap(),
            vec![("a".into(), b"new".to_vec())]
        );
    }

    /// A file from before the history table (schema 2 all the same) opens, with no history.
    #[test]
    fn a_file_without_the_history_table_opens() {
        let dir = TempDir::new("muc-history-old");
        {
            let store = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap();
            smol::block_on(store.muc_save("a", b"room a".to_vec())).unwrap();
            store.close();
        }
        {
            let db = redb::Database::open(dir.0.join(super::super::DB_FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            assert!(txn.delete_table(super::HISTORY).unwrap());
            txn.commit().unwrap();
        }
        let store = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(store.muc_history_all().unwrap(), vec![]);
        assert_eq!(store.muc_all().unwrap().len(), 1);
    }
}
