//! Redo apply: the one function that changes a page.
//!
//! Compute applies redo to pages in its buffer cache as it writes them; storage applies the
//! same redo from the segment log to materialize page versions; read replicas apply the
//! writer's stream to their cached pages. All three call [`apply`], so DESIGN.md invariant 4
//! (GetPage returns the same bytes everywhere) comes down to apply being deterministic, which
//! the canonical page layout (see [`crate::page`]) makes structural.
//!
//! # Rules
//!
//! - `lsn` must be greater than the page LSN. The zeroed page has LSN 0 and `Lsn::ZERO` names
//!   no record, so `InitPage` on a zeroed page passes this check with any real LSN.
//! - Only `InitPage` applies to a zeroed page. `InitPage` on an initialized page empties it
//!   (the page was freed and reused) and must name the same page id.
//! - Apply is all or nothing: on error the page is byte-for-byte unchanged.
//! - On success the page LSN is `lsn` and the checksum is sealed, so every page that apply
//!   returns can be written or sent as it is.

use sixfold_log_service::Lsn;

use crate::error::PageError;
use crate::page::Page;
use crate::redo::PageRedo;

/// Applies `redo`, stamped with `lsn`, to `page`. See the module docs for the rules.
pub fn apply(page: &mut Page, lsn: Lsn, redo: &PageRedo) -> Result<(), PageError> {
    if lsn <= page.lsn() {
        return Err(PageError::LsnNotAfter {
            page_lsn: page.lsn(),
            redo_lsn: lsn,
        });
    }
    match redo {
        PageRedo::InitPage { page_id, kind } => {
            if !page.is_zeroed() && page.page_id() != *page_id {
                return Err(PageError::PageIdMismatch {
                    page: page.page_id(),
                    redo: *page_id,
                });
            }
            page.init_in_place(*page_id, *kind);
        }
        _ if page.is_zeroed() => return Err(PageError::NotInitialized),
        PageRedo::InsertCell { slot, bytes } => page.insert_cell(*slot, bytes)?,
        PageRedo::ReplaceCell { slot, bytes } => page.replace_cell(*slot, bytes)?,
        PageRedo::DeleteCell { slot } => page.delete_cell(*slot)?,
        PageRedo::SetLink { link } => page.set_link(*link),
    }
    page.set_lsn(lsn);
    page.seal_checksum();
    // A full layout check per apply costs a pass over the page; keep it as a shadow check in
    // debug builds, where the model test exercises it on every step.
    debug_assert_eq!(page.validate_layout(), Ok(()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use sixfold_log_service::PageId;

    use super::*;
    use crate::page::{CELL_BYTES_MAX, NO_LINK, PAGE_BODY_BYTES, PageKind, SLOT_BYTES};

    const KIND: PageKind = match PageKind::new(1) {
        Some(kind) => kind,
        None => panic!("1 is a valid page kind"),
    };

    fn init_redo(page_id: u64) -> PageRedo {
        PageRedo::InitPage {
            page_id: PageId(page_id),
            kind: KIND,
        }
    }

    fn insert(slot: u16, bytes: &[u8]) -> PageRedo {
        PageRedo::InsertCell {
            slot,
            bytes: bytes.to_vec(),
        }
    }

    /// A page built by applying `redo` at LSNs 1, 2, 3, … to a zeroed page.
    fn build(redo: &[PageRedo]) -> Page {
        let mut page = Page::new_zeroed();
        for (i, r) in redo.iter().enumerate() {
            apply(&mut page, Lsn(i as u64 + 1), r).expect("applies");
        }
        page
    }

    fn cells(page: &Page) -> Vec<Vec<u8>> {
        page.cells().map(<[u8]>::to_vec).collect()
    }

    // Proves InitPage turns a zeroed page into the same image as Page::init, plus its LSN.
    #[test]
    fn init_page_creates_an_empty_sealed_page() {
        let page = build(&[init_redo(42)]);
        assert_eq!(page.page_id(), PageId(42));
        assert_eq!(page.kind(), Some(KIND));
        assert_eq!(page.lsn(), Lsn(1));
        assert_eq!(page.slot_count(), 0);
        assert_eq!(page.free_space(), PAGE_BODY_BYTES);
        page.verify_checksum().expect("sealed");
        let mut expected = Page::init(PageId(42), KIND);
        expected.set_lsn(Lsn(1));
        expected.seal_checksum();
        assert_eq!(page, expected);
    }

    // Proves InitPage on a used page empties it, and refuses a different page id.
    #[test]
    fn init_page_reuses_only_the_same_page() {
        let mut page = build(&[
            init_redo(5),
            insert(0, b"a"),
            PageRedo::SetLink { link: PageId(9) },
        ]);
        assert_eq!(
            apply(&mut page, Lsn(10), &init_redo(6)),
            Err(PageError::PageIdMismatch {
                page: PageId(5),
                redo: PageId(6)
            })
        );
        apply(&mut page, Lsn(10), &init_redo(5)).expect("reuse");
        assert_eq!(page.slot_count(), 0);
        assert_eq!(page.link(), NO_LINK);
        assert_eq!(page.lsn(), Lsn(10));
    }

    // Proves InsertCell places cells by slot index and shifts later slots up.
    #[test]
    fn insert_cell_shifts_later_slots() {
        let page = build(&[
            init_redo(1),
            insert(0, b"c"),
            insert(0, b"a"),
            insert(1, b"b"),
            insert(3, b"d"),
        ]);
        assert_eq!(
            cells(&page),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
        );
        assert_eq!(page.free_space(), PAGE_BODY_BYTES - 4 * (1 + SLOT_BYTES));
        assert_eq!(page.lsn(), Lsn(5));
    }

    // Proves ReplaceCell can grow, shrink and empty a cell without disturbing its neighbours.
    #[test]
    fn replace_cell_grows_and_shrinks() {
        let mut page = build(&[
            init_redo(1),
            insert(0, b"one"),
            insert(1, b"two"),
            insert(2, b"three"),
        ]);
        let grow = PageRedo::ReplaceCell {
            slot: 1,
            bytes: b"two-but-longer".to_vec(),
        };
        apply(&mut page, Lsn(5), &grow).expect("fits");
        assert_eq!(
            cells(&page),
            vec![
                b"one".to_vec(),
                b"two-but-longer".to_vec(),
                b"three".to_vec()
            ]
        );
        let shrink = PageRedo::ReplaceCell {
            slot: 0,
            bytes: Vec::new(),
        };
        apply(&mut page, Lsn(6), &shrink).expect("fits");
        assert_eq!(
            cells(&page),
            vec![Vec::new(), b"two-but-longer".to_vec(), b"three".to_vec()]
        );
        assert_eq!(page.free_space(), PAGE_BODY_BYTES - 3 * SLOT_BYTES - 19);
    }

    // Proves DeleteCell removes a cell, shifts later slots down and returns the space.
    #[test]
    fn delete_cell_shifts_later_slots_and_frees_space() {
        let mut page = build(&[
            init_redo(1),
            insert(0, b"x"),
            insert(1, b"yy"),
            insert(2, b"zzz"),
        ]);
        apply(&mut page, Lsn(5), &PageRedo::DeleteCell { slot: 1 }).expect("in range");
        assert_eq!(cells(&page), vec![b"x".to_vec(), b"zzz".to_vec()]);
        apply(&mut page, Lsn(6), &PageRedo::DeleteCell { slot: 1 }).expect("in range");
        apply(&mut page, Lsn(7), &PageRedo::DeleteCell { slot: 0 }).expect("in range");
        assert_eq!(page.slot_count(), 0);
        assert_eq!(page.free_space(), PAGE_BODY_BYTES);
        // Emptied back out, the page is byte-identical to a fresh one at the same LSN:
        // deleted bytes leave no trace (canonical layout, zeroed free space).
        let mut fresh = build(&[init_redo(1)]);
        fresh.set_lsn(Lsn(7));
        fresh.seal_checksum();
        assert_eq!(page, fresh);
    }

    // Proves SetLink sets and clears the link.
    #[test]
    fn set_link_sets_and_clears() {
        let mut page = build(&[init_redo(1), PageRedo::SetLink { link: PageId(77) }]);
        assert_eq!(page.link(), PageId(77));
        apply(&mut page, Lsn(3), &PageRedo::SetLink { link: NO_LINK }).expect("applies");
        assert_eq!(page.link(), NO_LINK);
    }

    // Proves the LSN rules: stale or repeated LSNs and redo on a zeroed page are refused, and
    // a refused apply leaves the page unchanged.
    #[test]
    fn lsn_and_initialization_rules() {
        let mut zeroed = Page::new_zeroed();
        assert_eq!(
            apply(&mut zeroed, Lsn(1), &insert(0, b"a")),
            Err(PageError::NotInitialized)
        );
        assert_eq!(
            apply(&mut zeroed, Lsn::ZERO, &init_redo(1)),
            Err(PageError::LsnNotAfter {
                page_lsn: Lsn::ZERO,
                redo_lsn: Lsn::ZERO
            })
        );
        assert_eq!(zeroed, Page::new_zeroed());
        let mut page = build(&[init_redo(1), insert(0, b"a")]);
        let before = page.clone();
        for lsn in [Lsn(1), Lsn(2)] {
            assert_eq!(
                apply(&mut page, lsn, &insert(0, b"b")),
                Err(PageError::LsnNotAfter {
                    page_lsn: Lsn(2),
                    redo_lsn: lsn
                })
            );
        }
        assert_eq!(page, before);
    }

    // Proves slot range errors for each slot-addressed kind, with the page untouched.
    #[test]
    fn slot_out_of_range_is_an_error() {
        let mut page = build(&[init_redo(1), insert(0, b"a")]);
        let before = page.clone();
        let out_of_range = PageError::SlotOutOfRange {
            slot: 2,
            slot_count: 1,
        };
        assert_eq!(
            apply(&mut page, Lsn(3), &insert(2, b"b")),
            Err(out_of_range.clone())
        );
        let replace = PageRedo::ReplaceCell {
            slot: 1,
            bytes: b"b".to_vec(),
        };
        assert!(matches!(
            apply(&mut page, Lsn(3), &replace),
            Err(PageError::SlotOutOfRange { slot: 1, .. })
        ));
        assert!(matches!(
            apply(&mut page, Lsn(3), &PageRedo::DeleteCell { slot: 1 }),
            Err(PageError::SlotOutOfRange { slot: 1, .. })
        ));
        assert_eq!(page, before);
    }

    // Proves a page fills to the byte: four maximal cells fit exactly, cells that no longer
    // fit give PageFull with the true numbers, a cell that exactly fills the remaining gap is
    // accepted, and growth past it is refused.
    #[test]
    fn page_full_is_reported_exactly() {
        let mut page = build(&[init_redo(1)]);
        for lsn in 2..6 {
            apply(&mut page, Lsn(lsn), &insert(0, &[7u8; CELL_BYTES_MAX])).expect("fits");
        }
        assert_eq!(page.free_space(), 0);

        let mut page = build(&[init_redo(1)]);
        let cell = vec![7u8; 1000];
        let mut lsn = 1;
        while page.free_space() >= cell.len() + SLOT_BYTES {
            lsn += 1;
            apply(&mut page, Lsn(lsn), &insert(0, &cell)).expect("fits");
        }
        let free = page.free_space();
        assert!(free >= SLOT_BYTES);
        let before = page.clone();
        assert_eq!(
            apply(&mut page, Lsn(lsn + 1), &insert(0, &cell)),
            Err(PageError::PageFull {
                needed: cell.len() + SLOT_BYTES,
                free
            })
        );
        assert_eq!(page, before);
        let last = vec![9u8; free - SLOT_BYTES];
        apply(&mut page, Lsn(lsn + 1), &insert(1, &last)).expect("exactly fits");
        assert_eq!(page.free_space(), 0);
        let grow = PageRedo::ReplaceCell {
            slot: 1,
            bytes: vec![9u8; last.len() + 1],
        };
        assert_eq!(
            apply(&mut page, Lsn(lsn + 2), &grow),
            Err(PageError::PageFull { needed: 1, free: 0 })
        );
        let too_big = insert(0, &vec![0u8; CELL_BYTES_MAX + 1]);
        assert!(matches!(
            apply(&mut page, Lsn(lsn + 2), &too_big),
            Err(PageError::CellTooLarge { .. })
        ));
    }
}
