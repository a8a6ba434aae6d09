//! Rosters (RFC 6121 §2), pending inbound subscription requests (§3.1.3) and each user's last
//! unavailable presence (§4.3.2, XEP-0012). It stores items and bytes; it never decides a
//! subscription transition and never parses a stanza.
//!
//! A roster change is a read-modify-write of one user's roster, or of two users' at once
//! (both ends of a subscription are local; a contact on another server has only its
//! local user's side here, every item and request keyed by the user and the contact's bare
//! JID), so it runs as one op on the writer thread through [`Store::roster_update`]: the op
//! sees committed state and nothing interleaves with it.
//!
//! Versioning (XEP-0237): each user has a counter bumped by every item change, and each item
//! records the counter value of its last change. A removed item stays as a tombstone carrying
//! its removal version, so an earlier version can be answered with the changes since. Only
//! the newest [`MAX_TOMBSTONES`] are kept; the user's `floor` records the newest version
//! pruned, and versions below it get the whole roster instead.

use std::future::Future;
use std::sync::{Arc, Mutex};

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// (user, contact bare JID) → encoded [`Stored`] item.
const ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("roster");
/// user → (current roster version, floor: the oldest version changes can be given from).
const VERSIONS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("roster_ver");

/// Removed items remembered per user for versioning deltas.
pub const MAX_TOMBSTONES: usize = 64;
/// (user, requester bare JID) → the subscribe stanza as it will be redelivered.
const PENDING_IN: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("pending_in");
/// user → (Unix time of the last logout, the unavailable presence sent then).
const LAST: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("last_presence");

const TO: u8 = 1;
const FROM: u8 = 2;
const ASK: u8 = 4;
const REMOVED: u8 = 8;
const HAS_NAME: u8 = 16;
/// Added after schema 2 shipped; files written before simply lack the bit.
const APPROVED: u8 = 32;

/// One roster item as RFC 6121 §2.1.2 describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact's bare JID.
    pub jid: String,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// The user receives the contact's presence.
    pub to: bool,
    /// The contact receives the user's presence.
    pub from: bool,
    /// The user asked for the contact's presence (`ask='subscribe'`).
    pub ask: bool,
    /// The user pre-approved a request from the contact (§3.4, `approved='true'`).
    pub approved: bool,
}

/// An item with its version; `removed` marks a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub item: RosterItem,
    pub ver: u64,
    pub removed: bool,
}

/// A whole roster: its version and every item, tombstones included.
#[derive(Debug, Default)]
pub struct Roster {
    pub ver: u64,
    /// Versions below this cannot be answered with changes only.
    pub floor: u64,
    pub items: Vec<Stored>,
}

impl Roster {
    /// Items that exist (no tombstones).
    pub fn live(&self) -> impl Iterator<Item = &RosterItem> {
        self.items.iter().filter(|s| !s.removed).map(|s| &s.item)
    }
}

fn push_str(out: &mut Vec<u8>, text: &str) {
    let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes().get(..usize::from(len)).unwrap_or_default());
}

/// flags, version (u64 LE), then length-prefixed name (if any) and groups.
fn encode(item: &RosterItem, ver: u64, removed: bool) -> Vec<u8> {
    let mut flags = 0;
    for (set, bit) in [
        (item.to, TO),
        (item.from, FROM),
        (item.ask, ASK),
        (item.approved, APPROVED),
        (removed, REMOVED),
        (item.name.is_some(), HAS_NAME),
    ] {
        if set {
            flags |= bit;
        }
    }
    let mut out = vec![flags];
    out.extend_from_slice(&ver.to_le_bytes());
    if let Some(name) = &item.name {
        push_str(&mut out, name);
    }
    for group in &item.groups {
        push_str(&mut out, group);
    }
    out
}

