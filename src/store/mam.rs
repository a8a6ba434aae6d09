//! Message archives (XEP-0313): per archive (a user's localpart, or a room's bare JID, which
//! cannot collide because localparts never hold `@`), messages keyed by a monotonic id, with
//! the time they were archived and the other party. A chat message is stored ONCE, whatever
//! the number of archives it is in (the sender's and the recipient's share its id); each
//! archive holds a small index row per message, and the message goes when its last index row
//! does. It also keeps each user's archiving preferences as opaque bytes. It stores bytes
//! only and never parses stanzas.
//!
//! Appends and expiry are hot writes through the group-commit writer; queries are snapshot
//! reads. Ids are assigned by the caller (`crate::mam`) before the write, so a delivered
//! message can carry its archive id without waiting for the disk; the highest id ever
//! written is kept here so ids stay monotonic across restarts.

use std::future::Future;
use std::sync::{Arc, Mutex};

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// (archive, id) → (unix seconds archived, other party's JID). One archive is one contiguous
/// key range, oldest first; queries filter here without touching the message bytes.
const ARCHIVE: TableDefinition<(&str, u64), (u64, &str)> = TableDefinition::new("mam_index");

/// id → (archives holding it, message bytes). Ids only grow, so appends land at the end.
const MESSAGES: TableDefinition<u64, (u32, &[u8])> = TableDefinition::new("mam_messages");

/// Schema 1: (archive, id) → (stamp, with, bytes), a full copy per archive. Read only by
/// [`migrate_from_v1`].
const V1_ARCHIVE: TableDefinition<(&str, u64), (u64, &str, &[u8])> = TableDefinition::new("mam");

/// user → encoded preferences (`crate::mam` owns the format).
const PREFS: TableDefinition<&str, &[u8]> = TableDefinition::new("mam_prefs");

/// "last_id" → the highest id written.
const STATE: TableDefinition<&str, u64> = TableDefinition::new("mam_state");
const LAST_ID: &str = "last_id";

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ARCHIVE)?;
    txn.open_table(MESSAGES)?;
    txn.open_table(PREFS)?;
    txn.open_table(STATE)?;
    Ok(())
}

/// Drops `user`'s archive and preferences.
pub(super) fn clear_user(txn: &WriteTransaction, user: &str) -> Result<(), StoreError> {
    clear_archive(txn, user)?;
    txn.open_table(PREFS)?.remove(user)?;
    Ok(())
}

fn clear_archive(txn: &WriteTransaction, archive: &str) -> Result<(), StoreError> {
    let mut table = txn.open_table(ARCHIVE)?;
    let mut ids = Vec::new();
    for entry in table.extract_from_if((archive, 0)..=(archive, u64::MAX), |_, _| true)? {
        ids.push(entry?.0.value().1);
    }
    release(txn, &ids)
}

/// One archive dropped its index row of each of `ids`: a message no archive holds any more
/// is deleted.
fn release(txn: &WriteTransaction, ids: &[u64]) -> Result<(), StoreError> {
    let mut messages = txn.open_table(MESSAGES)?;
    for &id in ids {
        // Still held elsewhere: the count goes down, the bytes stay.
        let kept = match messages.get(id)? {
            Some(message) => match message.value() {
                (held, xml) if held > 1 => Some((held - 1, xml.to_vec())),
                _ => None,
            },
            None => continue,
        };
        match kept {
            Some((held, xml)) => messages.insert(id, (held, xml.as_slice()))?,
            None => messages.remove(id)?,
        };
    }
    Ok(())
}

/// Schema 1 → 2: each per-archive copy becomes a message row held by one archive plus its
/// index row (schema 1 gave every copy its own id), and the old table goes. Runs inside the
/// transaction that stamps the new version, so an interrupted upgrade leaves schema 1 intact.
pub(super) fn migrate_from_v1(txn: &WriteTransaction) -> Result<(), StoreError> {
    {
        let old = txn.open_table(V1_ARCHIVE)?;
        let mut index = txn.open_table(ARCHIVE)?;
        let mut messages = txn.open_table(MESSAGES)?;
        let mut moved = 0u64;
        for entry in old.iter()? {
            let (key, value) = entry?;
            let (archive, id) = key.value();
            let (stamp, with, xml) = value.value();
            index.insert((archive, id), (stamp, with))?;
            messages.insert(id, (1, xml))?;
            moved += 1;
        }
        log::info!("message archive upgraded to schema 2: {moved} messages moved");
    }
    txn.delete_table(V1_ARCHIVE)?;
    Ok(())
}

