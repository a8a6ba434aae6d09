//! Accounts table: JID localpart → opaque credentials (produced by the SASL module). It never
//! interprets the credentials and never validates usernames (the JID module does that).
//!
//! Account changes are rare admin operations, so they are synchronous, each its own
//! Immediate-durability transaction; the server runs them on a helper thread. Deletion is
//! the exception: it goes through the writer queue (see [`Store::delete_user`]).

use std::future::Future;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::{clear_user_data, Store, StoreError};

const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");

pub(super) fn create_table(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ACCOUNTS)?;
    Ok(())
}

impl Store {
    /// Adds `user`; [`StoreError::Exists`] if the account is already there.
    pub fn create_user(&self, user: &str, credentials: &[u8]) -> Result<(), StoreError> {
        self.write_now(|txn| {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            if accounts.get(user)?.is_some() {
                return Err(StoreError::Exists);
            }
            accounts.insert(user, credentials)?;
            Ok(())
        })
    }

    /// Adds every user of `users` that does not exist yet, all with the same credentials, in
    /// ONE transaction (one commit instead of one per account); returns how many were added.
    /// For provisioning many accounts at once, e.g. the benchmark tool.
    pub fn create_users<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
        credentials: &[u8],
    ) -> Result<usize, StoreError> {
        self.write_now(|txn| {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            let mut added = 0;
            for user in users {
                if accounts.get(user)?.is_none() {
                    accounts.insert(user, credentials)?;
                    added += 1;
                }
            }
            Ok(added)
        })
    }

    /// Replaces `user`'s credentials; [`StoreError::NotFound`] if there is no such account.
    pub fn set_credentials(&self, user: &str, credentials: &[u8]) -> Result<(), StoreError> {
        self.write_now(|txn| {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            if accounts.get(user)?.is_none() {
                return Err(StoreError::NotFound);
            }
            accounts.insert(user, credentials)?;
            Ok(())
        })
    }

    /// Removes `user` and, in the same transaction, everything stored for them
    /// ([`clear_user_data`]); [`StoreError::NotFound`] if there is no such account.
    ///
    /// Queued on the writer like the event loop's own writes, so every write queued for the
    /// user before it (offline messages, archive rows, roster changes) is removed with the
    /// account instead of landing after it.
    pub fn delete_user(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let user = user.to_owned();
        self.write(move |txn| {
            if txn.open_table(ACCOUNTS)?.remove(user.as_str())?.is_none() {
                return Err(StoreError::NotFound);
            }
            clear_user_data(txn, &user)
        })
    }

    /// `user`'s credentials, or `None` if there is no such account.
    pub fn credentials(&self, user: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let accounts = txn.open_table(ACCOUNTS)?;
        let credentials = accounts.get(user)?.map(|stored| stored.value().to_vec());
        Ok(credentials)
    }

    pub fn user_exists(&self, user: &str) -> Result<bool, StoreError> {
        let txn = self.read()?;
        let accounts = txn.open_table(ACCOUNTS)?;
        let exists = accounts.get(user)?.is_some();
        Ok(exists)
    }

    /// Every username, sorted by byte order.
    pub fn list_users(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.read()?;
        let accounts = txn.open_table(ACCOUNTS)?;
        let mut users = Vec::new();
        for entry in accounts.iter()? {
            let (user, _) = entry?;
            users.push(user.value().to_owned());
        }
        Ok(users)
    }

    pub fn user_count(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let count = txn.open_table(ACCOUNTS)?.len()?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, TempDir};
    use super::*;

    #[test]
    fn create_read_update_delete() {
        let dir = TempDir::new("accounts-crud");
        let store = open(&dir);
        assert_eq!(store.credentials("alice"), Ok(None));
        assert_eq!(store.user_exists("alice"), Ok(false));

        store.create_user("alice", b"secret-1").unwrap();
        assert_eq!(
            store.create_user("alice", b"other"),
            Err(StoreError::Exists)
        );
        assert_eq!(store.credentials("alice"), Ok(Some(b"secret-1".to_vec())));
        assert_eq!(store.user_exists("alice"), Ok(true));

        store.set_credentials("alice", b"secret-2").unwrap();
        assert_eq!(store.credentials("alice"), Ok(Some(b"secret-2".to_vec())));
        assert_eq!(
            store.set_credentials("bob", b"x"),
            Err(StoreError::NotFound)
        );
        assert_eq!(store.user_exists("bob"), Ok(false));

        smol::block_on(store.delete_user("alice")).unwrap();
        assert_eq!(
            smol::block_on(store.delete_user("alice")),
            Err(StoreError::NotFound)
        );
        assert_eq!(store.credentials("alice"), Ok(None));
        assert_eq!(store.user_count(), Ok(0));
    }

    #[test]
    fn list_is_sorted_and_counted() {
        let dir = TempDir::new("accounts-list");
        let store = open(&dir);
        for user in ["carol", "alice", "bob", ""] {
            store.create_user(user, b"c").unwrap();
        }
        assert_eq!(store.list_users().unwrap(), ["", "alice", "bob", "carol"]);
        assert_eq!(store.user_count(), Ok(4));
    }

    #[test]
    fn accounts_survive_reopen() {
        let dir = TempDir::new("accounts-reopen");
        {
            let store = open(&dir);
            store.create_user("alice", &[0, 255, 1]).unwrap();
            store.create_user("bob", b"b").unwrap();
            smol::block_on(store.delete_user("bob")).unwrap();
        }
        let store = open(&dir);
        assert_eq!(store.credentials("alice"), Ok(Some(vec![0, 255, 1])));
        assert_eq!(store.list_users().unwrap(), ["alice"]);
    }

    #[test]
    fn delete_clears_offline_queue() {
        let dir = TempDir::new("accounts-delete");
        let store = open(&dir);
        store.create_user("alice", b"c").unwrap();
        smol::block_on(store.offline_push("alice", b"<message/>".to_vec(), 10)).unwrap();
        assert_eq!(store.offline_count("alice"), Ok(1));
        smol::block_on(store.delete_user("alice")).unwrap();
        assert_eq!(store.offline_count("alice"), Ok(0));
        assert_eq!(store.offline_peek("alice"), Ok(vec![]));
    }

    #[test]
    fn usable_from_helper_threads() {
        let dir = TempDir::new("accounts-threads");
        let store = open(&dir);
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let store = store.clone();
                std::thread::spawn(move || store.create_user(&format!("user{worker}"), b"c"))
            })
            .collect();
        for worker in workers {
            worker.join().unwrap().unwrap();
        }
        assert_eq!(store.user_count(), Ok(4));
    }
}
