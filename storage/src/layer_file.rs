//! Layer files: immutable, CRC-checked files of page versions, read through memmap2.
//!
//! A segment's materialized pages live in layer files under `<data-dir>/pages/pg-<id>/`:
//! - a **delta layer** `delta-<start>-<end>.layer` holds every stored version (redo records and
//!   coalesced images, see [`crate::versions`]) of every page changed in the LSN range
//!   `(start, end]`;
//! - an **image layer** `image-<at>.layer` holds one image of every page that exists at LSN
//!   `at`, as of `at`. It lets reads at or above `at` stop walking, and lets everything older be
//!   dropped once no reader needs it (garbage collection below PGMRPL).
//!
//! LSNs in names are 16 lowercase hex digits, so names sort by LSN.
//!
//! # Bytes (all integers little-endian)
//!
//! ```text
//!  header, 64 bytes at offset 0
//!  offset size field
//!       0    8 magic         "SFLAYER1"
//!       8    2 version       LAYER_FORMAT_VERSION (1)
//!      10    1 kind          1 = delta, 2 = image
//!      11    1 reserved      0
//!      12    4 pg            the protection group
//!      16    8 start_lsn     delta: exclusive start of the range; image: = end_lsn
//!      24    8 end_lsn       delta: inclusive end; image: the LSN the images are as of
//!      32    8 pg_tail       the PG's last record at or below end_lsn (0: none); the next
//!                            record's backlink, so materialization can resume from this file
//!      40    8 entry_count
//!      48    8 index_offset  where the index starts
//!      56    4 reserved      0
//!      60    4 header_crc    crc32 of bytes [0, 60)
//!
//!  entries, from offset 64 up to index_offset, each:
//!       0    4 crc32         of the entry's bytes [4, 32 + len)
//!       4    1 entry kind    1 = image (payload: one PAGE_SIZE page), 2 = redo
//!       5    1 redo kind     the record's kind byte (0 for an image)
//!       6    2 reserved      0
//!       8    8 page_id
//!      16    8 lsn           the version's LSN (for an image: the page's own LSN)
//!      24    4 len           payload bytes
//!      28    4 reserved      0
//!      32  len payload       the page image, or the redo payload exactly as in the log
//!
//!  index at index_offset: entry_count slots of 24 bytes, then a 4-byte crc32 of the slots
//!       0    8 page_id
//!       8    8 lsn
//!      16    8 offset        of the entry, in [64, index_offset)
//!
//!  file length = index_offset + 24 * entry_count + 4
//! ```
//!
//! # Invariants (checked when a file is opened, and per entry when it is read)
//! - The header CRC, the index CRC and each entry's CRC match; the header matches the name.
//! - Index slots are strictly increasing by (page_id, lsn): one version per page and LSN, and a
//!   page's chain is contiguous in the index, so a lookup is one binary search.
//! - Delta: `start < end` and every entry's LSN is in `(start, end]`. Image: `start == end`,
//!   every entry is an image with LSN `<= end`, at most one per page.
//! - An entry read back names the page and LSN its index slot says, and an image passes
//!   [`Page::from_bytes`] (the page's own checksum and layout).
//!
//! # What is assumed of the disk
//! A file is written under a temporary name, fsynced, renamed into place and the directory
//! fsynced, so a crash leaves either no file or a whole one; leftover temporary files are
//! deleted on open. After that the file is never written again. Bits may still rot and a file
//! may be truncated by an outside hand, so every byte is CRC-checked before use, and CRCs are
//! checked on a private copy of the bytes, never on the mapping itself, so a concurrent outside
//! change to the file cannot slip in between check and use. A file that fails a check is
//! reported as corrupt and rebuilt, never served.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;
use sixfold_log_service::{Lsn, PageId, PgId};

use crate::error::StorageError;
use crate::limits::LAYER_ENTRIES_MAX;
use crate::page::{PAGE_SIZE, Page};
use crate::versions::{Chain, Version, Walk};

pub const LAYER_MAGIC: [u8; 8] = *b"SFLAYER1";
pub const LAYER_FORMAT_VERSION: u16 = 1;
pub const LAYER_HEADER_BYTES: usize = 64;
pub const ENTRY_HEADER_BYTES: usize = 32;
pub const INDEX_SLOT_BYTES: usize = 24;
const KIND_DELTA: u8 = 1;
const KIND_IMAGE: u8 = 2;
const ENTRY_IMAGE: u8 = 1;
const ENTRY_REDO: u8 = 2;
/// Suffix of a layer file; a file being written has `.tmp` appended.
pub const LAYER_SUFFIX: &str = ".layer";