/// Messages to archive, built up on the event loop and written in one writer op. Each
/// message's bytes are held once however many archives it goes into, and rows point into one
/// buffer, so adding a message makes no allocation of its own (the two buffers grow by
/// doubling).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveBatch {
    /// Message bytes, archive names and peers, back to back.
    bytes: Vec<u8>,
    rows: Vec<Row>,
}

/// One archive's copy of a message: byte ranges into [`ArchiveBatch::bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    archive: (usize, usize),
    with: (usize, usize),
    xml: (usize, usize),
    id: u64,
    stamp: u64,
}

/// A message's bytes inside an [`ArchiveBatch`], to add to one or more archives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held(usize, usize);

impl ArchiveBatch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Keeps `xml` in the batch, for [`ArchiveBatch::add`].
    pub fn hold(&mut self, xml: &[u8]) -> Held {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(xml);
        Held(at, self.bytes.len())
    }

    /// Archives a held message in `archive` (a localpart or a room's bare JID) under `id`,
    /// archived at `stamp` (unix seconds), exchanged with `with` (the peer of a 1:1 message,
    /// `room/nick` in a room). Adding the same message to a second archive under the same
    /// id, right after the first, stores it once for both.
    pub fn add(&mut self, archive: &str, id: u64, stamp: u64, with: &str, message: Held) {
        let archive = self.hold(archive.as_bytes());
        let with = self.hold(with.as_bytes());
        self.rows.push(Row {
            archive: (archive.0, archive.1),
            with: (with.0, with.1),
            xml: (message.0, message.1),
            id,
            stamp,
        });
    }

    fn text(&self, (from, to): (usize, usize)) -> &str {
        // Every range was cut from a `&str` or a message; a bad one reads as empty.
        self.bytes
            .get(from..to)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or_default()
    }

    fn slice(&self, (from, to): (usize, usize)) -> &[u8] {
        self.bytes.get(from..to).unwrap_or_default()
    }
}

/// Which part of the matching messages a query wants (XEP-0059 paging).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageAt {
    /// The oldest ones.
    First,
    /// Those right after this id.
    After(u64),
    /// Those right before this id.
    Before(u64),
    /// The newest ones (`<before/>` empty).
    Last,
}

/// The filters of a query (XEP-0313 §4.1) and the page it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// A bare JID matches every resource; a full JID only itself.
    pub with: Option<String>,
    pub start: Option<u64>,
    pub end: Option<u64>,
    /// Only messages after this id, exclusive (`#extended`); unlike RSM `<after/>` it
    /// narrows the matches, and so the count.
    pub after_id: Option<u64>,
    /// Only messages before this id, exclusive (`#extended`).
    pub before_id: Option<u64>,
    /// Only these messages (`#extended`), sorted and without duplicates.
    pub ids: Option<Vec<u64>>,
    pub page: PageAt,
    pub max: usize,
}

impl ArchiveQuery {
    /// Every message of the archive, paged from `page`, at most `max` a page.
    pub fn all(page: PageAt, max: usize) -> ArchiveQuery {
        ArchiveQuery {
            with: None,
            start: None,
            end: None,
            after_id: None,
            before_id: None,
            ids: None,
            page,
            max,
        }
    }
}

/// Picks the page out of the matches as they are visited oldest first, counting them all
/// but holding at most `max` ids: what a query costs in memory does not grow with the
/// archive.
struct Pager {
    at: PageAt,
    max: usize,
    /// The page so far; for the pages counted from the end, a window sliding over the
    /// matches before the `before` id (or all of them).
    page: std::collections::VecDeque<u64>,
    count: usize,
    /// Matches before the page's first one.
    skipped: usize,
}