fn decode(jid: &str, bytes: &[u8]) -> Result<Stored, StoreError> {
    let corrupt = || StoreError::Db(format!("corrupt roster item {jid}"));
    let (&flags, rest) = bytes.split_first().ok_or_else(corrupt)?;
    let (ver, mut rest) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let take = |rest: &mut &[u8]| -> Result<String, StoreError> {
        let (len, tail) = rest.split_first_chunk::<2>().ok_or_else(corrupt)?;
        let len = usize::from(u16::from_le_bytes(*len));
        let text = tail.get(..len).ok_or_else(corrupt)?;
        *rest = tail.get(len..).unwrap_or_default();
        String::from_utf8(text.to_vec()).map_err(|_| corrupt())
    };
    let name = if flags & HAS_NAME != 0 {
        Some(take(&mut rest)?)
    } else {
        None
    };
    let mut groups = Vec::new();
    while !rest.is_empty() {
        groups.push(take(&mut rest)?);
    }
    Ok(Stored {
        item: RosterItem {
            jid: jid.to_owned(),
            name,
            groups,
            to: flags & TO != 0,
            from: flags & FROM != 0,
            ask: flags & ASK != 0,
            approved: flags & APPROVED != 0,
        },
        ver: u64::from_le_bytes(*ver),
        removed: flags & REMOVED != 0,
    })
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ITEMS)?;
    txn.open_table(VERSIONS)?;
    txn.open_table(PENDING_IN)?;
    txn.open_table(LAST)?;
    Ok(())
}

pub(super) fn clear_user(txn: &WriteTransaction, user: &str) -> Result<(), StoreError> {
    for table in [ITEMS, PENDING_IN] {
        let mut table = txn.open_table(table)?;
        for entry in table.extract_from_if((user, "")..(user, "\u{10FFFF}"), |_, _| true)? {
            entry?;
        }
    }
    txn.open_table(VERSIONS)?.remove(user)?;
    txn.open_table(LAST)?.remove(user)?;
    Ok(())
}

/// What the deletion of an account took from one other user: the item they had for it and
/// whether the deleted account's subscription request was waiting for their answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Unlinked {
    pub user: String,
    /// Their item as it was, and the tombstone that replaced it.
    pub item: Option<(RosterItem, Stored)>,
    pub requested: bool,
}

/// The roster tables inside one write transaction, for [`Store::roster_update`] ops.
pub struct RosterTxn<'t> {
    txn: &'t WriteTransaction,
}

