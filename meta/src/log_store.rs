//! The Raft log store of a meta node: openraft's `RaftLogStorage` and `RaftLogReader` over
//! [`crate::log_file`], plus the vote and the log state (last purged and committed log ids),
//! each in a small file replaced atomically.
//!
//! Every live entry is also kept in memory (the meta log is small: openraft purges it after each
//! snapshot), so readers never touch the disk. Writes run on tokio's blocking pool, because
//! fsync must not stall the runtime's worker threads; an entry becomes visible to readers only
//! after it is durable.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogReader};
use serde::{Deserialize, Serialize};

use crate::atomic_file::{DirLock, prepare_dir, read_atomic, write_atomic};
use crate::error::{MetaError, poisoned, task_failed};
use crate::limits::{LOG_COMPACT_PURGED_FRAMES_MIN, SMALL_FILE_BYTES_MAX};
use crate::log_file::LogFile;
use crate::types::{MetaEntry, MetaLogId, MetaStorageError, MetaVote, TypeConfig};

/// Name of the vote file inside the log store's directory.
pub const VOTE_FILE_NAME: &str = "vote";
/// Name of the log state file (last purged and committed log ids).
pub const LOG_STATE_FILE_NAME: &str = "log_state";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PersistedLogState {
    last_purged: Option<MetaLogId>,
    committed: Option<MetaLogId>,
}

/// What readers see: durable state only.
#[derive(Default)]
struct LogMem {
    entries: BTreeMap<u64, MetaEntry>,
    last_purged: Option<MetaLogId>,
    committed: Option<MetaLogId>,
    vote: Option<MetaVote>,
}

impl LogMem {
    fn last_log_id(&self) -> Option<MetaLogId> {
        self.entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(self.last_purged)
    }

    fn persisted_state(&self) -> PersistedLogState {
        PersistedLogState {
            last_purged: self.last_purged,
            committed: self.committed,
        }
    }
}

/// What a purge does to the log file.
enum Compaction {
    /// Every entry in the file is purged: empty it.
    Clear,
    /// Enough purged frames piled up: rewrite the file with only these live entries.
    Rewrite(Vec<MetaEntry>),
    /// Leave the purged frames in place for now.
    None,
}

/// The part only the writer touches, always on the blocking pool.
struct Writer {
    dir: PathBuf,
    file: LogFile,
    _lock: DirLock,
}

fn lock_mem(mem: &Mutex<LogMem>) -> Result<MutexGuard<'_, LogMem>, MetaError> {
    mem.lock().map_err(|_| poisoned("log memory"))
}

/// The durable Raft log of one meta node. Hand it to `openraft::Raft::new`.
pub struct LogStore {
    mem: Arc<Mutex<LogMem>>,
    writer: Arc<Mutex<Writer>>,
}

/// A read-only view of a [`LogStore`], for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    mem: Arc<Mutex<LogMem>>,
}

impl LogStore {
    /// Opens the log store in `dir`, creating it if needed. Verifies every checksum, cuts a torn
    /// tail off the log file and fails on any other damage.
    pub fn open(dir: &Path) -> Result<LogStore, MetaError> {
        let lock = prepare_dir(dir)?;
        let vote: Option<MetaVote> = read_json(dir, VOTE_FILE_NAME)?;
        let state: PersistedLogState = read_json(dir, LOG_STATE_FILE_NAME)?.unwrap_or_default();
        let (file, all_entries) = LogFile::open(dir)?;

        let purged_index = state.last_purged.map(|id| id.index);
        let entries: BTreeMap<u64, MetaEntry> = all_entries
            .into_iter()
            .filter(|e| purged_index.is_none_or(|p| e.log_id.index > p))
            .map(|e| (e.log_id.index, e))
            .collect();
        let mem = LogMem {
            entries,
            last_purged: state.last_purged,
            committed: state.committed,
            vote,
        };
        let log_path = dir.join(crate::log_file::LOG_FILE_NAME);
        let last_index = mem.last_log_id().map(|id| id.index);
        if let Some(committed) = mem.committed
            && last_index.is_none_or(|last| committed.index > last)
        {
            return Err(MetaError::Corrupt {
                path: log_path,
                offset: 0,
                reason: format!(
                    "committed entry {} is missing: the log ends at {last_index:?}",
                    committed.index
                ),
            });
        }
        Ok(LogStore {
            mem: Arc::new(Mutex::new(mem)),
            writer: Arc::new(Mutex::new(Writer {
                dir: dir.to_path_buf(),
                file,
                _lock: lock,
            })),
        })
    }

    /// Runs `op` with the writer on the blocking pool.
    async fn write<T, F>(&self, op: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer, &Mutex<LogMem>) -> Result<T, MetaError> + Send + 'static,
    {
        let writer = Arc::clone(&self.writer);
        let mem = Arc::clone(&self.mem);
        tokio::task::spawn_blocking(move || {
            let mut writer = writer.lock().map_err(|_| poisoned("log writer"))?;
            op(&mut writer, &mem)
        })
        .await
        .map_err(task_failed)?
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<Option<T>, MetaError> {
    let Some(bytes) = read_atomic(dir, name, SMALL_FILE_BYTES_MAX)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| MetaError::Corrupt {
            path: dir.join(name),
            offset: 0,
            reason: format!("checksum matches but the contents do not decode: {e}"),
        })
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), MetaError> {
    let bytes = serde_json::to_vec(value).map_err(|source| MetaError::Encode {
        what: "log store metadata",
        source,
    })?;
    write_atomic(dir, name, &bytes, SMALL_FILE_BYTES_MAX)
}

/// Whether `range` holds any index. `BTreeMap::range` panics on some empty ranges, and
/// openraft may ask for one.
fn non_empty<RB: RangeBounds<u64>>(range: &RB) -> bool {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => match s.checked_add(1) {
            Some(s) => s,
            None => return false,
        },
        Bound::Unbounded => 0,
    };
    match range.end_bound() {
        Bound::Included(&e) => start <= e,
        Bound::Excluded(&e) => start < e,
        Bound::Unbounded => true,
    }
}

