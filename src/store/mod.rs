//! The durable store in the data dir: last-seen times, posts with their
//! author index, and the social graph (follows and blocks). docs/store.md
//! describes the key layout and the durability settings.
//!
//! Owns the on-disk key layout and when a write counts as durable. It is the
//! only module that names the engine (fjall, an LSM tree with a
//! write-ahead journal); the rest of the crate sees [`Store`],
//! [`Durability`], [`StoreError`] and the record types. It must not decide
//! what to write or when: the presence flusher and the feed do; the feed's
//! group committer ([`Committer`]) only decides how many posts share a write.
//!
//! Every method blocks on disk I/O (a write with [`Durability::Fsync`] waits
//! for an fsync). Async callers go through `tokio::task::spawn_blocking` or a
//! dedicated thread, never straight from a runtime worker.

mod commit;
mod error;
mod feed;
#[cfg(test)]
mod tests;

pub use commit::Committer;
pub use error::{Outage, StoreError};
pub use feed::{Edge, Order, StoredPost};

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode, Readable};
use serde::{Deserialize, Serialize};

use error::from_engine;

/// Key space (fjall keyspace) of last-seen times: user id, u64 big-endian →
/// last seen, Unix ms, u64 big-endian. The feed's key spaces are in
/// `feed.rs`.
const LAST_SEEN: &str = "last_seen";
/// The last-seen memtable's size before it is flushed to disk. Churn writes
/// a few dozen bytes per user going offline, all day long: the engine's
/// default (64 MiB) would be a slow 64-MiB sawtooth in the daemon's RSS, for
/// entries that nobody reads back from memory. fjall keeps the size a
/// keyspace was created with: data dirs from before keep 64 MiB.
const LAST_SEEN_MEMTABLE: u64 = 8 << 20;

/// Name of the file [`Store::recover`] writes to test that the data dir takes
/// writes again, in the store's directory.
const PROBE_FILE: &str = "recovery-probe";
/// How much the probe writes: room for the engine's reopen and the undo of
/// the failed write, so that a reopen is not tried on a disk with a few free
/// pages only to fail again at once.
const PROBE_BYTES: usize = 1 << 20;
/// How long [`Store::recover`] waits for the old engine's lock to be released.
const RELOCK_PATIENCE: Duration = Duration::from_secs(2);

/// When a write returns, how much of a crash it survives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After an fsync of the journal: survives power loss and OS crashes.
    #[default]
    Fsync,
    /// Once the journal is in the OS page cache: survives the process dying,
    /// not the machine.
    Os,
}

/// A handle on the store. Cloning is cheap (reference counts) and clones
/// share one database; the files are closed when the last clone is dropped.
///
/// After a failed write the store is *down*: the engine refuses writes until
/// [`Store::recover`] reopens it (docs/store.md, "Outages"). Every clone
/// sees the reopened engine.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    durability: Durability,
    /// `None` only while [`Store::recover`] swaps engines, or after a reopen
    /// failed. Every operation holds the read guard while it runs, so the
    /// swap waits for operations on the old engine to end.
    engine: RwLock<Option<Engine>>,
    /// `Some` from the first failed write until [`Store::recover`] succeeds.
    down: Mutex<Option<Down>>,
}

/// One open fjall database and its key spaces.
struct Engine {
    db: Database,
    last_seen: Keyspace,
    feed: feed::Keyspaces,
}

/// Why and since when the store is down.
struct Down {
    /// Reverses the write that failed, if part of it may have reached the
    /// journal: fjall keeps a failed batch's unwritten bytes in its buffer
    /// and writes them when the old engine is dropped, so without this a
    /// write answered with an error could be there after the reopen.
    undo: Option<Undo>,
}

/// Adds to a batch, on a fresh engine, the writes that reverse a failed
/// write. Idempotent, so that an undo that fails too can be tried again.
type Undo = Box<dyn Fn(&Engine, &mut OwnedWriteBatch) + Send + Sync>;