/// What a layer file covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerDesc {
    /// Every version in `(start, end]`.
    Delta { start: Lsn, end: Lsn },
    /// Every page as of `at`.
    Image { at: Lsn },
}

impl LayerDesc {
    pub fn end(&self) -> Lsn {
        match self {
            LayerDesc::Delta { end, .. } => *end,
            LayerDesc::Image { at } => *at,
        }
    }

    pub fn is_image(&self) -> bool {
        matches!(self, LayerDesc::Image { .. })
    }

    pub fn name(&self) -> String {
        match self {
            LayerDesc::Delta { start, end } => {
                format!(
                    "delta-{:016x}-{:016x}{LAYER_SUFFIX}",
                    start.get(),
                    end.get()
                )
            }
            LayerDesc::Image { at } => format!("image-{:016x}{LAYER_SUFFIX}", at.get()),
        }
    }

    /// Parses a file name made by [`LayerDesc::name`].
    pub fn parse(name: &str) -> Option<LayerDesc> {
        let stem = name.strip_suffix(LAYER_SUFFIX)?;
        let hex = |s: &str| {
            (s.len() == 16
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
            .map(Lsn)
        };
        if let Some(rest) = stem.strip_prefix("delta-") {
            let (a, b) = rest.split_once('-')?;
            let (start, end) = (hex(a)?, hex(b)?);
            (start < end).then_some(LayerDesc::Delta { start, end })
        } else {
            let at = hex(stem.strip_prefix("image-")?)?;
            Some(LayerDesc::Image { at })
        }
    }

    /// Newest-first order of the layer stack: by end LSN, and at the same end the image first
    /// (it stands for everything at or below its LSN, the delta ending there only for its range).
    pub fn stack_key(&self) -> (Lsn, bool) {
        (self.end(), self.is_image())
    }
}

/// One index slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    page: PageId,
    lsn: Lsn,
    offset: u64,
}

/// Writes a layer file: entries in (page, lsn) order, then [`LayerWriter::finish`].
pub struct LayerWriter {
    desc: LayerDesc,
    pg: PgId,
    pg_tail: Lsn,
    dir: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    slots: Vec<Slot>,
}

