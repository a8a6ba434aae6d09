//! Offline-message queue (RFC 6121 §8.5.2.2.2 storage): per user, stanzas in arrival order,
//! bounded by a per-user quota. It stores bytes only and never parses stanzas.
//!
//! Pushes and removals are hot writes and go through the group-commit writer; peeks and
//! counts are plain snapshot reads.

use std::future::Future;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// (user, sequence number) → stanza bytes. Keys sort by user then sequence, so one user's
/// queue is one contiguous range, oldest first.
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("offline");

/// user → (stanzas queued, next sequence number). The count makes the quota check O(log n)
/// instead of a scan, and the counter keeps sequence numbers from being reused after the
/// queue empties, so a late `offline_remove` can never delete a newer stanza.
const STATE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("offline_state");

const FIRST_SEQ: u64 = 1;

/// A queued stanza and its sequence number.
pub type Queued = (u64, Vec<u8>);

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(QUEUE)?;
    txn.open_table(STATE)?;
    Ok(())
}

/// Drops `user`'s whole queue and counters.
pub(super) fn clear_user(txn: &WriteTransaction, user: &str) -> Result<(), StoreError> {
    remove_range(txn, user, u64::MAX)?;
    txn.open_table(STATE)?.remove(user)?;
    Ok(())
}

/// Removes `user`'s stanzas with sequence ≤ `up_to_seq`; returns how many there were.
fn remove_range(txn: &WriteTransaction, user: &str, up_to_seq: u64) -> Result<u64, StoreError> {
    let mut queue = txn.open_table(QUEUE)?;
    let mut removed = 0;
    for entry in queue.extract_from_if((user, 0)..=(user, up_to_seq), |_, _| true)? {
        entry?;
        removed += 1;
    }
    Ok(removed)
}

impl Store {
    /// Appends `stanza` to `user`'s queue; fails with [`StoreError::QuotaExceeded`] when the
    /// queue already holds `quota` stanzas. Resolves once the stanza is durable.
    pub fn offline_push(
        &self,
        user: &str,
        stanza: Vec<u8>,
        quota: usize,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let user = user.to_owned();
        let quota = u64::try_from(quota).unwrap_or(u64::MAX);
        self.write(move |txn| {
            let mut state = txn.open_table(STATE)?;
            let (count, next_seq) = state
                .get(user.as_str())?
                .map_or((0, FIRST_SEQ), |stored| stored.value());
            if count >= quota {
                return Err(StoreError::QuotaExceeded);
            }
            txn.open_table(QUEUE)?
                .insert((user.as_str(), next_seq), stanza.as_slice())?;
            state.insert(user.as_str(), (count + 1, next_seq + 1))?;
            Ok(())
        })
    }

    /// `user`'s queued stanzas with their sequence numbers, oldest first.
    pub fn offline_peek(&self, user: &str) -> Result<Vec<Queued>, StoreError> {
        Ok(self.offline_peek_bytes(user, usize::MAX)?.0)
    }

    /// The oldest of `user`'s queued stanzas up to `max_bytes` in all (at least one), and
    /// whether more wait behind them.
    pub fn offline_peek_bytes(
        &self,
        user: &str,
        max_bytes: usize,
    ) -> Result<(Vec<Queued>, bool), StoreError> {
        let txn = self.read()?;
        let queue = txn.open_table(QUEUE)?;
        let mut stanzas = Vec::new();
        let mut bytes = 0;
        for entry in queue.range((user, 0)..=(user, u64::MAX))? {
            let (key, stanza) = entry?;
            let stanza = stanza.value();
            if !stanzas.is_empty() && bytes + stanza.len() > max_bytes {
                return Ok((stanzas, true));
            }
            bytes += stanza.len();
            stanzas.push((key.value().1, stanza.to_vec()));
        }
        Ok((stanzas, false))
    }

    /// Drops `user`'s stanzas with sequence ≤ `up_to_seq` (after they were delivered).
    /// Stanzas pushed after the matching peek have higher numbers and stay queued.
    pub fn offline_remove(
        &self,
        user: &str,
        up_to_seq: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let user = user.to_owned();
        self.write(move |txn| {
            let removed = remove_range(txn, &user, up_to_seq)?;
            if removed > 0 {
                let mut state = txn.open_table(STATE)?;
                let stored = state.get(user.as_str())?.map(|stored| stored.value());
                if let Some((count, next_seq)) = stored {
                    state.insert(user.as_str(), (count.saturating_sub(removed), next_seq))?;
                }
            }
            Ok(())
        })
    }

