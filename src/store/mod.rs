//! Persistent state: the only module that touches redb. It owns the one database file
//! (`hearth.redb` in the data dir), its schema version, and the group-commit writer thread.
//!
//! It must never make the event loop wait on disk for a write: hot writes go through
//! [`Store::write`]-based methods that return futures completed by the writer thread, and rare
//! admin writes (accounts) are synchronous for callers to run on a helper thread
//! (`smol::unblock`). No redb type appears in the public API.

mod accounts;
mod blocking;
pub mod files;
mod mam;
mod muc;
mod offline;
mod pep;
mod privacy;
mod private;
mod push;
mod roster;
mod vcard;
mod writer;

pub use mam::{ArchiveBatch, ArchivePage, ArchiveQuery, Held, PageAt};
pub use pep::{PepItem, Publish};
pub use privacy::PrivacyLists;
pub use push::PushRegistration;
pub use roster::{Roster, RosterItem, RosterTxn, Stored, Unlinked};

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Builder, Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, TableHandle, WriteTransaction,
};

use writer::Writer;

/// The schema this build reads and writes. Bump it (and add a migration in
/// [`check_schema`]) whenever a table's key/value layout changes. 2: archived messages are
/// stored once for both archives (`mam.rs`).
pub const SCHEMA_VERSION: u32 = 2;

/// File name of the database inside the data dir.
pub const DB_FILE_NAME: &str = "hearth.redb";

/// Default redb page cache: small, because the whole server has to idle in a few MiB on a
/// 512 MiB board and the working set (accounts, short offline queues) is tiny. Its 4 KiB
/// pages are allocated among the sessions' memory during a wave of logins and then keep
/// those heap pages from going back: 512 KiB instead of 1 MiB returned 1–2 MiB more after
/// waves of 1,000 and 10,000 sessions, for about 15 % more writer CPU per stored offline
/// message (256 KiB: 30 %; docs/PERFORMANCE.md).
pub const DEFAULT_CACHE_BYTES: usize = 512 * 1024;

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const SCHEMA_KEY: &str = "schema_version";

/// Why a store operation failed. Display is one line, fit for a log or a CLI message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The record to create is already there (e.g. the user exists).
    Exists,
    /// The record to change or delete is not there.
    NotFound,
    /// The user's offline queue is full.
    QuotaExceeded,
    /// Another process (normally the running server) has the database open; the CLI should
    /// talk to that server's control socket instead.
    Locked(PathBuf),
    /// The file was written by a newer hearth; refusing it protects that data.
    SchemaTooNew(u32),
    /// The file exists but is not a usable hearth database (corrupt, not redb, unreadable).
    Unreadable { path: PathBuf, reason: String },
    /// Any other database or I/O failure after a successful open.
    Db(String),
    /// The writer thread has stopped (after [`Store::close`]); no more writes are accepted.
    Closed,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Exists => f.write_str("already exists"),
            StoreError::NotFound => f.write_str("not found"),
            StoreError::QuotaExceeded => f.write_str("offline message quota exceeded"),
            StoreError::Locked(path) => write!(
                f,
                "database {} is in use by another process",
                path.display()
            ),
            StoreError::SchemaTooNew(found) => write!(
                f,
                "database schema {found} is newer than this hearth ({SCHEMA_VERSION})"
            ),
            StoreError::Unreadable { path, reason } => {
                write!(f, "cannot open database {}: {reason}", path.display())
            }
            StoreError::Db(reason) => write!(f, "database error: {reason}"),
            StoreError::Closed => f.write_str("database writer has shut down"),
        }
    }
}

impl std::error::Error for StoreError {}

/// redb messages may span lines; ours must not.
fn one_line(error: impl fmt::Display) -> String {
    error.to_string().replace(['\n', '\r'], " ")
}

