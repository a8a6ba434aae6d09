//! Message archives (XEP-0313): per archive (a user's localpart, or a room's bare JID, which
//! cannot collide because localparts never hold `@`), messages keyed by a monotonic id, with
//! the time they were archived and the other party. It also keeps each user's archiving
//! preferences as opaque bytes. It stores bytes only and never parses stanzas.
//!
//! Appends and expiry are hot writes through the group-commit writer; queries are snapshot
//! reads. Ids are assigned by the caller (`crate::mam`) before the write, so a delivered
//! message can carry its archive id without waiting for the disk; the highest id ever
//! written is kept here so ids stay monotonic across restarts.

use std::future::Future;
use std::sync::{Arc, Mutex};

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// (archive, id) → (unix seconds archived, other party's JID, message bytes). One archive is
/// one contiguous key range, oldest first.
const ARCHIVE: TableDefinition<(&str, u64), (u64, &str, &[u8])> = TableDefinition::new("mam");

/// user → encoded preferences (`crate::mam` owns the format).
const PREFS: TableDefinition<&str, &[u8]> = TableDefinition::new("mam_prefs");

/// "last_id" → the highest id written.
const STATE: TableDefinition<&str, u64> = TableDefinition::new("mam_state");
const LAST_ID: &str = "last_id";

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ARCHIVE)?;
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
    for entry in table.extract_from_if((archive, 0)..=(archive, u64::MAX), |_, _| true)? {
        entry?;
    }
    Ok(())
}

/// One message to archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// The archive: a localpart or a room's bare JID.
    pub archive: String,
    pub id: u64,
    /// Unix seconds.
    pub stamp: u64,
    /// The other party: the peer of a 1:1 message, `room/nick` in a room.
    pub with: String,
    pub xml: Vec<u8>,
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
    /// Appends messages (to one or several archives) in one write.
    pub fn mam_append(
        &self,
        entries: Vec<ArchiveEntry>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        self.write(move |txn| {
            let mut archive = txn.open_table(ARCHIVE)?;
            let mut highest = 0;
            for entry in &entries {
                archive.insert(
                    (entry.archive.as_str(), entry.id),
                    (entry.stamp, entry.with.as_str(), entry.xml.as_slice()),
                )?;
                highest = highest.max(entry.id);
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
            txn.open_table(ARCHIVE)?.remove((archive.as_str(), id))?;
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
                        let (stamp, with, _) = value.value();
                        visit(id, stamp, with);
                    }
                }
            }
            (Some(high), None) if low <= high => {
                for entry in table.range((archive, low)..=(archive, high))? {
                    let (key, value) = entry?;
                    let (stamp, with, _) = value.value();
                    visit(key.value().1, stamp, with);
                }
            }
            (Some(_), None) => {}
        }
        let (page, count, first_index, complete) = pager.finish();
        let mut items = Vec::with_capacity(page.len());
        for id in page {
            if let Some(value) = table.get((archive, id))? {
                let (stamp, _, xml) = value.value();
                items.push((id, stamp, xml.to_vec()));
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

    fn entry(archive: &str, id: u64, stamp: u64, with: &str) -> ArchiveEntry {
        ArchiveEntry {
            archive: archive.into(),
            id,
            stamp,
            with: with.into(),
            xml: format!("<message><body>{id}</body></message>").into_bytes(),
        }
    }

    fn query(page: PageAt, max: usize) -> ArchiveQuery {
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

    fn ids(page: &ArchivePage) -> Vec<u64> {
        page.items.iter().map(|(id, _, _)| *id).collect()
    }

    #[test]
    fn pages_both_ways_and_filters() {
        const M: u64 = 1_000_000;
        let dir = TempDir::new("mam-page");
        let store = open(&dir);
        // Message n is archived at second n with id n·10⁶, as `crate::mam` assigns them.
        let entries = (1..=10)
            .map(|n| {
                entry(
                    "alice",
                    n * M,
                    n,
                    if n % 2 == 0 { "b@h/x" } else { "c@h/y" },
                )
            })
            .chain([entry("bob", 5 * M, 5, "a@h/z")])
            .collect();
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
        let entries = (1..=6)
            .map(|n| entry("alice", n, n * 100, if n % 2 == 0 { "b@h" } else { "c@h" }))
            .chain([entry("bob", 9, 900, "a@h")])
            .collect();
        smol::block_on(store.mam_append(entries)).unwrap();
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
    fn expiry_deletes_only_old_messages_in_bounded_batches() {
        let dir = TempDir::new("mam-expire");
        let store = open(&dir);
        // Stamps are injected: "now" is whatever cutoff the test passes.
        let entries = ["a", "b", "c"]
            .iter()
            .flat_map(|archive| (1..=10).map(move |n| entry(archive, n, n * 100, "x@h")))
            .collect();
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
        smol::block_on(
            store.mam_append(vec![entry("alice", 1, 1, "b@h"), entry("bob", 2, 1, "a@h")]),
        )
        .unwrap();
        smol::block_on(store.mam_set_prefs("alice", b"never".to_vec())).unwrap();
        smol::block_on(store.mam_remove("bob", 7)).unwrap();
        store.create_user("alice", b"c").unwrap();
        store.delete_user("alice").unwrap();
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