fn read_entries<RB>(mem: &Mutex<LogMem>, range: RB) -> Result<Vec<MetaEntry>, MetaError>
where
    RB: RangeBounds<u64>,
{
    if !non_empty(&range) {
        return Ok(Vec::new());
    }
    let mem = lock_mem(mem)?;
    Ok(mem.entries.range(range).map(|(_, e)| e.clone()).collect())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<MetaEntry>, MetaStorageError> {
        read_entries(&self.mem, range)
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<MetaEntry>, MetaStorageError> {
        read_entries(&self.mem, range)
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, MetaStorageError> {
        let mem =
            lock_mem(&self.mem).map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))?;
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            mem: Arc::clone(&self.mem),
        }
    }

    async fn save_vote(&mut self, vote: &MetaVote) -> Result<(), MetaStorageError> {
        let vote = *vote;
        self.write(move |w, mem| {
            write_json(&w.dir, VOTE_FILE_NAME, &vote)?;
            lock_mem(mem)?.vote = Some(vote);
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<MetaVote>, MetaStorageError> {
        let mem =
            lock_mem(&self.mem).map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))?;
        Ok(mem.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<MetaLogId>,
    ) -> Result<(), MetaStorageError> {
        self.write(move |w, mem| {
            let state = {
                let mem = lock_mem(mem)?;
                if mem.committed == committed {
                    return Ok(());
                }
                PersistedLogState {
                    committed,
                    ..mem.persisted_state()
                }
            };
            write_json(&w.dir, LOG_STATE_FILE_NAME, &state)?;
            lock_mem(mem)?.committed = committed;
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<MetaLogId>, MetaStorageError> {
        let mem = lock_mem(&self.mem)
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))?;
        Ok(mem.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), MetaStorageError>
    where
        I: IntoIterator<Item = MetaEntry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<MetaEntry> = entries.into_iter().collect();
        self.write(move |w, mem| {
            if let Some(first) = entries.first() {
                // Openraft truncates before it overwrites, but an append at an index already
                // present replaces the entries from there on, as in openraft's storage suite.
                let index = first.log_id.index;
                let (last_purged, overwrites) = {
                    let mem = lock_mem(mem)?;
                    let last = mem.entries.keys().next_back().copied();
                    (mem.last_purged, last.is_some_and(|l| l >= index))
                };
                if last_purged.is_some_and(|p| index <= p.index) {
                    // Openraft never does this; its storage suite does, and expects the entry
                    // to be readable. It is dropped again at the next open.
                    tracing::warn!(index, ?last_purged, "append at or below the purge point");
                }
                if overwrites {
                    w.file.truncate_from(index)?;
                    lock_mem(mem)?.entries.split_off(&index);
                }
                w.file.append(&entries)?;
                let mut mem = lock_mem(mem)?;
                mem.entries
                    .extend(entries.into_iter().map(|e| (e.log_id.index, e)));
            }
            // Only now is the batch durable.
            callback.log_io_completed(Ok(()));
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))
    }

    async fn truncate(&mut self, log_id: MetaLogId) -> Result<(), MetaStorageError> {
        let index = log_id.index;
        self.write(move |w, mem| {
            let last_purged = lock_mem(mem)?.last_purged;
            if last_purged.is_some_and(|p| index <= p.index) {
                tracing::warn!(index, ?last_purged, "truncate at or below the purge point");
            }
            w.file.truncate_from(index)?;
            lock_mem(mem)?.entries.split_off(&index);
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: MetaLogId) -> Result<(), MetaStorageError> {
        self.write(move |w, mem| {
            let state = {
                let mem = lock_mem(mem)?;
                if mem.last_purged.is_some_and(|p| p.index >= log_id.index) {
                    return Ok(());
                }
                PersistedLogState {
                    last_purged: Some(log_id),
                    ..mem.persisted_state()
                }
            };
            // The purge point is durable before any entry is dropped, so a crash in between
            // leaves entries the log state already says are gone, never a gap.
            write_json(&w.dir, LOG_STATE_FILE_NAME, &state)?;
            let compaction = {
                let mut mem = lock_mem(mem)?;
                mem.last_purged = Some(log_id);
                mem.entries = mem.entries.split_off(&(log_id.index + 1));
                let purged_frames = w.file.frames_below(log_id.index + 1);
                if mem.entries.is_empty() {
                    Compaction::Clear
                } else if purged_frames >= LOG_COMPACT_PURGED_FRAMES_MIN
                    && purged_frames >= mem.entries.len()
                {
                    Compaction::Rewrite(mem.entries.values().cloned().collect())
                } else {
                    Compaction::None
                }
            };
            match compaction {
                Compaction::Clear => w.file.truncate_from(0)?,
                Compaction::Rewrite(live) => w.file.rewrite(&live)?,
                Compaction::None => {}
            }
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }
}
