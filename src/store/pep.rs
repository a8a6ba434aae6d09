//! Personal eventing (XEP-0163): per user, each node's configuration, its items with their
//! publication order, and its explicit subscribers (XEP-0060 §6.1). It stores bytes it is
//! given; it never parses a payload or a config.

use std::future::Future;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// (user, node) → encoded node configuration (see `pep::NodeConfig`).
const NODES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("pep_node");
/// (user, node, item id) → (publication sequence, serialised payload).
const ITEMS: TableDefinition<(&str, &str, &str), (u64, &[u8])> = TableDefinition::new("pep_item");

/// (user, node, subscriber JID) → nothing: explicit subscriptions, dropped with the node.
const SUBS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("pep_sub");

const MAX: &str = "\u{10FFFF}";

/// One stored item: its id, publication sequence (higher is newer) and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepItem {
    pub id: String,
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// A publication to store: the node is created with `config` when missing.
pub struct Publish {
    pub node: String,
    pub config: Vec<u8>,
    pub max_items: u32,
    pub max_nodes: u32,
    /// When set, every other item of the node goes (a whole-node replacement).
    pub replace: bool,
    pub items: Vec<(String, Vec<u8>)>,
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(NODES)?;
    txn.open_table(ITEMS)?;
    txn.open_table(SUBS)?;
    Ok(())
}

pub(super) fn clear_user(txn: &WriteTransaction, user: &str) -> Result<(), StoreError> {
    let mut nodes = txn.open_table(NODES)?;
    for entry in nodes.extract_from_if((user, "")..(user, MAX), |_, _| true)? {
        entry?;
    }
    let mut items = txn.open_table(ITEMS)?;
    for entry in items.extract_from_if((user, "", "")..(user, MAX, MAX), |_, _| true)? {
        entry?;
    }
    // The user's nodes' subscribers, and the user's subscriptions to others' nodes (a
    // small table: explicit subscriptions are rare next to presence-based interest).
    let subscriber = format!("{user}@");
    let mut subs = txn.open_table(SUBS)?;
    for entry in subs.extract_from_if::<(&str, &str, &str), _>(.., |key, _| {
        key.0 == user || key.2.starts_with(&subscriber)
    })? {
        entry?;
    }
    Ok(())
}

fn node_items(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), (u64, &'static [u8])>,
    user: &str,
    node: &str,
) -> Result<Vec<PepItem>, StoreError> {
    let mut items = Vec::new();
    for entry in table.range((user, node, "")..=(user, node, MAX))? {
        let (key, value) = entry?;
        let (seq, payload) = value.value();
        items.push(PepItem {
            id: key.value().2.to_owned(),
            seq,
            payload: payload.to_vec(),
        });
    }
    items.sort_by_key(|item| std::cmp::Reverse(item.seq));
    Ok(items)
}

impl Store {
    /// The encoded configuration of a node, if it exists.
    pub fn pep_node(&self, user: &str, node: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(NODES)?;
        let config = table.get((user, node))?.map(|v| v.value().to_vec());
        Ok(config)
    }

    /// Every node of a user with its encoded configuration.
    pub fn pep_nodes(&self, user: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(NODES)?;
        let mut nodes = Vec::new();
        for entry in table.range((user, "")..=(user, MAX))? {
            let (key, value) = entry?;
            nodes.push((key.value().1.to_owned(), value.value().to_vec()));
        }
        Ok(nodes)
    }

    /// A node's items, newest first.
    pub fn pep_items(&self, user: &str, node: &str) -> Result<Vec<PepItem>, StoreError> {
        let txn = self.read()?;
        node_items(&txn.open_table(ITEMS)?, user, node)
    }

    /// Stores items (an id already there is replaced and becomes the newest), creating the
    /// node when missing — unless the user has `max_nodes` nodes already
    /// ([`StoreError::QuotaExceeded`]) — then drops the oldest items past `max_items`.
    pub fn pep_publish(
        &self,
        user: &str,
        publish: Publish,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let user = user.to_owned();
        self.write(move |txn| {
            let (user, node) = (user.as_str(), publish.node.as_str());
            let mut nodes = txn.open_table(NODES)?;
            if nodes.get((user, node))?.is_none() {
                let count = nodes.range((user, "")..=(user, MAX))?.count();
                if count >= publish.max_nodes as usize {
                    return Err(StoreError::QuotaExceeded);
                }
                nodes.insert((user, node), publish.config.as_slice())?;
            }
            let mut table = txn.open_table(ITEMS)?;
            let mut existing = node_items(&table, user, node)?;
            if publish.replace {
                for item in existing.drain(..) {
                    table.remove((user, node, item.id.as_str()))?;
                }
            }
            let mut seq = existing.first().map_or(0, |item| item.seq);
            for (id, payload) in &publish.items {
                seq += 1;
                table.insert((user, node, id.as_str()), (seq, payload.as_slice()))?;
            }
            let mut all = node_items(&table, user, node)?;
            for item in all.drain(..).skip(publish.max_items as usize) {
                table.remove((user, node, item.id.as_str()))?;
            }
            Ok(())
        })
    }