impl Pager {
    fn new(at: PageAt, max: usize) -> Pager {
        Pager {
            at,
            max,
            page: std::collections::VecDeque::new(),
            count: 0,
            skipped: 0,
        }
    }

    /// One more match, its id above every earlier one.
    fn push(&mut self, id: u64) {
        self.count += 1;
        let (take, slide) = match self.at {
            PageAt::First => (true, false),
            PageAt::After(after) => (id > after, false),
            PageAt::Before(before) => (id < before, true),
            PageAt::Last => (true, true),
        };
        if !take {
            // Only `<after/>` passes over matches before its page; `<before/>` ignores
            // those after its page.
            if matches!(self.at, PageAt::After(_)) {
                self.skipped += 1;
            }
            return;
        }
        if !slide {
            if self.page.len() < self.max {
                self.page.push_back(id);
            }
            return;
        }
        self.page.push_back(id);
        if self.page.len() > self.max {
            self.page.pop_front();
            self.skipped += 1;
        }
    }

    /// (page ids, count, index of the first, complete).
    fn finish(self) -> (std::collections::VecDeque<u64>, usize, usize, bool) {
        let complete = match self.at {
            PageAt::First | PageAt::After(_) => self.skipped + self.page.len() == self.count,
            PageAt::Before(_) | PageAt::Last => self.skipped == 0,
        };
        (self.page, self.count, self.skipped, complete)
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivePage {
    /// (id, stamp, message bytes), oldest first.
    pub items: Vec<(u64, u64, Vec<u8>)>,
    /// How many messages match the filters in all.
    pub count: usize,
    /// Position of the first item among all matches.
    pub first_index: usize,
    /// The page reaches the end of the matches in the paging direction.
    pub complete: bool,
}

/// Whether a stored peer JID matches the `with` filter.
fn with_matches(stored: &str, with: &str) -> bool {
    if with.contains('/') {
        stored == with
    } else {
        stored.split('/').next() == Some(with)
    }
}

impl Store {
    /// Writes a batch of messages (to one or several archives) in one writer op.
    pub fn mam_append(
        &self,
        batch: ArchiveBatch,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        self.write(move |txn| {
            let mut archive = txn.open_table(ARCHIVE)?;
            let mut messages = txn.open_table(MESSAGES)?;
            let mut highest = 0;
            for (at, row) in batch.rows.iter().enumerate() {
                archive.insert(
                    (batch.text(row.archive), row.id),
                    (row.stamp, batch.text(row.with)),
                )?;
                let previous = at.checked_sub(1).and_then(|p| batch.rows.get(p));
                if previous.is_none_or(|p| p.id != row.id) {
                    let held = batch
                        .rows
                        .get(at..)
                        .unwrap_or_default()
                        .iter()
                        .take_while(|r| r.id == row.id)
                        .count();
                    let held = u32::try_from(held).unwrap_or(u32::MAX);
                    messages.insert(row.id, (held, batch.slice(row.xml)))?;
                }
                highest = highest.max(row.id);
            }
            let mut state = txn.open_table(STATE)?;
            let last = state.get(LAST_ID)?.map_or(0, |v| v.value());
            if highest > last {
                state.insert(LAST_ID, highest)?;
            }
            Ok(())
        })
    }

    /// Removes one message from `archive`, if it is there.
    pub fn mam_remove(
        &self,
        archive: &str,
        id: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let archive = archive.to_owned();
        self.write(move |txn| {
            if txn
                .open_table(ARCHIVE)?
                .remove((archive.as_str(), id))?
                .is_some()
            {
                release(txn, &[id])?;
            }
            Ok(())
        })
    }

    /// Drops a whole archive (a room that is gone).
    pub fn mam_clear(
        &self,
        archive: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let archive = archive.to_owned();
        self.write(move |txn| clear_archive(txn, &archive))
    }

    /// The highest archive id ever written (0 for none).
    pub fn mam_last_id(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let state = txn.open_table(STATE)?;
        let last = state.get(LAST_ID)?.map_or(0, |v| v.value());
        Ok(last)
    }

    /// One page of `archive` as `query` asks, in one pass over the matching keys that
    /// counts every match but keeps only the page's ids (at most `max`), then reads just
    /// those messages. A `before`/`after`/`before_id`/`after_id`/`ids` id that is not in
    /// the archive is [`StoreError::NotFound`].
    pub fn mam_query(
        &self,
        archive: &str,
        query: &ArchiveQuery,
    ) -> Result<ArchivePage, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(ARCHIVE)?;
        let messages = txn.open_table(MESSAGES)?;
        let named = match query.page {
            PageAt::After(id) | PageAt::Before(id) => Some(id),
            PageAt::First | PageAt::Last => None,
        };
        let ids = query.ids.as_deref().unwrap_or_default();
        for id in [named, query.after_id, query.before_id]
            .into_iter()
            .flatten()
            .chain(ids.iter().copied())
        {
            if table.get((archive, id))?.is_none() {
                return Err(StoreError::NotFound);
            }
        }
        // Ids are never smaller than the archiving time in microseconds (`crate::mam`), so
        // nothing at or after `start` sits below this key.
        let low = query
            .start
            .map_or(0, |s| s.saturating_mul(1_000_000))
            .max(query.after_id.map_or(0, |a| a.saturating_add(1)));
        let high = query.before_id.map_or(Some(u64::MAX), |b| b.checked_sub(1));
        let mut pager = Pager::new(query.page, query.max);
        let mut visit = |id: u64, stamp: u64, with: &str| {
            let in_time =
                query.start.is_none_or(|s| stamp >= s) && query.end.is_none_or(|e| stamp <= e);
            if in_time && query.with.as_deref().is_none_or(|w| with_matches(with, w)) {
                pager.push(id);
            }
        };
        match (high, &query.ids) {
            (None, _) => {}
            (Some(high), Some(_)) => {
                for &id in ids.iter().filter(|&&id| (low..=high).contains(&id)) {
                    if let Some(value) = table.get((archive, id))? {
                        let (stamp, with) = value.value();
                        visit(id, stamp, with);
                    }
                }
            }
            (Some(high), None) if low <= high => {
                for entry in table.range((archive, low)..=(archive, high))? {
                    let (key, value) = entry?;
                    let (stamp, with) = value.value();
                    visit(key.value().1, stamp, with);
                }
            }
            (Some(_), None) => {}
        }
        let (page, count, first_index, complete) = pager.finish();
        let mut items = Vec::with_capacity(page.len());
        for id in page {
            let stamp = table.get((archive, id))?.map(|v| v.value().0);
            if let (Some(stamp), Some(message)) = (stamp, messages.get(id)?) {
                items.push((id, stamp, message.value().1.to_vec()));
            }
        }
        Ok(ArchivePage {
            items,
            count,
            first_index,
            complete,
        })
    }

    /// The first and last message of `archive` as (id, stamp), or `None` when it is empty
    /// (XEP-0313 archive metadata): two key lookups, whatever the archive's size.
    pub fn mam_bounds(&self, archive: &str) -> Result<Option<[(u64, u64); 2]>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(ARCHIVE)?;
        let mut range = table.range((archive, 0)..=(archive, u64::MAX))?;
        let first = range.next().transpose()?;
        let first = first.map(|(key, value)| (key.value().1, value.value().0));
        let last = range.next_back().transpose()?;
        let last = last.map(|(key, value)| (key.value().1, value.value().0));
        Ok(match (first, last) {
            (Some(first), Some(last)) => Some([first, last]),
            (Some(only), None) => Some([only, only]),
            _ => None,
        })
    }