    /// How many stanzas `user` has queued.
    pub fn offline_count(&self, user: &str) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let state = txn.open_table(STATE)?;
        let count = state.get(user)?.map_or(0, |stored| stored.value().0);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, TempDir};
    use super::*;
    use std::time::Instant;

    fn stanza(n: usize) -> Vec<u8> {
        format!("<message to='alice@example.org'><body>{n}</body></message>").into_bytes()
    }

    #[test]
    fn push_peek_remove_in_order() {
        let dir = TempDir::new("offline-order");
        let store = open(&dir);
        smol::block_on(async {
            for n in 0..3 {
                store.offline_push("alice", stanza(n), 10).await.unwrap();
            }
            store.offline_push("bob", stanza(9), 10).await.unwrap();
        });
        let queued = store.offline_peek("alice").unwrap();
        assert_eq!(queued, vec![(1, stanza(0)), (2, stanza(1)), (3, stanza(2))]);
        // A byte limit takes the oldest that fit, at least one, and says whether more wait.
        let one = stanza(0).len();
        assert_eq!(
            store.offline_peek_bytes("alice", 1).unwrap(),
            (vec![(1, stanza(0))], true)
        );
        assert_eq!(
            store.offline_peek_bytes("alice", 2 * one).unwrap(),
            (vec![(1, stanza(0)), (2, stanza(1))], true)
        );
        assert!(!store.offline_peek_bytes("alice", 3 * one).unwrap().1);
        assert_eq!(store.offline_count("alice"), Ok(3));

        smol::block_on(store.offline_remove("alice", 2)).unwrap();
        assert_eq!(store.offline_peek("alice").unwrap(), vec![(3, stanza(2))]);
        assert_eq!(store.offline_count("alice"), Ok(1));
        // Other users untouched; unknown users are empty, not errors.
        assert_eq!(store.offline_count("bob"), Ok(1));
        assert_eq!(store.offline_peek("nobody"), Ok(vec![]));
        assert_eq!(store.offline_count("nobody"), Ok(0));
        smol::block_on(store.offline_remove("nobody", u64::MAX)).unwrap();
    }

    #[test]
    fn sequence_numbers_are_not_reused() {
        let dir = TempDir::new("offline-seq");
        let store = open(&dir);
        smol::block_on(async {
            store.offline_push("alice", stanza(0), 10).await.unwrap();
            store.offline_remove("alice", 1).await.unwrap();
            store.offline_push("alice", stanza(1), 10).await.unwrap();
            // A stale removal of the first stanza must not touch the new one.
            store.offline_remove("alice", 1).await.unwrap();
        });
        assert_eq!(store.offline_peek("alice").unwrap(), vec![(2, stanza(1))]);
        assert_eq!(store.offline_count("alice"), Ok(1));
    }

    #[test]
    fn quota_is_per_user_and_frees_up() {
        let dir = TempDir::new("offline-quota");
        let store = open(&dir);
        smol::block_on(async {
            // Queued together, so the refused pushes share batches with accepted ones.
            let pushes: Vec<_> = (0..5)
                .map(|n| store.offline_push("alice", stanza(n), 3))
                .collect();
            let other = store.offline_push("bob", stanza(0), 3);
            let mut results = Vec::new();
            for push in pushes {
                results.push(push.await);
            }
            assert_eq!(
                results,
                [
                    Ok(()),
                    Ok(()),
                    Ok(()),
                    Err(StoreError::QuotaExceeded),
                    Err(StoreError::QuotaExceeded)
                ]
            );
            assert_eq!(other.await, Ok(()));
            assert_eq!(store.offline_count("alice"), Ok(3));
            assert_eq!(
                store.offline_push("alice", stanza(5), 0).await,
                Err(StoreError::QuotaExceeded)
            );
            store.offline_remove("alice", 1).await.unwrap();
            store.offline_push("alice", stanza(6), 3).await.unwrap();
        });
        let seqs: Vec<u64> = store
            .offline_peek("alice")
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(seqs, [2, 3, 4]);
        assert_eq!(store.offline_count("bob"), Ok(1));
    }

    #[test]
    fn durable_across_reopen() {
        let dir = TempDir::new("offline-durable");
        {
            let store = open(&dir);
            smol::block_on(async {
                store.offline_push("alice", stanza(0), 10).await.unwrap();
                store.offline_push("alice", stanza(1), 10).await.unwrap();
            });
            // Not awaited: close() must still commit it before the thread stops.
            let pending = store.offline_push("alice", stanza(2), 10);
            store.close();
            assert_eq!(smol::block_on(pending), Ok(()));
        }
        let store = open(&dir);
        let queued = store.offline_peek("alice").unwrap();
        assert_eq!(queued, vec![(1, stanza(0)), (2, stanza(1)), (3, stanza(2))]);
        smol::block_on(store.offline_push("alice", stanza(3), 10)).unwrap();
        assert_eq!(store.offline_peek("alice").unwrap()[3].0, 4);
    }

    #[test]
    fn group_commit_throughput() {
        const MESSAGES: usize = 5_000;
        const USERS: usize = 50;
        let dir = TempDir::new("offline-throughput");
        let store = open(&dir);
        let executor = smol::LocalExecutor::new();
        let started = Instant::now();
        smol::block_on(executor.run(async {
            let tasks: Vec<_> = (0..MESSAGES)
                .map(|n| {
                    let user = format!("user{}", n % USERS);
                    executor.spawn(store.offline_push(&user, stanza(n), MESSAGES))
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        }));
        let elapsed = started.elapsed();
        println!(
            "{MESSAGES} durable offline pushes in {elapsed:?}: {:.0}/s",
            MESSAGES as f64 / elapsed.as_secs_f64()
        );
        let mut total = 0;
        for user in 0..USERS {
            let user = format!("user{user}");
            let queued = store.offline_peek(&user).unwrap();
            assert_eq!(queued.len(), MESSAGES / USERS);
            assert_eq!(store.offline_count(&user), Ok((MESSAGES / USERS) as u64));
            // Arrival order is kept per user.
            assert!(queued.windows(2).all(|pair| pair[0].0 < pair[1].0));
            total += queued.len();
        }
        assert_eq!(total, MESSAGES);
    }
}
