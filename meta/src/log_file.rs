//! The Raft log on disk: one append-only file of CRC-checked frames ([`crate::frame`]), one
//! JSON-encoded entry per frame, indexes strictly increasing from the first frame to the last
//! (openraft keeps them consecutive; its storage test suite does not, so gaps are allowed).
//!
//! Appends are fsynced before they are reported done. Truncation cuts the file at the first
//! removed entry's offset and fsyncs. Purged entries stay in the file (the log state file says
//! where the live log starts) until enough pile up, then the file is rewritten without them
//! (write a temporary file, fsync, rename, fsync the directory). At open, a torn tail is cut and
//! any other damage is an error.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::atomic_file::fsync_dir;
use crate::error::MetaError;
use crate::frame::{encode_frame, scan_frames};
use crate::limits::{LOG_ENTRY_BYTES_MAX, LOG_FILE_BYTES_MAX};
use crate::types::MetaEntry;

/// Name of the log file inside the log store's directory.
pub const LOG_FILE_NAME: &str = "log";
const LOG_REWRITE_NAME: &str = "log.rewrite.tmp";

pub(crate) struct LogFile {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Byte offset of every frame in the file, by log index.
    offsets: BTreeMap<u64, u64>,
    /// Bytes of valid frames: the file's length whenever no operation is in progress.
    len: u64,
    /// Set when a failed write may have left bytes we could not take back; every later
    /// operation fails rather than append after them.
    broken: bool,
}

impl LogFile {
    /// Opens (or creates) the log file in `dir` and returns every entry in it, purged ones
    /// included, in index order.
    pub(crate) fn open(dir: &Path) -> Result<(LogFile, Vec<MetaEntry>), MetaError> {
        let path = dir.join(LOG_FILE_NAME);
        let existed = path.exists();
        let mut file = open_for_append(&path)?;
        if !existed {
            fsync_dir(dir)?;
        }
        let file_len = file
            .metadata()
            .map_err(|e| MetaError::io("reading metadata of", &path, e))?
            .len();
        if file_len > LOG_FILE_BYTES_MAX {
            return Err(MetaError::TooLarge {
                what: "log file",
                len: file_len,
                max: LOG_FILE_BYTES_MAX,
            });
        }
        let mut bytes = Vec::with_capacity(file_len as usize);
        file.read_to_end(&mut bytes)
            .map_err(|e| MetaError::io("reading", &path, e))?;

        let scan = scan_frames(&bytes).map_err(|c| MetaError::Corrupt {
            path: path.clone(),
            offset: c.offset,
            reason: format!(
                "{} in the middle of the log (a valid frame follows at offset {}), not a torn tail",
                c.reason, c.next_valid_offset
            ),
        })?;
        let mut entries: Vec<MetaEntry> = Vec::with_capacity(scan.frames.len());
        let mut offsets = BTreeMap::new();
        for &(offset, payload) in &scan.frames {
            let entry: MetaEntry =
                serde_json::from_slice(payload).map_err(|e| MetaError::Corrupt {
                    path: path.clone(),
                    offset,
                    reason: format!("checksum matches but the entry does not decode: {e}"),
                })?;
            let index = entry.log_id.index;
            if let Some(prev) = entries.last()
                && prev.log_id.index >= index
            {
                return Err(MetaError::Corrupt {
                    path: path.clone(),
                    offset,
                    reason: format!("entry {index} follows entry {}", prev.log_id.index),
                });
            }
            offsets.insert(index, offset);
            entries.push(entry);
        }

        let mut log = LogFile {
            dir: dir.to_path_buf(),
            path,
            file,
            offsets,
            len: scan.valid_bytes,
            broken: false,
        };
        if scan.valid_bytes < file_len {
            tracing::warn!(
                path = %log.path.display(),
                valid_bytes = scan.valid_bytes,
                file_len,
                "cutting a torn tail off the meta log"
            );
            log.set_len(scan.valid_bytes)?;
        }
        Ok((log, entries))
    }

