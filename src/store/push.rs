//! Push registrations (XEP-0357): per user, the app servers (JID and node) that wake the
//! user's devices, each with the publish-options form to send along. It stores what it is
//! given; it never parses a form and never sends anything.
//!
//! Changes go through the group-commit writer; reads are snapshot reads.

use std::future::Future;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// (user, app server JID, node) → the serialised publish-options form, empty when none.
const REGISTRATIONS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("push_registration");

const MAX: &str = "\u{10FFFF}";

/// One device's registration: where its notifications go and what they carry along.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRegistration {
    pub jid: String,
    pub node: String,
    /// The `jabber:x:data` form (secret and the like) as the client sent it; empty when none.
    pub options: Vec<u8>,
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(REGISTRATIONS)?;
    Ok(())
}

/// Drops every registration of `user`.
pub(super) fn clear_user(txn: &WriteTransaction, user: &str) -> Result<(), StoreError> {
    let mut table = txn.open_table(REGISTRATIONS)?;
    for entry in table.extract_from_if((user, "", "")..=(user, MAX, MAX), |_, _| true)? {
        entry?;
    }
    Ok(())
}

impl Store {
    /// `user`'s registrations, sorted by app server JID and node.
    pub fn push_registrations(&self, user: &str) -> Result<Vec<PushRegistration>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(REGISTRATIONS)?;
        let mut registrations = Vec::new();
        for entry in table.range((user, "", "")..=(user, MAX, MAX))? {
            let (key, options) = entry?;
            let (_, jid, node) = key.value();
            registrations.push(PushRegistration {
                jid: jid.to_owned(),
                node: node.to_owned(),
                options: options.value().to_vec(),
            });
        }
        Ok(registrations)
    }

    /// Adds a registration, or replaces the options of the same (JID, node); a new one
    /// fails with [`StoreError::QuotaExceeded`] when `user` has `max` already. Resolves
    /// once durable.
    pub fn push_enable(
        &self,
        user: &str,
        registration: PushRegistration,
        max: usize,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let user = user.to_owned();
        self.write(move |txn| {
            let mut table = txn.open_table(REGISTRATIONS)?;
            let key = (
                user.as_str(),
                registration.jid.as_str(),
                registration.node.as_str(),
            );
            if table.get(key)?.is_none() {
                let count = table.range((key.0, "", "")..=(key.0, MAX, MAX))?.count();
                if count >= max {
                    return Err(StoreError::QuotaExceeded);
                }
            }
            table.insert(key, registration.options.as_slice())?;
            Ok(())
        })
    }

    /// Removes the registration at `jid` and `node`, or every one at `jid` when `node` is
    /// `None`. Removing what is not there is no error. Resolves once durable.
    pub fn push_disable(
        &self,
        user: &str,
        jid: &str,
        node: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (user, jid, node) = (user.to_owned(), jid.to_owned(), node.map(str::to_owned));
        self.write(move |txn| {
            let mut table = txn.open_table(REGISTRATIONS)?;
            let (user, jid) = (user.as_str(), jid.as_str());
            match &node {
                Some(node) => {
                    table.remove((user, jid, node.as_str()))?;
                }
                None => {
                    for entry in
                        table.extract_from_if((user, jid, "")..=(user, jid, MAX), |_, _| true)?
                    {
                        entry?;
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, TempDir};
    use super::*;

    fn registration(jid: &str, node: &str, options: &[u8]) -> PushRegistration {
        PushRegistration {
            jid: jid.into(),
            node: node.into(),
            options: options.to_vec(),
        }
    }

    #[test]
    fn enable_replace_cap_disable_and_account_deletion() {
        let dir = TempDir::new("push");
        let store = open(&dir);
        let enable = |jid: &str, node: &str, options: &[u8]| {
            smol::block_on(store.push_enable("u", registration(jid, node, options), 2))
        };
        enable("p.example", "n1", b"<x/>").unwrap();
        enable("p.example", "n2", b"").unwrap();
        // Same JID and node: replaced, not counted again.
        enable("p.example", "n1", b"<y/>").unwrap();
        assert_eq!(
            enable("q.example", "n", b""),
            Err(StoreError::QuotaExceeded)
        );
        assert_eq!(
            store.push_registrations("u").unwrap(),
            vec![
                registration("p.example", "n1", b"<y/>"),
                registration("p.example", "n2", b""),
            ]
        );
        assert!(store.push_registrations("v").unwrap().is_empty());

        smol::block_on(store.push_disable("u", "p.example", Some("n2"))).unwrap();
        assert_eq!(store.push_registrations("u").unwrap().len(), 1);
        enable("q.example", "n", b"").unwrap();
        smol::block_on(store.push_disable("u", "p.example", None)).unwrap();
        assert_eq!(
            store.push_registrations("u").unwrap(),
            vec![registration("q.example", "n", b"")]
        );

        store.create_user("u", b"c").unwrap();
        smol::block_on(store.delete_user("u")).unwrap();
        assert!(store.push_registrations("u").unwrap().is_empty());
    }
}
