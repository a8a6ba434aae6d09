//! Privacy lists (XEP-0016): per user, named lists (each stored as the canonical serialised
//! items the privacy module wrote) and the name of the default list. It never parses or
//! evaluates a list (the privacy module does); it only keeps them.
//!
//! Changes go through the group-commit writer; reads are snapshot reads.

use std::future::Future;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// (user, list name) → the list's items: one user's lists are one contiguous key range.
const LISTS: TableDefinition<(&str, &str), &str> = TableDefinition::new("privacy_lists");
/// user → name of the default list, when there is one.
const DEFAULTS: TableDefinition<&str, &str> = TableDefinition::new("privacy_default");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(LISTS)?;
    txn.open_table(DEFAULTS)?;
    Ok(())
}

/// Drops all of `user`'s lists and their default.
pub(super) fn clear_user(txn: &WriteTransaction, user: &str) -> Result<(), StoreError> {
    let mut table = txn.open_table(LISTS)?;
    for entry in table.extract_from_if((user, "")..(user, "\u{10FFFF}"), |_, _| true)? {
        entry?;
    }
    txn.open_table(DEFAULTS)?.remove(user)?;
    Ok(())
}

/// Everything stored about one user's privacy lists.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrivacyLists {
    /// (name, serialised items), sorted by name.
    pub lists: Vec<(String, String)>,
    pub default: Option<String>,
}

impl Store {
    /// All of `user`'s lists and the default's name, from one snapshot.
    pub fn privacy_lists(&self, user: &str) -> Result<PrivacyLists, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(LISTS)?;
        let mut lists = Vec::new();
        for entry in table.range((user, "")..(user, "\u{10FFFF}"))? {
            let (key, value) = entry?;
            lists.push((key.value().1.to_owned(), value.value().to_owned()));
        }
        let default = txn
            .open_table(DEFAULTS)?
            .get(user)?
            .map(|name| name.value().to_owned());
        Ok(PrivacyLists { lists, default })
    }

    /// Every user with at least one list, sorted (one key scan, at startup).
    pub fn privacy_users(&self) -> Result<Vec<String>, StoreError> {
        super::users_of(&self.read()?, LISTS)
    }

    /// Creates or replaces `user`'s list `name`. Resolves once durable.
    pub fn set_privacy_list(
        &self,
        user: &str,
        name: &str,
        items: String,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (user, name) = (user.to_owned(), name.to_owned());
        self.write(move |txn| {
            let mut table = txn.open_table(LISTS)?;
            table.insert((user.as_str(), name.as_str()), items.as_str())?;
            Ok(())
        })
    }

    /// Removes `user`'s list `name`; when it was the default, the user has no default after.
    pub fn remove_privacy_list(
        &self,
        user: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (user, name) = (user.to_owned(), name.to_owned());
        self.write(move |txn| {
            txn.open_table(LISTS)?
                .remove((user.as_str(), name.as_str()))?;
            let mut defaults = txn.open_table(DEFAULTS)?;
            let was_default = defaults
                .get(user.as_str())?
                .is_some_and(|default| default.value() == name);
            if was_default {
                defaults.remove(user.as_str())?;
            }
            Ok(())
        })
    }

    /// Makes `name` the default list of `user`, or declines any default with `None`.
    pub fn set_privacy_default(
        &self,
        user: &str,
        name: Option<String>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let user = user.to_owned();
        self.write(move |txn| {
            let mut defaults = txn.open_table(DEFAULTS)?;
            match &name {
                Some(name) => defaults.insert(user.as_str(), name.as_str())?,
                None => defaults.remove(user.as_str())?,
            };
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, TempDir};
    use super::PrivacyLists;

    #[test]
    fn lists_default_and_cleanup() {
        let dir = TempDir::new("privacy");
        let store = open(&dir);
        smol::block_on(store.set_privacy_list("bob", "b", "<x/>".into())).unwrap();
        smol::block_on(store.set_privacy_list("bob", "a", "<y/>".into())).unwrap();
        smol::block_on(store.set_privacy_list("alice", "a", "<z/>".into())).unwrap();
        smol::block_on(store.set_privacy_default("bob", Some("b".into()))).unwrap();
        let bob = store.privacy_lists("bob").unwrap();
        assert_eq!(
            bob,
            PrivacyLists {
                lists: vec![("a".into(), "<y/>".into()), ("b".into(), "<x/>".into())],
                default: Some("b".into()),
            }
        );
        assert_eq!(store.privacy_users().unwrap(), ["alice", "bob"]);
        // Replacing keeps one list; removing the default clears the default.
        smol::block_on(store.set_privacy_list("bob", "b", "<w/>".into())).unwrap();
        smol::block_on(store.remove_privacy_list("bob", "b")).unwrap();
        let bob = store.privacy_lists("bob").unwrap();
        assert_eq!(bob.lists, vec![("a".to_owned(), "<y/>".to_owned())]);
        assert_eq!(bob.default, None);
        smol::block_on(store.set_privacy_default("alice", Some("a".into()))).unwrap();
        store.create_user("alice", b"c").unwrap();
        smol::block_on(store.delete_user("alice")).unwrap();
        assert_eq!(
            store.privacy_lists("alice").unwrap(),
            PrivacyLists::default()
        );
        assert_eq!(store.privacy_users().unwrap(), ["bob"]);
    }
}