impl RosterTxn<'_> {
    /// The item `user` has for `contact`, unless there is none (or only a tombstone).
    pub fn item(&self, user: &str, contact: &str) -> Result<Option<RosterItem>, StoreError> {
        let table = self.txn.open_table(ITEMS)?;
        let stored = match table.get((user, contact))? {
            Some(bytes) => decode(contact, bytes.value())?,
            None => return Ok(None),
        };
        Ok((!stored.removed).then_some(stored.item))
    }

    /// How many items `user` has.
    pub fn count(&self, user: &str) -> Result<usize, StoreError> {
        let table = self.txn.open_table(ITEMS)?;
        let mut count = 0;
        for entry in table.range((user, "")..(user, "\u{10FFFF}"))? {
            let (_, bytes) = entry?;
            if bytes
                .value()
                .first()
                .is_some_and(|flags| flags & REMOVED == 0)
            {
                count += 1;
            }
        }
        Ok(count)
    }

    fn bump(&self, user: &str) -> Result<u64, StoreError> {
        let mut versions = self.txn.open_table(VERSIONS)?;
        let (ver, floor) = versions.get(user)?.map_or((0, 0), |v| v.value());
        versions.insert(user, (ver + 1, floor))?;
        Ok(ver + 1)
    }

    /// Drops the oldest tombstones past [`MAX_TOMBSTONES`] and raises the floor past them.
    fn prune(&self, user: &str) -> Result<(), StoreError> {
        let mut items = self.txn.open_table(ITEMS)?;
        let mut tombstones = Vec::new();
        for entry in items.range((user, "")..(user, "\u{10FFFF}"))? {
            let (key, bytes) = entry?;
            let stored = decode(key.value().1, bytes.value())?;
            if stored.removed {
                tombstones.push((stored.ver, stored.item.jid));
            }
        }
        if tombstones.len() <= MAX_TOMBSTONES {
            return Ok(());
        }
        tombstones.sort_unstable();
        let excess = tombstones.len() - MAX_TOMBSTONES;
        let mut floor = 0;
        for (ver, jid) in tombstones.iter().take(excess) {
            items.remove((user, jid.as_str()))?;
            floor = *ver;
        }
        let mut versions = self.txn.open_table(VERSIONS)?;
        let (ver, _) = versions.get(user)?.map_or((0, 0), |v| v.value());
        versions.insert(user, (ver, floor))?;
        Ok(())
    }

    /// Stores `item` for `user` as a new roster version; returns it as stored.
    pub fn put(&self, user: &str, item: &RosterItem) -> Result<Stored, StoreError> {
        self.store(user, item.clone(), false)
    }

    /// Replaces `user`'s item for `contact` with a tombstone; returns the tombstone.
    pub fn remove(&self, user: &str, contact: &str) -> Result<Stored, StoreError> {
        let tombstone = RosterItem {
            jid: contact.to_owned(),
            ..RosterItem::default()
        };
        self.store(user, tombstone, true)
    }

    fn store(&self, user: &str, item: RosterItem, removed: bool) -> Result<Stored, StoreError> {
        let ver = self.bump(user)?;
        self.txn.open_table(ITEMS)?.insert(
            (user, item.jid.as_str()),
            encode(&item, ver, removed).as_slice(),
        )?;
        if removed {
            self.prune(user)?;
        }
        Ok(Stored { item, ver, removed })
    }

    /// Whether `contact` has a subscription request to `user` waiting.
    pub fn pending(&self, user: &str, contact: &str) -> Result<bool, StoreError> {
        Ok(self
            .txn
            .open_table(PENDING_IN)?
            .get((user, contact))?
            .is_some())
    }

    /// How many subscription requests wait for `user`'s answer.
    pub fn pending_count(&self, user: &str) -> Result<usize, StoreError> {
        let table = self.txn.open_table(PENDING_IN)?;
        let mut count = 0;
        for entry in table.range((user, "")..(user, "\u{10FFFF}"))? {
            entry?;
            count += 1;
        }
        Ok(count)
    }

    pub fn set_pending(&self, user: &str, contact: &str, stanza: &[u8]) -> Result<(), StoreError> {
        self.txn
            .open_table(PENDING_IN)?
            .insert((user, contact), stanza)?;
        Ok(())
    }

    pub fn clear_pending(&self, user: &str, contact: &str) -> Result<(), StoreError> {
        self.txn.open_table(PENDING_IN)?.remove((user, contact))?;
        Ok(())
    }

    /// Takes the deleted account `contact` (a bare JID) off every roster (as a new version of
    /// each) and drops every request it left waiting. One scan of both tables: deletions are
    /// rare, and an item may exist on one side only (added without a subscription).
    pub fn forget_contact(&self, contact: &str) -> Result<Vec<Unlinked>, StoreError> {
        let mut users = Vec::new();
        for table in [ITEMS, PENDING_IN] {
            for entry in self.txn.open_table(table)?.iter()? {
                let (key, _) = entry?;
                let (user, jid) = key.value();
                if jid == contact {
                    users.push(user.to_owned());
                }
            }
        }
        users.sort_unstable();
        users.dedup();
        let mut unlinked = Vec::with_capacity(users.len());
        for user in users {
            let item = match self.item(&user, contact)? {
                Some(item) => Some((item, self.remove(&user, contact)?)),
                None => None,
            };
            let requested = self.pending(&user, contact)?;
            if requested {
                self.clear_pending(&user, contact)?;
            }
            if item.is_some() || requested {
                unlinked.push(Unlinked {
                    user,
                    item,
                    requested,
                });
            }
        }
        Ok(unlinked)
    }
}