    fn check_usable(&self) -> Result<(), MetaError> {
        if self.broken {
            return Err(MetaError::Invariant(format!(
                "{} is in an unknown state after a failed write; reopen the store",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Appends `entries` (consecutive, following the last frame) and fsyncs.
    pub(crate) fn append(&mut self, entries: &[MetaEntry]) -> Result<(), MetaError> {
        self.check_usable()?;
        let mut bytes = Vec::new();
        let mut new_offsets = Vec::with_capacity(entries.len());
        let mut last = self.offsets.keys().next_back().copied();
        for entry in entries {
            let index = entry.log_id.index;
            if last.is_some_and(|l| l >= index) {
                return Err(MetaError::Invariant(format!(
                    "appending entry {index} to a log file ending at {last:?}"
                )));
            }
            last = Some(index);
            let payload = serde_json::to_vec(entry).map_err(|source| MetaError::Encode {
                what: "log entry",
                source,
            })?;
            if payload.len() > LOG_ENTRY_BYTES_MAX {
                return Err(MetaError::TooLarge {
                    what: "log entry",
                    len: payload.len() as u64,
                    max: LOG_ENTRY_BYTES_MAX as u64,
                });
            }
            new_offsets.push((index, self.len + bytes.len() as u64));
            encode_frame(&payload, &mut bytes);
        }
        let write = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = write {
            // Take the partial frames back so a later append does not follow garbage (which
            // would read as mid-file corruption at the next open).
            let old_len = self.len;
            if self.set_len(old_len).is_err() {
                self.broken = true;
            }
            return Err(MetaError::io("appending to", &self.path, e));
        }
        self.len += bytes.len() as u64;
        self.offsets.extend(new_offsets);
        Ok(())
    }

    /// Removes every entry with index `>= index` from the file, durably.
    pub(crate) fn truncate_from(&mut self, index: u64) -> Result<(), MetaError> {
        self.check_usable()?;
        let cut = match self.offsets.range(index..).next() {
            Some((_, &offset)) => offset,
            None => return Ok(()),
        };
        self.set_len(cut)?;
        self.offsets.split_off(&index);
        Ok(())
    }

    /// Frames in the file with an index below `index`.
    pub(crate) fn frames_below(&self, index: u64) -> usize {
        self.offsets.range(..index).count()
    }

    /// Replaces the file by one holding exactly `entries`, atomically.
    pub(crate) fn rewrite(&mut self, entries: &[MetaEntry]) -> Result<(), MetaError> {
        self.check_usable()?;
        let tmp = self.dir.join(LOG_REWRITE_NAME);
        let mut fresh = File::create(&tmp).map_err(|e| MetaError::io("creating", &tmp, e))?;
        let mut bytes = Vec::new();
        let mut offsets = BTreeMap::new();
        for entry in entries {
            let payload = serde_json::to_vec(entry).map_err(|source| MetaError::Encode {
                what: "log entry",
                source,
            })?;
            offsets.insert(entry.log_id.index, bytes.len() as u64);
            encode_frame(&payload, &mut bytes);
        }
        fresh
            .write_all(&bytes)
            .and_then(|()| fresh.sync_all())
            .map_err(|e| MetaError::io("writing", &tmp, e))?;
        drop(fresh);
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| MetaError::io("renaming into place", &self.path, e))?;
        fsync_dir(&self.dir)?;
        self.file = open_for_append(&self.path)?;
        self.offsets = offsets;
        self.len = bytes.len() as u64;
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> Result<(), MetaError> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| MetaError::io("truncating", &self.path, e))?;
        self.len = len;
        Ok(())
    }
}

fn open_for_append(path: &Path) -> Result<File, MetaError> {
    // O_APPEND: every write lands at the current end, also after set_len shortened the file.
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| MetaError::io("opening", path, e))
}