impl LayerWriter {
    pub fn create(
        dir: &Path,
        desc: LayerDesc,
        pg: PgId,
        pg_tail: Lsn,
    ) -> Result<LayerWriter, StorageError> {
        let tmp = dir.join(format!("{}.tmp", desc.name()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut out = BufWriter::with_capacity(1024 * 1024, file);
        out.write_all(&[0u8; LAYER_HEADER_BYTES])?;
        Ok(LayerWriter {
            desc,
            pg,
            pg_tail,
            dir: dir.to_path_buf(),
            tmp,
            out,
            offset: LAYER_HEADER_BYTES as u64,
            slots: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Appends one version. Panics if entries are not in strictly increasing (page, lsn) order
    /// or do not belong in this layer: that is a bug in the caller, not bad input.
    pub fn add(&mut self, page: PageId, lsn: Lsn, version: &Version) -> Result<(), StorageError> {
        if let Some(last) = self.slots.last() {
            assert!(
                (last.page, last.lsn) < (page, lsn),
                "layer entries out of order"
            );
        }
        match self.desc {
            LayerDesc::Delta { start, end } => {
                assert!(start < lsn && lsn <= end, "{lsn:?} outside {:?}", self.desc)
            }
            LayerDesc::Image { at } => {
                assert!(lsn <= at && matches!(version, Version::Image(_)));
                assert!(self.slots.last().is_none_or(|s| s.page != page));
            }
        }
        let (entry_kind, redo_kind, payload): (u8, u8, &[u8]) = match version {
            Version::Image(img) => (ENTRY_IMAGE, 0, img.as_bytes().as_slice()),
            Version::Redo { kind, payload } => (ENTRY_REDO, *kind, payload),
        };
        let len = u32::try_from(payload.len()).expect("payloads are small");
        let mut head = [0u8; ENTRY_HEADER_BYTES];
        head[4] = entry_kind;
        head[5] = redo_kind;
        head[8..16].copy_from_slice(&page.get().to_le_bytes());
        head[16..24].copy_from_slice(&lsn.get().to_le_bytes());
        head[24..28].copy_from_slice(&len.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[4..]);
        crc.update(payload);
        head[0..4].copy_from_slice(&crc.finalize().to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(payload)?;
        self.slots.push(Slot {
            page,
            lsn,
            offset: self.offset,
        });
        self.offset += (ENTRY_HEADER_BYTES + payload.len()) as u64;
        Ok(())
    }

    /// Writes the index and header, makes the file durable under its final name and opens it.
    pub fn finish(mut self) -> Result<LayerFile, StorageError> {
        let index_offset = self.offset;
        let mut crc = crc32fast::Hasher::new();
        for s in &self.slots {
            let mut slot = [0u8; INDEX_SLOT_BYTES];
            slot[0..8].copy_from_slice(&s.page.get().to_le_bytes());
            slot[8..16].copy_from_slice(&s.lsn.get().to_le_bytes());
            slot[16..24].copy_from_slice(&s.offset.to_le_bytes());
            crc.update(&slot);
            self.out.write_all(&slot)?;
        }
        self.out.write_all(&crc.finalize().to_le_bytes())?;
        let (start, end) = match self.desc {
            LayerDesc::Delta { start, end } => (start, end),
            LayerDesc::Image { at } => (at, at),
        };
        let mut header = [0u8; LAYER_HEADER_BYTES];
        header[0..8].copy_from_slice(&LAYER_MAGIC);
        header[8..10].copy_from_slice(&LAYER_FORMAT_VERSION.to_le_bytes());
        header[10] = if self.desc.is_image() {
            KIND_IMAGE
        } else {
            KIND_DELTA
        };
        header[12..16].copy_from_slice(&self.pg.get().to_le_bytes());
        header[16..24].copy_from_slice(&start.get().to_le_bytes());
        header[24..32].copy_from_slice(&end.get().to_le_bytes());
        header[32..40].copy_from_slice(&self.pg_tail.get().to_le_bytes());
        header[40..48].copy_from_slice(&(self.slots.len() as u64).to_le_bytes());
        header[48..56].copy_from_slice(&index_offset.to_le_bytes());
        let crc = crc32fast::hash(&header[..60]);
        header[60..64].copy_from_slice(&crc.to_le_bytes());
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header)?;
        file.sync_all()?;
        drop(file);
        let path = self.dir.join(self.desc.name());
        std::fs::rename(&self.tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        LayerFile::open(&path)
    }
}

/// Writes the versions of `chains` as the delta layer `desc`.
pub fn write_delta<'a>(
    dir: &Path,
    desc: LayerDesc,
    pg: PgId,
    pg_tail: Lsn,
    versions: impl Iterator<Item = (PageId, Lsn, &'a Version)>,
) -> Result<LayerFile, StorageError> {
    let mut w = LayerWriter::create(dir, desc, pg, pg_tail)?;
    for (page, lsn, v) in versions {
        w.add(page, lsn, v)?;
    }
    w.finish()
}

/// An open, verified layer file.
pub struct LayerFile {
    path: PathBuf,
    name: String,
    desc: LayerDesc,
    pg: PgId,
    pg_tail: Lsn,
    count: usize,
    index_offset: usize,
    map: Mmap,
}

impl std::fmt::Debug for LayerFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LayerFile({})", self.name)
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

impl LayerFile {
    /// Maps and verifies a layer file: the header, the name, the index and its order. Entries
    /// are checked when read (and by [`LayerFile::verify_entries`]).
    pub fn open(path: &Path) -> Result<LayerFile, StorageError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        Self::open_named(path, name)
    }

    /// Like [`LayerFile::open`] for a file whose path does not carry its layer name (a download
    /// being checked under a temporary name).
    pub fn open_named(path: &Path, name: String) -> Result<LayerFile, StorageError> {
        let corrupt = |reason: String| StorageError::corrupt(&name, reason);
        let desc =
            LayerDesc::parse(&name).ok_or_else(|| corrupt("not a layer file name".into()))?;
        let file = File::open(path)?;
        // SAFETY: layer files are written once under a temporary name and never modified after
        // the rename. Every byte read from the map is copied and CRC-checked before use, so an
        // outside change to the file's contents yields an error, never bytes trusted unchecked.
        // (An outside hand truncating a mapped file can still crash the process with SIGBUS,
        // as with any memory-mapped reader; nothing in sixfold ever truncates a layer file.)
        let map = unsafe { Mmap::map(&file)? };
        let b = &map[..];
        if b.len() < LAYER_HEADER_BYTES + 4 {
            return Err(corrupt(format!("{} bytes is too short", b.len())));
        }
        let header: Vec<u8> = b[..LAYER_HEADER_BYTES].to_vec();
        if u32_at(&header, 60) != crc32fast::hash(&header[..60]) {
            return Err(corrupt("header checksum mismatch".into()));
        }
        if header[0..8] != LAYER_MAGIC
            || u16::from_le_bytes([header[8], header[9]]) != LAYER_FORMAT_VERSION
            || header[11] != 0
            || u32_at(&header, 56) != 0
        {
            return Err(corrupt("bad magic, version or reserved bytes".into()));
        }
        let (start, end) = (Lsn(u64_at(&header, 16)), Lsn(u64_at(&header, 24)));
        let found = match header[10] {
            KIND_DELTA if start < end => LayerDesc::Delta { start, end },
            KIND_IMAGE if start == end => LayerDesc::Image { at: end },
            _ => return Err(corrupt("bad kind or LSN range".into())),
        };
        if found != desc {
            return Err(corrupt(format!("header says {found:?}")));
        }
        let pg = PgId(u32_at(&header, 12));
        let pg_tail = Lsn(u64_at(&header, 32));
        let count = u64_at(&header, 40);
        let index_offset = u64_at(&header, 48);
        if count > LAYER_ENTRIES_MAX
            || index_offset < LAYER_HEADER_BYTES as u64
            || index_offset
                .checked_add(count * INDEX_SLOT_BYTES as u64 + 4)
                .is_none_or(|len| len != b.len() as u64)
            || pg_tail > end
        {
            return Err(corrupt(
                "counts and offsets disagree with the file length".into(),
            ));
        }
        let (count, index_offset) = (count as usize, index_offset as usize);
        let index_end = index_offset + count * INDEX_SLOT_BYTES;
        let index: Vec<u8> = b[index_offset..index_end + 4].to_vec();
        if u32_at(&index, count * INDEX_SLOT_BYTES)
            != crc32fast::hash(&index[..count * INDEX_SLOT_BYTES])
        {
            return Err(corrupt("index checksum mismatch".into()));
        }
        let mut prev: Option<(PageId, Lsn)> = None;
        for i in 0..count {
            let at = i * INDEX_SLOT_BYTES;
            let (page, lsn, offset) = (
                PageId(u64_at(&index, at)),
                Lsn(u64_at(&index, at + 8)),
                u64_at(&index, at + 16),
            );
            let ordered = prev.is_none_or(|p| p < (page, lsn));
            let in_range = match desc {
                LayerDesc::Delta { start, end } => start < lsn && lsn <= end,
                LayerDesc::Image { at } => lsn <= at && prev.is_none_or(|p| p.0 != page),
            };
            let placed = offset >= LAYER_HEADER_BYTES as u64
                && offset + ENTRY_HEADER_BYTES as u64 <= index_offset as u64;
            if !ordered || !in_range || !placed {
                return Err(corrupt(format!("index slot {i} is out of order or range")));
            }
            prev = Some((page, lsn));
        }
        Ok(LayerFile {
            path: path.to_path_buf(),
            name,
            desc,
            pg,
            pg_tail,
            count,
            index_offset,
            map,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn desc(&self) -> LayerDesc {
        self.desc
    }

    pub fn pg(&self) -> PgId {
        self.pg
    }

    pub fn pg_tail(&self) -> Lsn {
        self.pg_tail
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// A copy of the whole file, for uploading. Its integrity is checked by whoever reads it
    /// back (the object-store manifest carries the CRC of these bytes).
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(&self.map[..])
    }

    fn slot(&self, i: usize) -> Slot {
        let at = self.index_offset + i * INDEX_SLOT_BYTES;
        let b = &self.map[at..at + INDEX_SLOT_BYTES];
        Slot {
            page: PageId(u64_at(b, 0)),
            lsn: Lsn(u64_at(b, 8)),
            offset: u64_at(b, 16),
        }
    }

    /// Index of the first slot greater than (page, lsn).
    fn upper_bound(&self, page: PageId, lsn: Lsn) -> usize {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let s = self.slot(mid);
            if (s.page, s.lsn) <= (page, lsn) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Reads and verifies the entry of slot `i`.
    fn entry(&self, i: usize) -> Result<(Lsn, Version), StorageError> {
        let corrupt = |reason: String| StorageError::corrupt(&self.name, reason);
        let s = self.slot(i);
        // Offsets were checked on open; checked again in case the file changed since.
        let at = usize::try_from(s.offset).unwrap_or(usize::MAX);
        if at < LAYER_HEADER_BYTES || at.saturating_add(ENTRY_HEADER_BYTES) > self.index_offset {
            return Err(corrupt(format!(
                "index slot {i} points outside the entries"
            )));
        }
        let head: Vec<u8> = self.map[at..at + ENTRY_HEADER_BYTES].to_vec();
        let len = u32_at(&head, 24) as usize;
        let end = at + ENTRY_HEADER_BYTES + len;
        if end > self.index_offset {
            return Err(corrupt(format!("entry {i} runs past the entries")));
        }
        let payload: Vec<u8> = self.map[at + ENTRY_HEADER_BYTES..end].to_vec();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[4..]);
        crc.update(&payload);
        if crc.finalize() != u32_at(&head, 0) {
            return Err(corrupt(format!("entry {i} checksum mismatch")));
        }
        if PageId(u64_at(&head, 8)) != s.page || Lsn(u64_at(&head, 16)) != s.lsn {
            return Err(corrupt(format!(
                "entry {i} is not the one its index slot names"
            )));
        }
        let version = match head[4] {
            ENTRY_IMAGE if len == PAGE_SIZE && head[5] == 0 => {
                let page =
                    Page::from_bytes(&payload).map_err(|e| corrupt(format!("entry {i}: {e}")))?;
                if page.lsn() != s.lsn || page.page_id() != s.page {
                    return Err(corrupt(format!("entry {i}: image of another page or LSN")));
                }
                Version::Image(Arc::new(page))
            }
            ENTRY_REDO if !self.desc.is_image() => Version::Redo {
                kind: head[5],
                payload: Bytes::from(payload),
            },
            _ => return Err(corrupt(format!("entry {i} has a bad kind"))),
        };
        Ok((s.lsn, version))
    }

    /// Pushes `page`'s versions at or below `through`, newest first, until one ends the chain.
    /// An image layer always ends the walk: a page it lacks did not exist at its LSN.
    pub fn walk(
        &self,
        page: PageId,
        through: Lsn,
        chain: &mut Chain,
    ) -> Result<Walk, StorageError> {
        let mut i = self.upper_bound(page, through);
        while i > 0 {
            i -= 1;
            if self.slot(i).page != page {
                break;
            }
            let (lsn, version) = self.entry(i)?;
            let ends = version.ends_chain();
            chain.entries.push((lsn, version));
            if ends {
                return Ok(Walk::Done);
            }
        }
        Ok(if self.desc.is_image() {
            Walk::Done
        } else {
            Walk::Continue
        })
    }

    /// True if `page` has a version above `after` in this file.
    pub fn changed_after(&self, page: PageId, after: Lsn) -> bool {
        let i = self.upper_bound(page, after);
        i < self.count && self.slot(i).page == page
    }

    /// The distinct pages this file has versions of, in order.
    pub fn pages(&self) -> Vec<PageId> {
        let mut out: Vec<PageId> = Vec::new();
        for i in 0..self.count {
            let p = self.slot(i).page;
            if out.last() != Some(&p) {
                out.push(p);
            }
        }
        out
    }

    /// Reads every entry and checks its CRC (scrub).
    pub fn verify_entries(&self) -> Result<(), StorageError> {
        for i in 0..self.count {
            self.entry(i)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::PageKind;
    use crate::redo::PageRedo;
    use crate::versions::{VersionChains, redo_version as redo};

    fn sample() -> VersionChains {
        let mut v = VersionChains::new(Lsn(10), Lsn(10));
        for p in [3u64, 5, 9] {
            v.insert(
                PageId(p),
                Lsn(10 + p),
                redo(&PageRedo::InitPage {
                    page_id: PageId(p),
                    kind: PageKind::new(2).expect("non-zero"),
                }),
            );
            v.insert(
                PageId(p),
                Lsn(20 + p),
                redo(&PageRedo::InsertCell {
                    slot: 0,
                    bytes: vec![p as u8; 10],
                }),
            );
        }
        v.extend_to(Lsn(40), Lsn(29));
        v
    }

    fn write_sample(dir: &Path) -> LayerFile {
        let v = sample();
        let desc = LayerDesc::Delta {
            start: v.start(),
            end: v.end(),
        };
        write_delta(dir, desc, PgId(4), Lsn(29), v.iter()).unwrap()
    }

    // Proves names round-trip and sort the way the layer stack needs.
    #[test]
    fn names_round_trip() {
        for d in [
            LayerDesc::Delta {
                start: Lsn(0),
                end: Lsn(0xabc),
            },
            LayerDesc::Image { at: Lsn(u64::MAX) },
        ] {
            assert_eq!(LayerDesc::parse(&d.name()), Some(d));
        }
        assert_eq!(
            LayerDesc::parse("delta-0000000000000005-0000000000000005.layer"),
            None
        );
        assert_eq!(LayerDesc::parse("image-5.layer"), None);
        assert_eq!(LayerDesc::parse("image-000000000000000A.layer"), None);
    }

    // Proves a written file reads back: walks return the same chains as memory, and the
    // header, pages and tail survive.
    #[test]
    fn written_file_reads_back_like_memory() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_sample(dir.path());
        let mem = sample();
        assert_eq!(file.len(), 6);
        assert_eq!(file.pg(), PgId(4));
        assert_eq!(file.pg_tail(), Lsn(29));
        assert_eq!(file.pages(), vec![PageId(3), PageId(5), PageId(9)]);
        for p in [3u64, 5, 9, 4] {
            for through in [0u64, 13, 15, 25, 40] {
                let (mut a, mut b) = (Chain::default(), Chain::default());
                let wa = file.walk(PageId(p), Lsn(through), &mut a).unwrap();
                let wb = mem.walk(PageId(p), Lsn(through), &mut b);
                assert_eq!(wa, wb);
                assert_eq!(a.replay().unwrap(), b.replay().unwrap());
            }
        }
        assert!(file.changed_after(PageId(5), Lsn(24)));
        assert!(!file.changed_after(PageId(5), Lsn(25)));
        file.verify_entries().unwrap();
        let reopened = LayerFile::open(file.path()).unwrap();
        assert_eq!(reopened.desc(), file.desc());
    }

    // Proves every flipped bit is caught: by open (header, index) or by reading the entries.
    #[test]
    fn every_flipped_bit_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_sample(dir.path());
        let good = std::fs::read(file.path()).unwrap();
        let path = file.path().to_path_buf();
        drop(file);
        for bit in (0..good.len() * 8).step_by(3) {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&path, &bad).unwrap();
            let detected = match LayerFile::open(&path) {
                Err(StorageError::CorruptLayer { .. }) => true,
                Err(e) => panic!("unexpected error {e}"),
                Ok(f) => f.verify_entries().is_err(),
            };
            assert!(detected, "flipped bit {bit} went unnoticed");
        }
        for len in [0, 10, 64, good.len() - 1] {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(LayerFile::open(&path).is_err(), "truncated to {len}");
        }
    }

    // Proves an image layer ends every walk, including for pages it does not hold.
    #[test]
    fn image_layer_ends_walks() {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = Chain::default();
        let mem = sample();
        mem.walk(PageId(3), Lsn(40), &mut chain);
        let page = chain.replay().unwrap();
        let lsn = page.lsn();
        let mut w = LayerWriter::create(
            dir.path(),
            LayerDesc::Image { at: Lsn(40) },
            PgId(4),
            Lsn(29),
        )
        .unwrap();
        w.add(PageId(3), lsn, &Version::Image(Arc::new(page.clone())))
            .unwrap();
        let file = w.finish().unwrap();
        let mut c = Chain::default();
        assert_eq!(file.walk(PageId(3), Lsn(40), &mut c).unwrap(), Walk::Done);
        assert_eq!(c.replay().unwrap(), page);
        let mut c = Chain::default();
        assert_eq!(file.walk(PageId(7), Lsn(40), &mut c).unwrap(), Walk::Done);
        assert!(c.replay().unwrap().is_zeroed());
    }
}
