//! What can go wrong in the store, sorted so that callers can act on it.
//!
//! Owns the mapping from the engine's errors to [`StoreError`]. It must not
//! expose the engine's types: callers see I/O errors, the kind of outage, and
//! an opaque source for the rest.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A failed store operation. Its message includes its cause, which is
/// therefore not also its `source()` (it would print twice in a chain).
///
/// `Clone` because one failed group commit is reported to every post that
/// waited on it (see [`super::Committer`]); the sources sit behind `Arc` so
/// that each waiter gets the very same cause, not a copy of its message.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's directory could not be created.
    #[error("cannot create store directory {}: {cause}", path.display())]
    CreateDir { path: PathBuf, cause: Arc<io::Error> },
    /// Another handle, in this process or another, has the store open.
    #[error("store {} is already open elsewhere", .0.display())]
    Locked(PathBuf),
    /// Reading or writing a file failed: disk full, read-only file system,
    /// quota, or a device error. A failed write also leaves the store down
    /// until [`super::Store::recover`].
    #[error("store I/O failed: {0}")]
    Io(Arc<io::Error>),
    /// An earlier write failed, so the engine refuses every write until the
    /// store is reopened ([`super::Store::recover`]): it cannot tell how much
    /// of that write reached the journal.
    #[error("store refuses writes after an earlier write failure; it must be reopened")]
    Poisoned,
    /// The store is being reopened after an outage, or its last reopen
    /// failed (see [`super::Store::recover`]).
    #[error("store is closed while it recovers from an outage")]
    Reopening,
    /// A record does not have the shape its key space stores.
    #[error("store record is corrupt: {0}")]
    Corrupt(String),
    /// Anything else the engine reported (checksum mismatch, unknown format
    /// version, failed recovery): waiting will not fix it.
    #[error("store engine error: {0}")]
    Engine(Arc<dyn std::error::Error + Send + Sync>),
}

/// Why the store cannot serve a write right now, for logs and operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// No space or quota left on the data dir's file system.
    Full,
    /// The data dir's file system was remounted read-only.
    ReadOnly,
    /// Any other I/O failure, or poisoning after one.
    Io,
}

impl StoreError {
    /// Whether the store is down for a reason that may go away (space is
    /// freed, the disk comes back): callers answer UNAVAILABLE and retry,
    /// after [`super::Store::recover`] (see docs/store.md, "Outages").
    pub fn is_unavailable(&self) -> bool {
        self.outage().is_some()
    }

    /// The kind of outage, `None` when the error is not one (corruption,
    /// lock, bad directory).
    pub fn outage(&self) -> Option<Outage> {
        match self {
            Self::Io(e) => Some(match e.kind() {
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Outage::Full,
                io::ErrorKind::ReadOnlyFilesystem => Outage::ReadOnly,
                _ => Outage::Io,
            }),
            // fjall returns the cause once, then only "poisoned": the cause
            // was logged with the first error.
            Self::Poisoned | Self::Reopening => Some(Outage::Io),
            Self::CreateDir { .. } | Self::Locked(_) | Self::Corrupt(_) | Self::Engine(_) => None,
        }
    }
}

/// Sorts an engine error; the I/O errors fjall wraps in its LSM layer count
/// as I/O too, so that "disk full" is recognised wherever it happened.
pub(super) fn from_engine(e: fjall::Error) -> StoreError {
    match e {
        fjall::Error::Io(e) | fjall::Error::Storage(fjall::LsmError::Io(e)) => StoreError::Io(Arc::new(e)),
        fjall::Error::Poisoned => StoreError::Poisoned,
        other => StoreError::Engine(Arc::new(other)),
    }
}
