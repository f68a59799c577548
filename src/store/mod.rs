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
use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use serde::{Deserialize, Serialize};

use error::from_engine;

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

/// Key space (fjall keyspace) of last-seen times: user id, u64 big-endian →
/// last seen, Unix ms, u64 big-endian. The feed's key spaces are in
/// `feed.rs`.
const LAST_SEEN: &str = "last_seen";

/// A handle on the store. Cloning is cheap (reference counts) and clones
/// share one database; the files are closed when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    db: Database,
    last_seen: Keyspace,
    feed: feed::Keyspaces,
    durability: Durability,
}

impl Store {
    /// Opens the store in `dir`, creating the directory and an empty store if
    /// missing, and replays the journal of an unclean shutdown. Fails with
    /// [`StoreError::Locked`] while another handle has `dir` open.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source: Arc::new(source) })?;
        let db = Database::builder(dir).open().map_err(|e| match e {
            fjall::Error::Locked => StoreError::Locked(dir.to_owned()),
            e => from_engine(e),
        })?;
        let last_seen = db.keyspace(LAST_SEEN, KeyspaceCreateOptions::default).map_err(from_engine)?;
        let feed = feed::Keyspaces::open(&db)?;
        Ok(Store { db, last_seen, feed, durability })
    }

    /// Writes last-seen times `(user, last_seen_ms)` as one atomic batch: after
    /// a crash either all of them are there or none. Returns once the batch is
    /// as durable as the store's [`Durability`] says. If a user appears more
    /// than once, the last entry wins.
    pub fn put_last_seen(&self, batch: &[(u64, u64)]) -> Result<(), StoreError> {
        let mut write = self.db.batch().durability(Some(self.persist_mode()));
        // Every entry of a batch gets the same sequence number, so two writes
        // of one key would tie inside the engine; keep the last one here.
        let mut seen = HashSet::with_capacity(batch.len());
        for &(user, last_seen_ms) in batch.iter().rev() {
            if seen.insert(user) {
                write.insert(&self.last_seen, user.to_be_bytes(), last_seen_ms.to_be_bytes());
            }
        }
        write.commit().map_err(from_engine)
    }

    /// The last-seen time stored for `user`, `None` if none was ever stored.
    pub fn last_seen(&self, user: u64) -> Result<Option<u64>, StoreError> {
        // Through a snapshot: `Keyspace::get` reads at the newest sequence
        // number, which includes half-applied batches still being committed.
        let read = self.db.snapshot().get(&self.last_seen, user.to_be_bytes());
        let Some(value) = read.map_err(from_engine)? else {
            return Ok(None);
        };
        let bytes = <[u8; 8]>::try_from(&*value)
            .map_err(|_| StoreError::Corrupt(format!("last seen of user {user} has {} bytes, not 8", value.len())))?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// Fsyncs the journal, whatever the durability: call it at shutdown so
    /// that writes made with [`Durability::Os`] also survive a power loss
    /// that follows.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll).map_err(from_engine)
    }

    fn persist_mode(&self) -> PersistMode {
        match self.durability {
            // SyncAll rather than SyncData: the journal grows with every
            // write, so fdatasync would write the inode (its size) anyway.
            Durability::Fsync => PersistMode::SyncAll,
            // Buffer hands the journal to the kernel (write(2)) without
            // waiting for the disk.
            Durability::Os => PersistMode::Buffer,
        }
    }
}
