//! Page versions: what a segment stores per page between the hot log and a page image.
//!
//! A page's history is a **version chain**: entries keyed by LSN, each either a full page
//! image or one redo record (kind + payload, exactly as in the log). Reading a page at an LSN
//! walks the chain backwards from that LSN to the first entry that needs no history (an image,
//! or an `InitPage` redo, which rebuilds a page from nothing) and replays the redo above it.
//! The materializer keeps chains short by storing an image instead of a redo record every
//! [`COALESCE_REDO_MAX`](crate::limits::COALESCE_REDO_MAX) changes (coalescing).
//!
//! [`VersionChains`] holds the chains of all pages for one LSN range `(start, end]` in memory:
//! the *open layer* the materializer appends to, and the frozen layers waiting to be written as
//! layer files (see [`crate::layer_file`], which stores the same entries on disk).
//!
//! This module does no I/O and takes no locks.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sixfold_log_service::{Lsn, PageId};

use crate::apply::apply;
use crate::error::StorageError;
use crate::limits::VERSION_OVERHEAD_BYTES;
use crate::page::{PAGE_SIZE, Page};
use crate::redo::PageRedo;

/// One stored version of one page.
#[derive(Clone, Debug)]
pub enum Version {
    /// The whole page as of this entry's LSN.
    Image(Arc<Page>),
    /// One redo record, as it was in the log.
    Redo { kind: u8, payload: Bytes },
}

impl Version {
    /// True when the page at this entry can be built without older entries.
    pub fn ends_chain(&self) -> bool {
        match self {
            Version::Image(_) => true,
            Version::Redo { kind, .. } => *kind == PageRedo::KIND_INIT_PAGE,
        }
    }

    /// Memory this entry is charged for.
    pub fn charged_bytes(&self) -> usize {
        VERSION_OVERHEAD_BYTES
            + match self {
                Version::Image(_) => PAGE_SIZE,
                Version::Redo { payload, .. } => payload.len(),
            }
    }
}

/// Whether a walk down a chain found where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// The chain is complete: it ends in an image or an `InitPage`, or the page provably did not
    /// exist below (an image layer without it).
    Done,
    /// Keep looking in older layers.
    Continue,
}

/// The entries needed to build one page at one LSN, newest first.
#[derive(Debug, Default)]
pub struct Chain {
    pub entries: Vec<(Lsn, Version)>,
}

impl Chain {
    /// Builds the page: the oldest entry's image (or a zeroed page) plus the redo above it, in
    /// LSN order. Stored redo applied once already, when it was materialized, so a failure
    /// here means the stored versions are broken.
    pub fn replay(&self) -> Result<Page, StorageError> {
        let mut iter = self.entries.iter().rev();
        let mut page = match self.entries.last() {
            Some((_, Version::Image(img))) => {
                iter.next();
                (**img).clone()
            }
            _ => Page::new_zeroed(),
        };
        for (lsn, version) in iter {
            match version {
                Version::Redo { kind, payload } => {
                    let redo = PageRedo::decode(*kind, payload)?;
                    apply(&mut page, *lsn, &redo)?;
                }
                Version::Image(_) => {
                    return Err(StorageError::Internal(format!(
                        "an image at {lsn:?} in the middle of a version chain"
                    )));
                }
            }
        }
        Ok(page)
    }
}

/// The version chains of every page for the LSN range `(start, end]`, in memory.
#[derive(Debug)]
pub struct VersionChains {
    start: Lsn,
    end: Lsn,
    /// The PG's last record at or below `end` (records that were skipped count too).
    pg_tail: Lsn,
    map: BTreeMap<(PageId, Lsn), Version>,
    bytes: usize,
    first_insert: Option<Instant>,
}

impl VersionChains {
    /// Empty chains starting above `start`, where the PG's last record is `pg_tail`.
    pub fn new(start: Lsn, pg_tail: Lsn) -> VersionChains {
        VersionChains {
            start,
            end: start,
            pg_tail,
            map: BTreeMap::new(),
            bytes: 0,
            first_insert: None,
        }
    }

    pub fn start(&self) -> Lsn {
        self.start
    }

    pub fn end(&self) -> Lsn {
        self.end
    }

    pub fn pg_tail(&self) -> Lsn {
        self.pg_tail
    }