impl Store {
    /// Opens the store in `dir`, creating the directory and an empty store if
    /// missing, and replays the journal of an unclean shutdown. Fails with
    /// [`StoreError::Locked`] while another handle has `dir` open.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|cause| StoreError::CreateDir { path: dir.to_owned(), cause: Arc::new(cause) })?;
        let engine = Engine::open(dir)?;
        Ok(Store {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                durability,
                engine: RwLock::new(Some(engine)),
                down: Mutex::new(None),
            }),
        })
    }

    /// Writes last-seen times `(user, last_seen_ms)` as one atomic batch: after
    /// a crash either all of them are there or none. Returns once the batch is
    /// as durable as the store's [`Durability`] says. If a user appears more
    /// than once, the last entry wins. A failed batch is not undone (the
    /// caller writes the same times again, or newer ones).
    pub fn put_last_seen(&self, batch: &[(u64, u64)]) -> Result<(), StoreError> {
        self.with(|engine| {
            let mut write = self.batch(engine);
            // Every entry of a batch gets the same sequence number, so two writes
            // of one key would tie inside the engine; keep the last one here.
            let mut seen = HashSet::with_capacity(batch.len());
            for &(user, last_seen_ms) in batch.iter().rev() {
                if seen.insert(user) {
                    write.insert(&engine.last_seen, user.to_be_bytes(), last_seen_ms.to_be_bytes());
                }
            }
            self.commit(write, || None)
        })
    }

    /// The last-seen time stored for `user`, `None` if none was ever stored.
    pub fn last_seen(&self, user: u64) -> Result<Option<u64>, StoreError> {
        self.with(|engine| {
            // Through a snapshot: `Keyspace::get` reads at the newest sequence
            // number, which includes half-applied batches still being committed.
            let read = engine.db.snapshot().get(&engine.last_seen, user.to_be_bytes());
            let Some(value) = read.map_err(from_engine)? else {
                return Ok(None);
            };
            let bytes = <[u8; 8]>::try_from(&*value).map_err(|_| {
                StoreError::Corrupt(format!("last seen of user {user} has {} bytes, not 8", value.len()))
            })?;
            Ok(Some(u64::from_be_bytes(bytes)))
        })
    }

    /// Fsyncs the journal, whatever the durability: call it at shutdown so
    /// that writes made with [`Durability::Os`] also survive a power loss
    /// that follows.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.with(|engine| {
            engine.db.persist(PersistMode::SyncAll).map_err(|e| {
                let e = from_engine(e);
                self.mark_down(None, &e);
                e
            })
        })
    }

    /// Whether a write failed and the store refuses writes until
    /// [`Store::recover`] succeeds. Reads keep working meanwhile.
    pub fn is_down(&self) -> bool {
        self.inner.down.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Brings a down store back: checks that the data dir takes writes again
    /// (writes and fsyncs a 1 MiB probe file, then removes it), closes the
    /// engine, opens it again (replaying its journal), undoes whatever part
    /// of the failed write reached the journal, and takes writes again.
    /// `Ok(false)` when the store was not down; `Err` while it stays down
    /// (call again later). Blocks for the reopen; while it runs, and after a
    /// reopen that failed, reads fail with [`StoreError::Reopening`] too.
    pub fn recover(&self) -> Result<bool, StoreError> {
        if !self.is_down() {
            return Ok(false);
        }
        probe(&self.inner.dir)?;
        // Taken under the write lock (waiting for running operations), dropped
        // outside it: dropping joins the engine's threads and flushes its
        // journal buffer.
        let old = self.inner.engine.write().unwrap_or_else(PoisonError::into_inner).take();
        drop(old);
        let engine = self.reopen()?;
        let undone = match &self.inner.down.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            Some(Down { undo: Some(undo) }) => {
                let mut write = engine.db.batch().durability(Some(PersistMode::SyncAll));
                undo(&engine, &mut write);
                write.commit().map_err(from_engine)
            }
            _ => Ok(()),
        };
        // Installed even when the undo failed: reads work, writes are refused
        // (the engine is poisoned) and the next call reopens again.
        *self.inner.engine.write().unwrap_or_else(PoisonError::into_inner) = Some(engine);
        undone?;
        *self.inner.down.lock().unwrap_or_else(PoisonError::into_inner) = None;
        tracing::warn!(dir = %self.inner.dir.display(), "store reopened; writes accepted again");
        Ok(true)
    }

    /// Opens the engine again, waiting a little for the old one's lock.
    fn reopen(&self) -> Result<Engine, StoreError> {
        let deadline = Instant::now() + RELOCK_PATIENCE;
        loop {
            match Engine::open(&self.inner.dir) {
                Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                opened => return opened,
            }
        }
    }

    /// Runs `f` on the engine, holding it for that long.
    fn with<T>(&self, f: impl FnOnce(&Engine) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let engine = self.inner.engine.read().unwrap_or_else(PoisonError::into_inner);
        f(engine.as_ref().ok_or(StoreError::Reopening)?)
    }

    /// A write batch with the store's durability.
    fn batch(&self, engine: &Engine) -> OwnedWriteBatch {
        engine.db.batch().durability(Some(self.persist_mode()))
    }

    /// Commits `write`; if it fails, the store is down from now on, and
    /// `undo` (called only then) says how to reverse it after a reopen.
    fn commit(&self, write: OwnedWriteBatch, undo: impl FnOnce() -> Option<Undo>) -> Result<(), StoreError> {
        match write.commit() {
            Ok(()) => Ok(()),
            // Refused before anything was written: nothing to undo.
            Err(fjall::Error::Poisoned) => {
                self.mark_down(None, &StoreError::Poisoned);
                Err(StoreError::Poisoned)
            }
            Err(e) => {
                let e = from_engine(e);
                self.mark_down(undo(), &e);
                Err(e)
            }
        }
    }

    fn mark_down(&self, undo: Option<Undo>, cause: &StoreError) {
        let mut down = self.inner.down.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *down {
            // The engine lets one write fail (the others see `Poisoned`), but
            // that one may report after a `Poisoned` one.
            Some(down) => {
                if undo.is_some() {
                    down.undo = undo;
                }
            }
            None => {
                tracing::error!(
                    error = %cause,
                    outage = ?cause.outage(),
                    dir = %self.inner.dir.display(),
                    "store write failed; refusing writes until the data dir takes writes again"
                );
                *down = Some(Down { undo });
            }
        }
    }

    fn persist_mode(&self) -> PersistMode {
        match self.inner.durability {
            // SyncAll rather than SyncData: the journal grows with every
            // write, so fdatasync would write the inode (its size) anyway.
            Durability::Fsync => PersistMode::SyncAll,
            // Buffer hands the journal to the kernel (write(2)) without
            // waiting for the disk.
            Durability::Os => PersistMode::Buffer,
        }
    }
}

impl Engine {
    fn open(dir: &Path) -> Result<Engine, StoreError> {
        let db = Database::builder(dir).open().map_err(|e| match e {
            fjall::Error::Locked => StoreError::Locked(dir.to_owned()),
            e => from_engine(e),
        })?;
        let options = || KeyspaceCreateOptions::default().max_memtable_size(LAST_SEEN_MEMTABLE);
        let last_seen = db.keyspace(LAST_SEEN, options).map_err(from_engine)?;
        let feed = feed::Keyspaces::open(&db)?;
        Ok(Engine { db, last_seen, feed })
    }
}

/// Writes, fsyncs and removes a [`PROBE_BYTES`] file in `dir`.
fn probe(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(PROBE_FILE);
    let written = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(&[0; PROBE_BYTES])?;
        file.sync_all()
    });
    // Removed whether or not the write worked: a half-written probe must not
    // keep the space the engine needs.
    let removed = std::fs::remove_file(&path);
    written.and(removed).map_err(|e| StoreError::Io(Arc::new(e)))
}