macro_rules! from_redb_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(error: $error) -> Self {
                StoreError::Db(one_line(error))
            }
        }
    )*};
}
from_redb_errors!(
    redb::Error,
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Handle to the open database. Cheap to clone; usable from the event-loop thread and from
/// helper threads. The writer thread stops when the last clone is dropped (or on
/// [`Store::close`]), after committing everything already queued.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    writer: Writer,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Store {
    /// Opens (or creates) `data_dir/hearth.redb` with a page cache of `cache_bytes`
    /// ([`DEFAULT_CACHE_BYTES`] suits a small board). The data dir must exist.
    ///
    /// Every page is checksummed on open: the database stays small, and a damaged file then
    /// fails here with a message naming it instead of failing (or panicking) mid-session.
    pub fn open(data_dir: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE_NAME);
        let db = Builder::new()
            .set_cache_size(cache_bytes)
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|error| open_error(&path, error))?;
        // Owner-only whatever the umask: it holds every credential and message.
        files::make_private(&path).map_err(|error| StoreError::Unreadable {
            path: path.clone(),
            reason: format!("cannot make it owner-only: {}", one_line(error)),
        })?;
        check_schema(&db, &path)?;
        let db = Arc::new(db);
        let writer = Writer::start(Arc::clone(&db))?;
        Ok(Store {
            inner: Arc::new(Inner { db, writer, path }),
        })
    }

    /// Path of the database file, for messages.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Resolves once every write queued before this call is durable.
    pub fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        self.write(|_| Ok(()))
    }

    /// Stops accepting queued writes, commits everything already queued and joins the writer
    /// thread. Later queued writes fail with [`StoreError::Closed`]; synchronous operations
    /// keep working. Blocks: call it at shutdown, off the event loop or after it stopped.
    pub fn close(&self) {
        self.inner.writer.stop();
    }

    /// Queues `op` for the writer thread, which runs it together with every other queued op in
    /// one transaction and one durable commit. The future resolves after that commit (or with
    /// `op`'s own error, in which case none of its changes are kept).
    ///
    /// `op` is `Fn`, not `FnOnce`: when an op in a batch fails, the writer aborts the
    /// transaction and re-runs the batch without it (see `writer.rs`), so an op may run more
    /// than once and must derive everything from the transaction it is given.
    ///
    /// The op is queued at call time, so writes apply in call order; dropping the future does
    /// not cancel the write.
    fn write<F>(&self, op: F) -> impl Future<Output = Result<(), StoreError>> + Send + 'static
    where
        F: Fn(&WriteTransaction) -> Result<(), StoreError> + Send + 'static,
    {
        self.inner.writer.submit(Box::new(op))
    }

    /// Runs `op` in its own transaction on the calling thread and commits it with Immediate
    /// durability, or aborts it when `op` fails. For rare admin writes; blocks on disk.
    fn write_now<T>(
        &self,
        op: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.inner.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        match op(&txn) {
            Ok(value) => {
                txn.commit()?;
                Ok(value)
            }
            Err(error) => {
                txn.abort()?;
                Err(error)
            }
        }
    }

    /// A consistent snapshot for reads. Reads never wait for the writer.
    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.inner.db.begin_read()?)
    }
}

/// Removes everything stored for `user` outside the accounts table. Every per-user table must
/// be cleared here; [`Store::delete_user`] calls it in the same transaction that removes the
/// account, so a deleted user leaves nothing behind.
/// The distinct users of a table keyed by `(user, …)`, sorted: one key scan
/// (used at start-up to know who has a block or privacy list at all).
fn users_of<V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<(&str, &str), V>,
) -> Result<Vec<String>, StoreError> {
    let table = txn.open_table(table)?;
    let mut users: Vec<String> = Vec::new();
    for entry in table.iter()? {
        let (key, _) = entry?;
        let user = key.value().0;
        if users.last().map(String::as_str) != Some(user) {
            users.push(user.to_owned());
        }
    }
    Ok(users)
}

fn clear_user_data(txn: &WriteTransaction, user: &str) -> Result<(), StoreError> {
    offline::clear_user(txn, user)?;
    mam::clear_user(txn, user)?;
    blocking::clear_user(txn, user)?;
    vcard::clear_user(txn, user)?;
    private::clear_user(txn, user)?;
    pep::clear_user(txn, user)?;
    privacy::clear_user(txn, user)?;
    push::clear_user(txn, user)?;
    roster::clear_user(txn, user)
}

/// Creates every table, so that readers never meet a missing one.
fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    accounts::create_table(txn)?;
    muc::create_tables(txn)?;
    mam::create_tables(txn)?;
    offline::create_tables(txn)?;
    blocking::create_tables(txn)?;
    vcard::create_tables(txn)?;
    private::create_tables(txn)?;
    pep::create_tables(txn)?;
    privacy::create_tables(txn)?;
    push::create_tables(txn)?;
    roster::create_tables(txn)
}

fn open_error(path: &Path, error: DatabaseError) -> StoreError {
    match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Locked(path.to_path_buf())
        }
        DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            StoreError::Unreadable {
                path: path.to_path_buf(),
                reason: format!("not a hearth database ({})", one_line(io)),
            }
        }
        other => StoreError::Unreadable {
            path: path.to_path_buf(),
            reason: one_line(other),
        },
    }
}