    /// Every version up to `end` is here, and the PG's last record at or below it is `pg_tail`
    /// (LSNs above the last entry may have changed nothing in this PG, or only pages whose redo
    /// was skipped).
    pub fn extend_to(&mut self, end: Lsn, pg_tail: Lsn) {
        assert!(end >= self.end, "version chains never shrink");
        assert!(pg_tail <= end && pg_tail >= self.pg_tail);
        self.end = end;
        self.pg_tail = pg_tail;
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn charged_bytes(&self) -> usize {
        self.bytes
    }

    /// When the first entry went in, to freeze small layers after a while.
    pub fn first_insert(&self) -> Option<Instant> {
        self.first_insert
    }

    pub fn insert(&mut self, page: PageId, lsn: Lsn, version: Version) {
        assert!(
            lsn > self.start,
            "version {lsn:?} below the layer start {:?}",
            self.start
        );
        self.bytes += version.charged_bytes();
        self.end = self.end.max(lsn);
        self.first_insert.get_or_insert_with(Instant::now);
        let old = self.map.insert((page, lsn), version);
        assert!(old.is_none(), "two versions of {page:?} at {lsn:?}");
    }

    /// Pushes `page`'s entries at or below `through`, newest first, until one ends the chain.
    pub fn walk(&self, page: PageId, through: Lsn, chain: &mut Chain) -> Walk {
        let range = (
            Bound::Included((page, Lsn::ZERO)),
            Bound::Included((page, through)),
        );
        for ((_, lsn), version) in self.map.range(range).rev() {
            chain.entries.push((*lsn, version.clone()));
            if version.ends_chain() {
                return Walk::Done;
            }
        }
        Walk::Continue
    }

    /// True if `page` has an entry above `after`.
    pub fn changed_after(&self, page: PageId, after: Lsn) -> bool {
        self.map
            .range((
                Bound::Excluded((page, after)),
                Bound::Included((page, Lsn::MAX)),
            ))
            .next()
            .is_some()
    }

    /// Every entry in (page, lsn) order: the order of a layer file.
    pub fn iter(&self) -> impl Iterator<Item = (PageId, Lsn, &Version)> {
        self.map.iter().map(|((p, l), v)| (*p, *l, v))
    }
}

/// A redo version of `r`, as the materializer stores it (for tests here and in `layer_file`).
#[cfg(test)]
pub(crate) fn redo_version(r: &PageRedo) -> Version {
    let (kind, payload) = r.encode();
    Version::Redo {
        kind,
        payload: Bytes::from(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::redo_version as redo;
    use super::*;
    use crate::page::PageKind;

    fn init(page: u64) -> Version {
        redo(&PageRedo::InitPage {
            page_id: PageId(page),
            kind: PageKind::new(1).expect("non-zero"),
        })
    }

    fn insert(slot: u16, b: &[u8]) -> Version {
        redo(&PageRedo::InsertCell {
            slot,
            bytes: b.to_vec(),
        })
    }

    // Proves a walk stops at InitPage, returns only entries at or below the LSN asked, and
    // replays to the page apply would build.
    #[test]
    fn walk_and_replay_build_the_page_at_each_lsn() {
        let mut v = VersionChains::new(Lsn::ZERO, Lsn::ZERO);
        v.insert(PageId(7), Lsn(1), init(7));
        v.insert(PageId(8), Lsn(2), init(8));
        v.insert(PageId(7), Lsn(3), insert(0, b"a"));
        v.insert(PageId(7), Lsn(5), insert(1, b"b"));
        let mut chain = Chain::default();
        assert_eq!(v.walk(PageId(7), Lsn(4), &mut chain), Walk::Done);
        let page = chain.replay().unwrap();
        assert_eq!(page.lsn(), Lsn(3));
        assert_eq!(page.cells().collect::<Vec<_>>(), vec![b"a"]);
        let mut chain = Chain::default();
        v.walk(PageId(7), Lsn(9), &mut chain);
        assert_eq!(chain.replay().unwrap().slot_count(), 2);
        let mut chain = Chain::default();
        assert_eq!(v.walk(PageId(9), Lsn(9), &mut chain), Walk::Continue);
        assert!(chain.replay().unwrap().is_zeroed());
        assert!(v.changed_after(PageId(7), Lsn(3)));
        assert!(!v.changed_after(PageId(7), Lsn(5)));
        assert_eq!(v.end(), Lsn(5));
    }

    // Proves an image ends a walk and serves as the base of the replay.
    #[test]
    fn an_image_ends_the_chain() {
        let mut v = VersionChains::new(Lsn(10), Lsn(10));
        let mut chain = Chain::default();
        let mut base = VersionChains::new(Lsn::ZERO, Lsn::ZERO);
        base.insert(PageId(1), Lsn(1), init(1));
        base.insert(PageId(1), Lsn(2), insert(0, b"x"));
        base.walk(PageId(1), Lsn(2), &mut chain);
        let img = chain.replay().unwrap();
        v.insert(PageId(1), Lsn(11), Version::Image(Arc::new(img)));
        v.insert(PageId(1), Lsn(12), insert(0, b"y"));
        let mut chain = Chain::default();
        assert_eq!(v.walk(PageId(1), Lsn(12), &mut chain), Walk::Done);
        assert_eq!(chain.entries.len(), 2);
        let page = chain.replay().unwrap();
        assert_eq!(page.cells().collect::<Vec<_>>(), vec![&b"y"[..], b"x"]);
        assert_eq!(page.lsn(), Lsn(12));
    }
}