impl Store {
    /// Runs `op` on the writer thread with the roster tables and resolves with its result once
    /// committed. Like every queued write, `op` may run more than once (see [`Store::write`]),
    /// so only the last run's result is returned.
    pub fn roster_update<T, F>(
        &self,
        op: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: Fn(&RosterTxn) -> Result<T, StoreError> + Send + 'static,
    {
        let result: Arc<Mutex<Option<T>>> = Arc::default();
        let slot = Arc::clone(&result);
        let write = self.write(move |txn| {
            let value = op(&RosterTxn { txn })?;
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
            Ok(())
        });
        async move {
            write.await?;
            let value = result.lock().unwrap_or_else(|p| p.into_inner()).take();
            value.ok_or_else(|| StoreError::Db("roster update lost its result".into()))
        }
    }

    /// `user`'s roster, tombstones included, in contact order.
    pub fn roster(&self, user: &str) -> Result<Roster, StoreError> {
        let txn = self.read()?;
        let (ver, floor) = txn
            .open_table(VERSIONS)?
            .get(user)?
            .map_or((0, 0), |v| v.value());
        let table = txn.open_table(ITEMS)?;
        let mut items = Vec::new();
        for entry in table.range((user, "")..(user, "\u{10FFFF}"))? {
            let (key, bytes) = entry?;
            items.push(decode(key.value().1, bytes.value())?);
        }
        Ok(Roster { ver, floor, items })
    }

    /// The item `user` has for `contact`, if any.
    pub fn roster_item(&self, user: &str, contact: &str) -> Result<Option<RosterItem>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(ITEMS)?;
        let stored = match table.get((user, contact))? {
            Some(bytes) => decode(contact, bytes.value())?,
            None => return Ok(None),
        };
        Ok((!stored.removed).then_some(stored.item))
    }

    /// Subscription requests waiting for `user`'s answer, as stored stanzas.
    pub fn pending_in(&self, user: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(PENDING_IN)?;
        let mut stanzas = Vec::new();
        for entry in table.range((user, "")..(user, "\u{10FFFF}"))? {
            stanzas.push(entry?.1.value().to_vec());
        }
        Ok(stanzas)
    }

    /// When `user` last went offline and the unavailable presence sent then.
    pub fn last_presence(&self, user: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(LAST)?;
        let last = table.get(user)?.map(|v| {
            let (time, xml) = v.value();
            (time, xml.to_vec())
        });
        Ok(last)
    }