    /// Users who stored archiving preferences (one key scan, at start-up): everyone
    /// else archives with the default and needs no read per message.
    pub fn mam_prefs_users(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(PREFS)?;
        let mut users = Vec::new();
        for entry in table.iter()? {
            users.push(entry?.0.value().to_owned());
        }
        Ok(users)
    }

    /// `user`'s stored preferences, if they ever set any.
    pub fn mam_prefs(&self, user: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(PREFS)?;
        let prefs = table.get(user)?.map(|v| v.value().to_vec());
        Ok(prefs)
    }

    /// Replaces `user`'s preferences.
    pub fn mam_set_prefs(
        &self,
        user: &str,
        prefs: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let user = user.to_owned();
        self.write(move |txn| {
            txn.open_table(PREFS)?
                .insert(user.as_str(), prefs.as_slice())?;
            Ok(())
        })
    }

    /// Deletes at most `batch` messages archived before `cutoff` (unix seconds), across all
    /// archives, and resolves to whether more may be left. Each archive is oldest first, so
    /// only its expired prefix is visited: a pass costs the number of archives plus the
    /// number of deletions, never a scan of everything kept.
    pub fn mam_expire(
        &self,
        cutoff: u64,
        batch: usize,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        // The op may run more than once (see `Store::write`); the last run's answer counts.
        let more = Arc::new(Mutex::new(false));
        let answer = Arc::clone(&more);
        let write = self.write(move |txn| {
            let mut table = txn.open_table(ARCHIVE)?;
            let mut doomed: Vec<(String, u64)> = Vec::new();
            let mut next: Option<String> = Some(String::new());
            while let Some(from) = next.take() {
                if doomed.len() >= batch {
                    break;
                }
                let mut range = table.range((from.as_str(), 0)..)?;
                let Some(first) = range.next() else {
                    break;
                };
                let (key, _) = first?;
                let archive = key.value().0.to_owned();
                drop(range);
                for entry in table.range((archive.as_str(), 0)..=(archive.as_str(), u64::MAX))? {
                    let (key, value) = entry?;
                    if value.value().0 >= cutoff || doomed.len() >= batch {
                        break;
                    }
                    doomed.push((archive.clone(), key.value().1));
                }
                // The smallest name after this archive's.
                next = Some(format!("{archive}\0"));
            }
            let full = doomed.len() >= batch;
            for (archive, id) in &doomed {
                table.remove((archive.as_str(), *id))?;
            }
            drop(table);
            let ids: Vec<u64> = doomed.iter().map(|(_, id)| *id).collect();
            release(txn, &ids)?;
            *more.lock().unwrap_or_else(|p| p.into_inner()) = full;
            Ok(())
        });
        async move {
            write.await?;
            let more = *answer.lock().unwrap_or_else(|p| p.into_inner());
            Ok(more)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, TempDir};
    use super::*;

    /// A batch of (archive, id, stamp, with) rows, each with its own small message.
    fn batch(
        rows: impl IntoIterator<Item = (&'static str, u64, u64, &'static str)>,
    ) -> ArchiveBatch {
        let mut batch = ArchiveBatch::default();
        for (archive, id, stamp, with) in rows {
            let held = batch.hold(format!("<message><body>{id}</body></message>").as_bytes());
            batch.add(archive, id, stamp, with, held);
        }
        batch
    }

    fn query(page: PageAt, max: usize) -> ArchiveQuery {
        ArchiveQuery::all(page, max)
    }

    fn ids(page: &ArchivePage) -> Vec<u64> {
        page.items.iter().map(|(id, _, _)| *id).collect()
    }

    #[test]
    fn pages_both_ways_and_filters() {
        const M: u64 = 1_000_000;
        let dir = TempDir::new("mam-page");
        let store = open(&dir);
        // Message n is archived at second n with id n·10⁶, as `crate::mam` assigns them.
        let entries = batch(
            (1..=10)
                .map(|n| {
                    (
                        "alice",
                        n * M,
                        n,
                        if n % 2 == 0 { "b@h/x" } else { "c@h/y" },
                    )
                })
                .chain([("bob", 5 * M, 5, "a@h/z")]),
        );
        smol::block_on(store.mam_append(entries)).unwrap();
        assert_eq!(store.mam_last_id(), Ok(10 * M));
        let seconds =
            |page: &ArchivePage| -> Vec<u64> { ids(page).iter().map(|id| id / M).collect() };

        let first = store.mam_query("alice", &query(PageAt::First, 4)).unwrap();
        assert_eq!(
            (seconds(&first), first.count, first.first_index),
            (vec![1, 2, 3, 4], 10, 0)
        );
        assert!(!first.complete);
        let next = store
            .mam_query("alice", &query(PageAt::After(8 * M), 4))
            .unwrap();
        assert_eq!(
            (seconds(&next), next.first_index, next.complete),
            (vec![9, 10], 8, true)
        );
        let last = store.mam_query("alice", &query(PageAt::Last, 3)).unwrap();
        assert_eq!(
            (seconds(&last), last.first_index, last.complete),
            (vec![8, 9, 10], 7, false)
        );
        let back = store
            .mam_query("alice", &query(PageAt::Before(3 * M), 5))
            .unwrap();
        assert_eq!((seconds(&back), back.complete), (vec![1, 2], true));
        assert_eq!(
            store.mam_query("alice", &query(PageAt::After(11 * M), 4)),
            Err(StoreError::NotFound)
        );

        let mut filtered = query(PageAt::First, 100);
        filtered.with = Some("b@h".into());
        filtered.start = Some(3);
        filtered.end = Some(8);
        let page = store.mam_query("alice", &filtered).unwrap();
        assert_eq!((seconds(&page), page.count), (vec![4, 6, 8], 3));
        filtered.with = Some("b@h/other".into());
        assert_eq!(store.mam_query("alice", &filtered).unwrap().count, 0);
        assert_eq!(
            store
                .mam_query("bob", &query(PageAt::First, 9))
                .unwrap()
                .count,
            1
        );
    }

    /// The one-pass pager gives what sorting all matches and slicing them gives.
    #[test]
    fn pager_matches_slicing_all_matches() {
        let ids: Vec<u64> = (1..=9).map(|n| n * 10).collect();
        for max in 0..=10 {
            let mut ats = vec![PageAt::First, PageAt::Last];
            for probe in [5, 10, 45, 50, 90, 95] {
                ats.extend([PageAt::After(probe), PageAt::Before(probe)]);
            }
            for at in ats {
                let (from, to, complete) = match at {
                    PageAt::First => (0, max.min(ids.len()), max >= ids.len()),
                    PageAt::After(a) => {
                        let from = ids.partition_point(|&id| id <= a);
                        let to = (from + max).min(ids.len());
                        (from, to, to == ids.len())
                    }
                    PageAt::Before(b) => {
                        let to = ids.partition_point(|&id| id < b);
                        let from = to.saturating_sub(max);
                        (from, to, from == 0)
                    }
                    PageAt::Last => {
                        let from = ids.len().saturating_sub(max);
                        (from, ids.len(), from == 0)
                    }
                };
                let mut pager = Pager::new(at, max);
                ids.iter().for_each(|&id| pager.push(id));
                let (page, count, first, done) = pager.finish();
                let page: Vec<u64> = page.into_iter().collect();
                assert_eq!(
                    (page.as_slice(), count, first, done),
                    (&ids[from..to], ids.len(), from, complete),
                    "{at:?} max {max}"
                );
            }
        }
    }

    #[test]
    fn extended_filters_and_bounds() {
        let dir = TempDir::new("mam-extended");
        let store = open(&dir);
        assert_eq!(store.mam_bounds("alice"), Ok(None));
        let rows = (1..=6)
            .map(|n| ("alice", n, n * 100, if n % 2 == 0 { "b@h" } else { "c@h" }))
            .chain([("bob", 9, 900, "a@h")]);
        smol::block_on(store.mam_append(batch(rows))).unwrap();
        assert_eq!(store.mam_bounds("alice"), Ok(Some([(1, 100), (6, 600)])));
        assert_eq!(store.mam_bounds("bob"), Ok(Some([(9, 900), (9, 900)])));

        let mut q = query(PageAt::First, 100);
        q.after_id = Some(2);
        q.before_id = Some(6);
        let page = store.mam_query("alice", &q).unwrap();
        assert_eq!(
            (ids(&page), page.count, page.complete),
            (vec![3, 4, 5], 3, true)
        );
        q.page = PageAt::Last;
        q.max = 2;
        let page = store.mam_query("alice", &q).unwrap();
        assert_eq!((ids(&page), page.first_index), (vec![4, 5], 1));
        q.with = Some("b@h".into());
        assert_eq!(ids(&store.mam_query("alice", &q).unwrap()), vec![4]);

        let mut q = query(PageAt::First, 100);
        q.ids = Some(vec![2, 5]);
        let page = store.mam_query("alice", &q).unwrap();
        assert_eq!((ids(&page), page.count), (vec![2, 5], 2));
        q.after_id = Some(2);
        assert_eq!(ids(&store.mam_query("alice", &q).unwrap()), vec![5]);
        // Another archive's id, or one never given, is not in this archive.
        for missing in [Some(vec![9]), Some(vec![2, 7])] {
            q.ids = missing;
            assert_eq!(store.mam_query("alice", &q), Err(StoreError::NotFound));
        }
        let mut q = query(PageAt::First, 100);
        q.before_id = Some(9);
        assert_eq!(store.mam_query("alice", &q), Err(StoreError::NotFound));
    }

    #[test]
    fn a_message_held_once_lands_in_each_archive() {
        let dir = TempDir::new("mam-held");
        let store = open(&dir);
        let mut batch = ArchiveBatch::default();
        let chat = batch.hold(b"<message><body>hi</body></message>");
        batch.add("alice", 7, 1, "bob@h/r", chat);
        batch.add("bob", 8, 1, "alice@h/r", chat);
        let other = batch.hold(b"<message><body>yo</body></message>");
        batch.add("room@muc.h", 9, 2, "room@muc.h/nick", other);
        smol::block_on(store.mam_append(batch)).unwrap();
        let page = |archive: &str, with: &str| {
            let mut filter = query(PageAt::First, 9);
            filter.with = Some(with.into());
            store.mam_query(archive, &filter).unwrap().items
        };
        let hi = b"<message><body>hi</body></message>".to_vec();
        assert_eq!(page("alice", "bob@h"), vec![(7, 1, hi.clone())]);
        assert_eq!(page("bob", "alice@h/r"), vec![(8, 1, hi)]);
        assert_eq!(
            page("room@muc.h", "room@muc.h/nick"),
            vec![(9, 2, b"<message><body>yo</body></message>".to_vec())]
        );
        assert_eq!(store.mam_last_id(), Ok(9));
    }

    fn stored_messages(store: &Store) -> Vec<(u64, u32)> {
        let txn = store.read().unwrap();
        let table = txn.open_table(MESSAGES).unwrap();
        let rows = table
            .iter()
            .unwrap()
            .map(|entry| {
                let (key, value) = entry.unwrap();
                (key.value(), value.value().0)
            })
            .collect();
        rows
    }

    #[test]
    fn a_shared_message_goes_with_its_last_archive() {
        let dir = TempDir::new("mam-shared");
        let store = open(&dir);
        let mut batch = ArchiveBatch::default();
        for id in [1, 2] {
            let held = batch.hold(b"<message/>");
            batch.add("alice", id, 1, "bob@h", held);
            batch.add("bob", id, 1, "alice@h", held);
        }
        smol::block_on(store.mam_append(batch)).unwrap();
        assert_eq!(stored_messages(&store), vec![(1, 2), (2, 2)]);
        // Refused for bob: alice keeps it.
        smol::block_on(store.mam_remove("bob", 1)).unwrap();
        smol::block_on(store.mam_remove("bob", 1)).unwrap();
        assert_eq!(stored_messages(&store), vec![(1, 1), (2, 2)]);
        let alice = store.mam_query("alice", &query(PageAt::First, 9)).unwrap();
        assert_eq!(ids(&alice), vec![1, 2]);
        assert_eq!(alice.items[0].2, b"<message/>".to_vec());
        store.create_user("alice", b"c").unwrap();
        smol::block_on(store.delete_user("alice")).unwrap();
        assert_eq!(stored_messages(&store), vec![(2, 1)]);
        let bob = store.mam_query("bob", &query(PageAt::First, 9)).unwrap();
        assert_eq!(ids(&bob), vec![2]);
        assert!(!smol::block_on(store.mam_expire(2, 9)).unwrap());
        assert_eq!(stored_messages(&store), vec![]);
    }

    #[test]
    fn schema_1_archives_are_migrated_on_open() {
        let dir = TempDir::new("mam-v1");
        {
            let db = redb::Database::create(dir.0.join(super::super::DB_FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(super::super::META)
                .unwrap()
                .insert(super::super::SCHEMA_KEY, 1)
                .unwrap();
            {
                let mut old = txn.open_table(V1_ARCHIVE).unwrap();
                old.insert(
                    ("alice", 10),
                    (5, "bob@h/r", b"<message>a</message>".as_slice()),
                )
                .unwrap();
                old.insert(
                    ("bob", 11),
                    (5, "alice@h/r", b"<message>a</message>".as_slice()),
                )
                .unwrap();
                old.insert(
                    ("alice", 12),
                    (6, "carol@h", b"<message>c</message>".as_slice()),
                )
                .unwrap();
            }
            txn.open_table(STATE).unwrap().insert(LAST_ID, 12).unwrap();
            txn.commit().unwrap();
        }
        let store = open(&dir);
        let mut with_carol = query(PageAt::First, 9);
        with_carol.with = Some("carol@h".into());
        let page = store.mam_query("alice", &with_carol).unwrap();
        assert_eq!(page.items, vec![(12, 6, b"<message>c</message>".to_vec())]);
        let bob = store.mam_query("bob", &query(PageAt::Last, 9)).unwrap();
        assert_eq!(bob.items, vec![(11, 5, b"<message>a</message>".to_vec())]);
        assert_eq!(store.mam_last_id(), Ok(12));
        assert_eq!(stored_messages(&store), vec![(10, 1), (11, 1), (12, 1)]);
        let txn = store.read().unwrap();
        assert!(txn
            .list_tables()
            .unwrap()
            .all(|t| redb::TableHandle::name(&t) != "mam"));
        let version = txn
            .open_table(super::super::META)
            .unwrap()
            .get(super::super::SCHEMA_KEY)
            .unwrap()
            .map(|v| v.value());
        assert_eq!(version, Some(super::super::SCHEMA_VERSION));
    }

    #[test]
    fn expiry_deletes_only_old_messages_in_bounded_batches() {
        let dir = TempDir::new("mam-expire");
        let store = open(&dir);
        // Stamps are injected: "now" is whatever cutoff the test passes.
        let entries = batch(
            ["a", "b", "c"]
                .into_iter()
                .flat_map(|archive| (1..=10).map(move |n| (archive, n, n * 100, "x@h"))),
        );
        smol::block_on(store.mam_append(entries)).unwrap();
        let mut passes = 0;
        while smol::block_on(store.mam_expire(501, 4)).unwrap() {
            passes += 1;
            assert!(passes < 10);
        }
        assert_eq!(passes, 3); // 15 expired in batches of 4: 4, 4, 4, 3
        for archive in ["a", "b", "c"] {
            let page = store
                .mam_query(archive, &query(PageAt::First, 100))
                .unwrap();
            assert_eq!(ids(&page), vec![6, 7, 8, 9, 10], "{archive}");
        }
        assert!(!smol::block_on(store.mam_expire(501, 4)).unwrap());
    }

    #[test]
    fn clear_user_drops_archive_and_prefs() {
        let dir = TempDir::new("mam-clear");
        let store = open(&dir);
        smol::block_on(store.mam_append(batch([("alice", 1, 1, "b@h"), ("bob", 2, 1, "a@h")])))
            .unwrap();
        smol::block_on(store.mam_set_prefs("alice", b"never".to_vec())).unwrap();
        smol::block_on(store.mam_remove("bob", 7)).unwrap();
        store.create_user("alice", b"c").unwrap();
        smol::block_on(store.delete_user("alice")).unwrap();
        assert_eq!(
            store
                .mam_query("alice", &query(PageAt::First, 9))
                .unwrap()
                .count,
            0
        );
        assert_eq!(store.mam_prefs("alice"), Ok(None));
        assert_eq!(
            store
                .mam_query("bob", &query(PageAt::First, 9))
                .unwrap()
                .count,
            1
        );
    }
}