/// Stamps a fresh file with [`SCHEMA_VERSION`], or checks the stamp of an existing one.
fn check_schema(db: &Database, path: &Path) -> Result<(), StoreError> {
    let unreadable = |reason: String| StoreError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let txn = db.begin_write()?;
    let has_meta = txn.list_tables()?.any(|table| table.name() == META.name());
    if !has_meta && txn.list_tables()?.next().is_some() {
        return Err(unreadable(
            "no schema version; not a hearth database".into(),
        ));
    }
    let found = if has_meta {
        let meta = txn.open_table(META)?;
        let found = meta.get(SCHEMA_KEY)?.map(|version| version.value());
        found
    } else {
        txn.open_table(META)?.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
        Some(SCHEMA_VERSION)
    };
    match found {
        Some(SCHEMA_VERSION) => {}
        Some(1) => {
            mam::migrate_from_v1(&txn)?;
            txn.open_table(META)?.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
        }
        Some(version) if version > SCHEMA_VERSION => return Err(StoreError::SchemaTooNew(version)),
        Some(version) => return Err(unreadable(format!("unknown schema version {version}"))),
        None => {
            return Err(unreadable(
                "no schema version; not a hearth database".into(),
            ))
        }
    }
    create_tables(&txn)?;
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "hearth-store-{name}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn open(dir: &TempDir) -> Store {
        Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap()
    }

    fn set_schema_version(dir: &TempDir, version: u32) {
        let db = Database::create(dir.0.join(DB_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_KEY, version)
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn creates_file_with_schema_version() {
        let dir = TempDir::new("create");
        let store = open(&dir);
        assert!(store.path().ends_with(DB_FILE_NAME));
        assert!(store.path().exists());
        drop(store);
        let db = Database::open(dir.0.join(DB_FILE_NAME)).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_eq!(
            meta.get(SCHEMA_KEY).unwrap().unwrap().value(),
            SCHEMA_VERSION
        );
    }

    #[test]
    fn reopen_keeps_schema_and_data() {
        let dir = TempDir::new("reopen");
        open(&dir).create_user("alice", b"c").unwrap();
        let store = open(&dir);
        assert!(store.user_exists("alice").unwrap());
    }

    #[test]
    fn newer_schema_refused() {
        let dir = TempDir::new("newer");
        drop(open(&dir));
        set_schema_version(&dir, 7);
        let error = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap_err();
        assert_eq!(error, StoreError::SchemaTooNew(7));
        assert_eq!(
            error.to_string(),
            "database schema 7 is newer than this hearth (2)"
        );
    }

    #[test]
    fn unknown_schema_refused() {
        let dir = TempDir::new("unknown");
        drop(open(&dir));
        set_schema_version(&dir, 0);
        let error = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap_err();
        assert!(matches!(error, StoreError::Unreadable { .. }), "{error}");
        assert!(error.to_string().contains("unknown schema version 0"));
    }

    #[test]
    fn foreign_redb_file_refused() {
        let dir = TempDir::new("foreign");
        {
            let db = Database::create(dir.0.join(DB_FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            let other: TableDefinition<u64, u64> = TableDefinition::new("other");
            txn.open_table(other).unwrap().insert(1, 2).unwrap();
            txn.commit().unwrap();
        }
        let error = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap_err();
        assert!(
            error.to_string().contains("not a hearth database"),
            "{error}"
        );
    }

    #[test]
    fn garbage_file_refused_with_path() {
        let dir = TempDir::new("garbage");
        let path = dir.0.join(DB_FILE_NAME);
        let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, garbage).unwrap();
        let error = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap_err();
        assert!(matches!(error, StoreError::Unreadable { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!message.contains('\n'));
    }

    #[test]
    fn truncated_file_refused() {
        let dir = TempDir::new("truncated");
        drop(open(&dir));
        let path = dir.0.join(DB_FILE_NAME);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..100]).unwrap();
        let error = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap_err();
        assert!(matches!(error, StoreError::Unreadable { .. }), "{error:?}");
    }

    #[test]
    fn damaged_pages_refused() {
        let dir = TempDir::new("damaged");
        {
            let store = open(&dir);
            for n in 0..200 {
                store.create_user(&format!("user{n}"), &[7; 64]).unwrap();
            }
        }
        let path = dir.0.join(DB_FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        // Past the header: scribble over the data pages.
        for byte in bytes.iter_mut().skip(8192) {
            *byte ^= 0x5A;
        }
        std::fs::write(&path, bytes).unwrap();
        let error = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap_err();
        assert!(matches!(error, StoreError::Unreadable { .. }), "{error:?}");
    }

    #[test]
    fn missing_data_dir_names_path() {
        let dir = TempDir::new("missing");
        let absent = dir.0.join("absent");
        let error = Store::open(&absent, DEFAULT_CACHE_BYTES).unwrap_err();
        assert!(error.to_string().contains("absent"), "{error}");
    }

    #[test]
    fn second_open_is_locked() {
        let dir = TempDir::new("locked");
        let store = open(&dir);
        let error = Store::open(&dir.0, DEFAULT_CACHE_BYTES).unwrap_err();
        assert_eq!(error, StoreError::Locked(store.path().to_path_buf()));
        assert!(error.to_string().contains("in use by another process"));
        drop(store);
        assert!(Store::open(&dir.0, DEFAULT_CACHE_BYTES).is_ok());
    }

    #[test]
    fn errors_display_on_one_line() {
        for error in [
            StoreError::Exists,
            StoreError::NotFound,
            StoreError::QuotaExceeded,
            StoreError::Closed,
            StoreError::Db("a".into()),
        ] {
            assert!(!error.to_string().is_empty());
        }
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }
}