    pub fn set_last_presence(
        &self,
        user: &str,
        time: u64,
        xml: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let user = user.to_owned();
        self.write(move |txn| {
            txn.open_table(LAST)?
                .insert(user.as_str(), (time, xml.as_slice()))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, TempDir};
    use super::*;

    fn item(jid: &str) -> RosterItem {
        RosterItem {
            jid: jid.into(),
            name: Some("Bob <b>".into()),
            groups: vec!["Friends".into(), "Wörk".into()],
            to: true,
            ask: true,
            approved: true,
            ..RosterItem::default()
        }
    }

    #[test]
    fn old_tombstones_are_pruned_and_raise_the_floor() {
        let dir = TempDir::new("roster-prune");
        let store = open(&dir);
        smol::block_on(store.roster_update(|txn| {
            for n in 0..=MAX_TOMBSTONES {
                let jid = format!("c{n:03}@h");
                txn.put("alice", &item(&jid))?;
                txn.remove("alice", &jid)?;
            }
            Ok(())
        }))
        .unwrap();
        let roster = store.roster("alice").unwrap();
        assert_eq!(roster.items.len(), MAX_TOMBSTONES);
        assert!(roster.items.iter().all(|s| s.removed));
        // The first removal (version 2) is forgotten: deltas start after it.
        assert_eq!(roster.floor, 2);
        assert_eq!(roster.items[0].item.jid, "c001@h");
        assert_eq!(roster.ver, 2 * (MAX_TOMBSTONES as u64 + 1));
    }

    #[test]
    fn a_deleted_contact_leaves_every_roster_and_request() {
        let dir = TempDir::new("roster-forget");
        let store = open(&dir);
        let both = RosterItem {
            jid: "bob@h".into(),
            to: true,
            from: true,
            ..RosterItem::default()
        };
        smol::block_on(store.roster_update(move |txn| {
            txn.put("alice", &both)?;
            txn.put("alice", &item("carol@h"))?;
            txn.set_pending("dave", "bob@h", b"<presence/>")?;
            txn.put("erin", &item("bob@other"))
        }))
        .unwrap();
        let unlinked =
            smol::block_on(store.roster_update(|txn| txn.forget_contact("bob@h"))).unwrap();
        let users: Vec<_> = unlinked.iter().map(|u| u.user.as_str()).collect();
        assert_eq!(users, ["alice", "dave"]);
        let (was, tombstone) = unlinked[0].item.as_ref().unwrap();
        assert!(was.to && was.from && !unlinked[0].requested);
        assert!(tombstone.removed && tombstone.ver == 3);
        assert!(unlinked[1].item.is_none() && unlinked[1].requested);
        assert_eq!(store.roster_item("alice", "bob@h").unwrap(), None);
        assert_eq!(store.roster("alice").unwrap().ver, 3);
        assert!(store.roster_item("alice", "carol@h").unwrap().is_some());
        assert!(store.pending_in("dave").unwrap().is_empty());
        assert!(store.roster_item("erin", "bob@other").unwrap().is_some());
    }

    #[test]
    fn items_round_trip_with_versions_and_tombstones() {
        let bytes = encode(&item("b@h"), 42, false);
        let stored = decode("b@h", &bytes).unwrap();
        assert_eq!(stored.item, item("b@h"));
        assert_eq!((stored.ver, stored.removed), (42, false));
        let plain = RosterItem {
            jid: "c@h".into(),
            ..RosterItem::default()
        };
        assert_eq!(decode("c@h", &encode(&plain, 1, true)).unwrap().item, plain);
        assert!(decode("x@h", &[0, 1, 2]).is_err());
        assert!(decode("x@h", &encode(&item("x@h"), 1, false)[..12]).is_err());
    }

    #[test]
    fn update_versions_pending_and_cleanup() {
        let dir = TempDir::new("roster");
        let store = open(&dir);
        let count = smol::block_on(store.roster_update(|txn| {
            txn.put("alice", &item("bob@h"))?;
            txn.put("alice", &item("carol@h"))?;
            txn.remove("alice", "carol@h")?;
            txn.set_pending("alice", "dave@h", b"<presence/>")?;
            txn.count("alice")
        }))
        .unwrap();
        assert_eq!(count, 1);
        let roster = store.roster("alice").unwrap();
        assert_eq!(roster.ver, 3);
        assert_eq!(roster.live().count(), 1);
        assert_eq!(roster.items[1].ver, 3);
        assert!(roster.items[1].removed);
        assert_eq!(roster.floor, 0);
        assert_eq!(
            store.pending_in("alice").unwrap(),
            vec![b"<presence/>".to_vec()]
        );
        assert_eq!(store.roster_item("alice", "carol@h").unwrap(), None);
        smol::block_on(store.set_last_presence("alice", 5, b"x".to_vec())).unwrap();
        assert_eq!(
            store.last_presence("alice").unwrap(),
            Some((5, b"x".to_vec()))
        );
        store.create_user("alice", b"c").unwrap();
        smol::block_on(store.delete_user("alice")).unwrap();
        assert_eq!(store.roster("alice").unwrap().items.len(), 0);
        assert!(store.pending_in("alice").unwrap().is_empty());
        assert_eq!(store.last_presence("alice").unwrap(), None);
    }
}