    /// Removes one item; [`StoreError::NotFound`] when the node or the item is not there.
    pub fn pep_retract(
        &self,
        user: &str,
        node: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (user, node, id) = (user.to_owned(), node.to_owned(), id.to_owned());
        self.write(move |txn| {
            let mut table = txn.open_table(ITEMS)?;
            let removed = table
                .remove((user.as_str(), node.as_str(), id.as_str()))?
                .is_some();
            if removed {
                Ok(())
            } else {
                Err(StoreError::NotFound)
            }
        })
    }

    /// The JIDs explicitly subscribed to a node.
    pub fn pep_subscribers(&self, user: &str, node: &str) -> Result<Vec<String>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(SUBS)?;
        let mut jids = Vec::new();
        for entry in table.range((user, node, "")..=(user, node, MAX))? {
            jids.push(entry?.0.value().2.to_owned());
        }
        Ok(jids)
    }

    /// Subscribes `jid` to an existing node ([`StoreError::NotFound`] otherwise), unless the
    /// node has `max` subscribers already ([`StoreError::QuotaExceeded`]). Subscribing
    /// again changes nothing.
    pub fn pep_subscribe(
        &self,
        user: &str,
        node: &str,
        jid: &str,
        max: usize,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (user, node, jid) = (user.to_owned(), node.to_owned(), jid.to_owned());
        self.write(move |txn| {
            let key = (user.as_str(), node.as_str(), jid.as_str());
            if txn.open_table(NODES)?.get((key.0, key.1))?.is_none() {
                return Err(StoreError::NotFound);
            }
            let mut subs = txn.open_table(SUBS)?;
            if subs.get(key)?.is_none() {
                let count = subs
                    .range((key.0, key.1, "")..=(key.0, key.1, MAX))?
                    .count();
                if count >= max {
                    return Err(StoreError::QuotaExceeded);
                }
                subs.insert(key, ())?;
            }
            Ok(())
        })
    }

    /// Ends `jid`'s subscription; [`StoreError::NotFound`] when it had none.
    pub fn pep_unsubscribe(
        &self,
        user: &str,
        node: &str,
        jid: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (user, node, jid) = (user.to_owned(), node.to_owned(), jid.to_owned());
        self.write(move |txn| {
            let key = (user.as_str(), node.as_str(), jid.as_str());
            match txn.open_table(SUBS)?.remove(key)? {
                Some(_) => Ok(()),
                None => Err(StoreError::NotFound),
            }
        })
    }

    /// Removes a node, its items and its subscriptions; [`StoreError::NotFound`] when it is
    /// not there.
    pub fn pep_delete(
        &self,
        user: &str,
        node: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (user, node) = (user.to_owned(), node.to_owned());
        self.write(move |txn| {
            let (user, node) = (user.as_str(), node.as_str());
            if txn.open_table(NODES)?.remove((user, node))?.is_none() {
                return Err(StoreError::NotFound);
            }
            let mut items = txn.open_table(ITEMS)?;
            for entry in items.extract_from_if((user, node, "")..=(user, node, MAX), |_, _| true)? {
                entry?;
            }
            let mut subs = txn.open_table(SUBS)?;
            for entry in subs.extract_from_if((user, node, "")..=(user, node, MAX), |_, _| true)? {
                entry?;
            }
            Ok(())
        })
    }

    /// Replaces a node's configuration and trims its items to `max_items`;
    /// [`StoreError::NotFound`] when the node is not there.
    pub fn pep_configure(
        &self,
        user: &str,
        node: &str,
        config: Vec<u8>,
        max_items: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (user, node) = (user.to_owned(), node.to_owned());
        self.write(move |txn| {
            let (user, node) = (user.as_str(), node.as_str());
            let mut nodes = txn.open_table(NODES)?;
            if nodes.get((user, node))?.is_none() {
                return Err(StoreError::NotFound);
            }
            nodes.insert((user, node), config.as_slice())?;
            let mut table = txn.open_table(ITEMS)?;
            for item in node_items(&table, user, node)?
                .drain(..)
                .skip(max_items as usize)
            {
                table.remove((user, node, item.id.as_str()))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, TempDir};
    use super::*;

    fn publish(node: &str, items: &[(&str, &str)], max_items: u32, max_nodes: u32) -> Publish {
        Publish {
            node: node.into(),
            config: vec![1],
            max_items,
            max_nodes,
            replace: false,
            items: items
                .iter()
                .map(|(id, p)| (id.to_string(), p.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn ids(store: &super::Store, node: &str) -> Vec<String> {
        let items = store.pep_items("u", node).unwrap();
        items.into_iter().map(|i| i.id).collect()
    }

    #[test]
    fn publish_trims_replaces_limits_and_deletes() {
        let dir = TempDir::new("pep");
        let store = open(&dir);
        smol::block_on(store.pep_publish("u", publish("n", &[("a", "<a/>")], 2, 2))).unwrap();
        smol::block_on(store.pep_publish("u", publish("n", &[("b", "<b/>")], 2, 2))).unwrap();
        smol::block_on(store.pep_publish("u", publish("n", &[("a", "<a2/>")], 2, 2))).unwrap();
        assert_eq!(ids(&store, "n"), ["a", "b"]);
        smol::block_on(store.pep_publish("u", publish("n", &[("c", "<c/>")], 2, 2))).unwrap();
        assert_eq!(ids(&store, "n"), ["c", "a"]);
        smol::block_on(store.pep_publish("u", publish("m", &[("x", "<x/>")], 1, 2))).unwrap();
        assert_eq!(
            smol::block_on(store.pep_publish("u", publish("o", &[("x", "<x/>")], 1, 2))),
            Err(StoreError::QuotaExceeded)
        );
        assert_eq!(store.pep_nodes("u").unwrap().len(), 2);
        let mut whole = publish("n", &[("z", "<z/>")], 5, 2);
        whole.replace = true;
        smol::block_on(store.pep_publish("u", whole)).unwrap();
        assert_eq!(ids(&store, "n"), ["z"]);
        smol::block_on(store.pep_retract("u", "n", "z")).unwrap();
        assert_eq!(
            smol::block_on(store.pep_retract("u", "n", "z")),
            Err(StoreError::NotFound)
        );
        smol::block_on(store.pep_subscribe("u", "m", "v@h/r", 2)).unwrap();
        smol::block_on(store.pep_subscribe("u", "m", "v@h/r", 2)).unwrap();
        smol::block_on(store.pep_subscribe("u", "m", "w@h", 2)).unwrap();
        assert_eq!(
            smol::block_on(store.pep_subscribe("u", "m", "x@h", 2)),
            Err(StoreError::QuotaExceeded)
        );
        assert_eq!(
            smol::block_on(store.pep_subscribe("u", "gone", "w@h", 2)),
            Err(StoreError::NotFound)
        );
        assert_eq!(store.pep_subscribers("u", "m").unwrap(), ["v@h/r", "w@h"]);
        smol::block_on(store.pep_unsubscribe("u", "m", "w@h")).unwrap();
        assert_eq!(
            smol::block_on(store.pep_unsubscribe("u", "m", "w@h")),
            Err(StoreError::NotFound)
        );
        smol::block_on(store.pep_delete("u", "m")).unwrap();
        assert!(store.pep_subscribers("u", "m").unwrap().is_empty());
        assert_eq!(store.pep_node("u", "m"), Ok(None));
        assert!(ids(&store, "m").is_empty());
        store.create_user("u", b"c").unwrap();
        smol::block_on(store.delete_user("u")).unwrap();
        assert_eq!(store.pep_nodes("u"), Ok(Vec::new()));
    }

    #[test]
    fn deleting_a_user_ends_its_subscriptions_and_its_nodes_subscribers() {
        let dir = TempDir::new("pep-subs");
        let store = open(&dir);
        for user in ["u", "v"] {
            smol::block_on(store.pep_publish(user, publish("n", &[("a", "<a/>")], 1, 1))).unwrap();
        }
        smol::block_on(store.pep_subscribe("u", "n", "v@h/r", 9)).unwrap();
        smol::block_on(store.pep_subscribe("u", "n", "w@h", 9)).unwrap();
        smol::block_on(store.pep_subscribe("v", "n", "w@h", 9)).unwrap();
        store.create_user("v", b"c").unwrap();
        smol::block_on(store.delete_user("v")).unwrap();
        assert_eq!(store.pep_subscribers("u", "n").unwrap(), ["w@h"]);
        assert!(store.pep_subscribers("v", "n").unwrap().is_empty());
    }
}
