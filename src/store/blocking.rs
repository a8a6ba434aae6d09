//! Block lists (XEP-0191): per user, the set of blocked JIDs as normalised strings. It never
//! parses or matches JIDs (the blocking module does); it only keeps the set.
//!
//! Changes go through the group-commit writer; reads are snapshot reads.

use std::future::Future;

use redb::{TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// (user, blocked JID) → nothing: one user's list is one contiguous, sorted key range.
const BLOCKED: TableDefinition<(&str, &str), ()> = TableDefinition::new("blocklist");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(BLOCKED)?;
    Ok(())
}

/// Drops `user`'s whole list.
pub(super) fn clear_user(txn: &WriteTransaction, user: &str) -> Result<(), StoreError> {
    let mut table = txn.open_table(BLOCKED)?;
    for entry in table.extract_from_if((user, "")..(user, "\u{10FFFF}"), |_, _| true)? {
        entry?;
    }
    Ok(())
}

impl Store {
    /// `user`'s blocked JIDs, sorted.
    pub fn blocklist(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(BLOCKED)?;
        let mut jids = Vec::new();
        for entry in table.range((user, "")..(user, "\u{10FFFF}"))? {
            let (key, _) = entry?;
            jids.push(key.value().1.to_owned());
        }
        Ok(jids)
    }

    /// Every user with a non-empty list, sorted (one key scan, at startup).
    pub fn blocking_users(&self) -> Result<Vec<String>, StoreError> {
        super::users_of(&self.read()?, BLOCKED)
    }

    /// Adds `jids` to `user`'s list (already present ones stay). Resolves once durable.
    pub fn block(
        &self,
        user: &str,
        jids: Vec<String>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let user = user.to_owned();
        self.write(move |txn| {
            let mut table = txn.open_table(BLOCKED)?;
            for jid in &jids {
                table.insert((user.as_str(), jid.as_str()), ())?;
            }
            Ok(())
        })
    }

    /// Removes `jids` from `user`'s list, or the whole list when `jids` is `None`.
    pub fn unblock(
        &self,
        user: &str,
        jids: Option<Vec<String>>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let user = user.to_owned();
        self.write(move |txn| match &jids {
            None => clear_user(txn, &user),
            Some(jids) => {
                let mut table = txn.open_table(BLOCKED)?;
                for jid in jids {
                    table.remove((user.as_str(), jid.as_str()))?;
                }
                Ok(())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, TempDir};

    #[test]
    fn block_unblock_and_scan() {
        let dir = TempDir::new("blocking");
        let store = open(&dir);
        let jids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        smol::block_on(store.block("bob", jids(&["x@y", "evil.example"]))).unwrap();
        smol::block_on(store.block("alice", jids(&["x@y", "x@y"]))).unwrap();
        assert_eq!(store.blocklist("bob").unwrap(), ["evil.example", "x@y"]);
        assert_eq!(store.blocking_users().unwrap(), ["alice", "bob"]);
        smol::block_on(store.unblock("bob", Some(jids(&["x@y", "absent@z"])))).unwrap();
        assert_eq!(store.blocklist("bob").unwrap(), ["evil.example"]);
        smol::block_on(store.unblock("alice", None)).unwrap();
        assert!(store.blocklist("alice").unwrap().is_empty());
        store.create_user("bob", b"c").unwrap();
        smol::block_on(store.delete_user("bob")).unwrap();
        assert!(store.blocking_users().unwrap().is_empty());
    }
}
