//! Small files replaced as a whole (vote, log state, snapshot) and the lock on a store's
//! directory.
//!
//! A file is replaced by writing `<name>.tmp`, fsyncing it, renaming it over `<name>` and
//! fsyncing the directory, so after a crash `<name>` holds either the old or the new contents,
//! never a mix. Its contents are one CRC-checked frame ([`crate::frame`]); since a replaced file
//! is never torn, any bad byte in it is corruption.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::MetaError;
use crate::frame::{Decoded, FRAME_HEADER_BYTES, decode_frame, encode_frame};

const TMP_SUFFIX: &str = ".tmp";
const LOCK_FILE_NAME: &str = "LOCK";

/// Replaces `dir/name` with one frame holding `payload`, durably.
pub fn write_atomic(dir: &Path, name: &str, payload: &[u8], max: usize) -> Result<(), MetaError> {
    if payload.len() > max {
        return Err(MetaError::TooLarge {
            what: "file payload",
            len: payload.len() as u64,
            max: max as u64,
        });
    }
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    encode_frame(payload, &mut bytes);
    let mut file = File::create(&tmp).map_err(|e| MetaError::io("creating", &tmp, e))?;
    file.write_all(&bytes)
        .map_err(|e| MetaError::io("writing", &tmp, e))?;
    file.sync_all()
        .map_err(|e| MetaError::io("fsyncing", &tmp, e))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| MetaError::io("renaming into place", &path, e))?;
    fsync_dir(dir)
}

/// Reads the payload of `dir/name`, or `None` if the file does not exist.
pub fn read_atomic(dir: &Path, name: &str, max: usize) -> Result<Option<Vec<u8>>, MetaError> {
    let path = dir.join(name);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MetaError::io("opening", &path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| MetaError::io("reading metadata of", &path, e))?
        .len();
    let len_max = (FRAME_HEADER_BYTES + max) as u64;
    if len > len_max {
        return Err(MetaError::TooLarge {
            what: "file",
            len,
            max: len_max,
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| MetaError::io("reading", &path, e))?;
    let corrupt = |reason: &str| MetaError::Corrupt {
        path: path.clone(),
        offset: 0,
        reason: reason.to_string(),
    };
    match decode_frame(&bytes) {
        Decoded::Frame {
            payload,
            frame_bytes,
        } if frame_bytes == bytes.len() => Ok(Some(payload.to_vec())),
        Decoded::Frame { .. } => Err(corrupt("trailing bytes after the frame")),
        Decoded::Incomplete => Err(corrupt("file shorter than its frame")),
        Decoded::Invalid(reason) => Err(corrupt(reason)),
    }
}

/// Makes a rename or a file creation in `dir` durable.
pub fn fsync_dir(dir: &Path) -> Result<(), MetaError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MetaError::io("fsyncing directory", dir, e))
}

/// Creates `dir` if needed, takes its lock and removes temporary files a crash left behind.
pub fn prepare_dir(dir: &Path) -> Result<DirLock, MetaError> {
    fs::create_dir_all(dir).map_err(|e| MetaError::io("creating directory", dir, e))?;
    let lock = DirLock::acquire(dir)?;
    let listing = fs::read_dir(dir).map_err(|e| MetaError::io("listing", dir, e))?;
    for item in listing {
        let item = item.map_err(|e| MetaError::io("listing", dir, e))?;
        let path = item.path();
        if path.to_string_lossy().ends_with(TMP_SUFFIX) {
            fs::remove_file(&path).map_err(|e| MetaError::io("removing stale", &path, e))?;
        }
    }
    Ok(lock)
}

/// An exclusive advisory lock on a store's directory, held while the store lives, so two
/// processes never write the same log.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, MetaError> {
        let path = dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| MetaError::io("opening lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(MetaError::Locked {
                path: dir.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(MetaError::io("locking", &path, e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a replaced file reads back, a missing one reads as None, and a flipped bit or a
    // truncation is reported as corruption rather than returned.
    #[test]
    fn write_read_and_detect_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_atomic(dir.path(), "f", 100).unwrap(), None);
        write_atomic(dir.path(), "f", b"first", 100).unwrap();
        write_atomic(dir.path(), "f", b"second", 100).unwrap();
        assert_eq!(
            read_atomic(dir.path(), "f", 100).unwrap(),
            Some(b"second".to_vec())
        );

        let path = dir.path().join("f");
        let good = fs::read(&path).unwrap();
        let mut flipped = good.clone();
        flipped[FRAME_HEADER_BYTES + 1] ^= 0x04;
        fs::write(&path, &flipped).unwrap();
        let err = read_atomic(dir.path(), "f", 100).unwrap_err();
        assert!(matches!(err, MetaError::Corrupt { .. }), "{err}");

        fs::write(&path, &good[..good.len() - 1]).unwrap();
        let err = read_atomic(dir.path(), "f", 100).unwrap_err();
        assert!(matches!(err, MetaError::Corrupt { .. }), "{err}");
    }

    // Proves a second store cannot open a directory another store holds, and can once the
    // first lets go; and that stale temporary files are removed.
    #[test]
    fn directory_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("vote.tmp"), b"half").unwrap();
        let first = prepare_dir(dir.path()).unwrap();
        assert!(!dir.path().join("vote.tmp").exists());
        assert!(matches!(
            prepare_dir(dir.path()),
            Err(MetaError::Locked { .. })
        ));
        drop(first);
        prepare_dir(dir.path()).unwrap();
    }
}
