//! The 8 KiB slotted page: its byte layout, its read API and its validation.
//!
//! The same bytes live in compute's buffer cache, in a storage node's page versions and in
//! object-store snapshots, and invariant 4 of DESIGN.md ("GetPage returns the same bytes
//! everywhere") depends on every copy being built by the one [`apply`](crate::apply()). This
//! module owns the layout; only `apply` changes a page, through the crate-private mutators
//! at the bottom of this file.
//!
//! # Byte layout (all integers little-endian)
//!
//! ```text
//!  offset size field       meaning
//!  ------ ---- ----------- -----------------------------------------------------------------
//!       0    4 checksum    crc32 (IEEE, crc32fast) of all 8192 bytes with this field zeroed
//!       4    1 format      PAGE_FORMAT_VERSION (1); 0 only in the all-zero page
//!       5    1 kind        PageKind, opaque to storage; never 0 in an initialized page
//!       6    2 slot_count  number of slot entries
//!       8    8 lsn         LSN of the last redo applied to this page
//!      16    8 page_id     the page's own id, so a misplaced image is detectable
//!      24    8 link        a page id, e.g. a B+tree leaf's right sibling; 0 = none
//!      32    2 lower       end of the slot array = 40 + 4 * slot_count
//!      34    2 upper       start of the cell area
//!      36    4 reserved    zero
//!      40      slot array  slot_count entries, 4 bytes each
//!
//!  slot entry i (at 40 + 4 * i):   offset u16 | len u16   (cell i is bytes [offset, offset+len))
//!
//!  0        40                   lower               upper                               8192
//!  +--------+--------------------+-------------------+-----------------------------------+
//!  | header | slot 0 | slot 1 | …| free, all zero    | … | cell 2 | cell 1 |     cell 0     |
//!  +--------+--------------------+-------------------+-----------------------------------+
//!            slot array grows →                        ← cell area grows
//! ```
//!
//! # Invariants (checked by [`Page::from_bytes`], kept by `apply`)
//!
//! 1. The checksum matches. The one exception is the **all-zero page**, which stands for a page
//!    that was never initialized (as Postgres's `PageIsNew`); any bit flipped in it makes it
//!    non-zero and then the checksum fails.
//! 2. `format == PAGE_FORMAT_VERSION`, `kind != 0`, `reserved == 0`.
//! 3. `lower == 40 + 4 * slot_count` and `lower <= upper <= 8192`.
//! 4. **Canonical cell layout**: cell 0 ends at 8192, cell i+1 ends where cell i starts, and
//!    the last cell starts at `upper`; every cell is at most [`CELL_BYTES_MAX`] bytes. So
//!    cells never overlap and the cell area has no holes.
//! 5. The free gap `[lower, upper)` is all zero.
//!
//! Invariants 4 and 5 make the image a pure function of (kind, page id, lsn, link, cells):
//! apply is deterministic by construction, and two copies that saw the same redo are
//! byte-identical. The price is a memmove of at most 8 KiB per change, which is the same order
//! as the checksum we compute anyway, and it buys a one-gap free-space rule with no
//! fragmentation bookkeeping.
//!
//! # What is assumed of the disk
//!
//! Nothing here writes to disk. A page image read back may be torn or bit-flipped; the
//! checksum catches that, and the caller rebuilds the page from the log or a peer rather than
//! serving it (DESIGN.md invariant 5).

use std::fmt;
use std::num::NonZeroU8;

use sixfold_log_service::{Lsn, PageId};

use crate::error::PageError;

/// Bytes in a page. Fixed for the whole volume.
pub const PAGE_SIZE: usize = 8192;
/// Bytes of the fixed header that starts every page.
pub const PAGE_HEADER_BYTES: usize = 40;
/// Bytes of one slot entry (offset u16, len u16).
pub const SLOT_BYTES: usize = 4;
/// Bytes shared by the slot array, the free gap and the cell area.
pub const PAGE_BODY_BYTES: usize = PAGE_SIZE - PAGE_HEADER_BYTES;
/// Largest cell. A quarter of the body (slot included) so that any page holds at least four
/// maximal cells, which lets a B+tree split leave at least two on each side.
pub const CELL_BYTES_MAX: usize = PAGE_BODY_BYTES / 4 - SLOT_BYTES;
/// Most slots a page can hold (all cells empty). Bounded by space, named so readers of
/// `slot_count` can reject nonsense before touching the slot array.
pub const SLOT_COUNT_MAX: usize = PAGE_BODY_BYTES / SLOT_BYTES;
/// Version of this layout, stored in every initialized page so a future layout can tell
/// old images apart instead of misreading them.
pub const PAGE_FORMAT_VERSION: u8 = 1;
/// The `link` value that means "no linked page".
pub const NO_LINK: PageId = PageId(0);

// Every offset, including `upper == PAGE_SIZE` on an empty page, is stored as a u16.
const _: () = assert!(PAGE_SIZE <= u16::MAX as usize);
const _: () = assert!(SLOT_COUNT_MAX <= u16::MAX as usize);
const _: () = assert!(4 * (CELL_BYTES_MAX + SLOT_BYTES) <= PAGE_BODY_BYTES);
const _: () = assert!(OFF_RESERVED + 4 == PAGE_HEADER_BYTES);

const OFF_CHECKSUM: usize = 0;
const OFF_FORMAT: usize = 4;
const OFF_KIND: usize = 5;
const OFF_SLOT_COUNT: usize = 6;
const OFF_LSN: usize = 8;
const OFF_PAGE_ID: usize = 16;
const OFF_LINK: usize = 24;
const OFF_LOWER: usize = 32;
const OFF_UPPER: usize = 34;
const OFF_RESERVED: usize = 36;

/// What a page holds (B+tree leaf, internal node, catalog, …). Storage never interprets it;
/// compute assigns the codes. Zero is reserved for the never-initialized page, so it cannot
/// be constructed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PageKind(NonZeroU8);

impl PageKind {
    /// `None` for 0, which means "not initialized".
    pub const fn new(code: u8) -> Option<PageKind> {
        match NonZeroU8::new(code) {
            Some(code) => Some(PageKind(code)),
            None => None,
        }
    }

    pub const fn get(self) -> u8 {
        self.0.get()
    }
}

/// One 8 KiB page image. Every `Page` that this crate hands out satisfies the invariants in
/// the module docs and carries a sealed checksum.
#[derive(Clone, PartialEq, Eq)]
pub struct Page {
    // Boxed so a page moves as a pointer and never sits on a small task stack.
    bytes: Box<[u8; PAGE_SIZE]>,
}

impl Page {
    /// The all-zero page: a page that was never initialized. Only `InitPage` applies to it.
    pub fn new_zeroed() -> Page {
        Page {
            bytes: Box::new([0u8; PAGE_SIZE]),
        }
    }

    /// An empty initialized page at LSN 0, sealed. This is the image `InitPage` produces
    /// (before it stamps its LSN), so there is one place that builds a page.
    pub fn init(page_id: PageId, kind: PageKind) -> Page {
        let mut page = Page::new_zeroed();
        page.init_in_place(page_id, kind);
        page.seal_checksum();
        page
    }

    /// Parses and validates an image from the disk or the network. Checks the size, the
    /// checksum and every invariant of the layout; never panics on any input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Page, PageError> {
        if bytes.len() != PAGE_SIZE {
            return Err(PageError::WrongSize {
                len: bytes.len(),
                expected: PAGE_SIZE,
            });
        }
        let mut page = Page::new_zeroed();
        page.bytes.copy_from_slice(bytes);
        page.verify_checksum()?;
        if !page.is_all_zero() {
            page.validate_layout()?;
        }
        Ok(page)
    }

    pub fn as_bytes(&self) -> &[u8; PAGE_SIZE] {
        &self.bytes
    }

    /// True for the never-initialized page. Invariant 1 makes the format byte enough to tell.
    pub fn is_zeroed(&self) -> bool {
        self.bytes[OFF_FORMAT] == 0
    }

    /// LSN of the last redo applied; `Lsn::ZERO` for a zeroed page or a fresh `Page::init`.
    pub fn lsn(&self) -> Lsn {
        Lsn(self.u64_at(OFF_LSN))
    }

    pub fn page_id(&self) -> PageId {
        PageId(self.u64_at(OFF_PAGE_ID))
    }

    /// `None` for a zeroed page.
    pub fn kind(&self) -> Option<PageKind> {
        PageKind::new(self.bytes[OFF_KIND])
    }

    pub fn slot_count(&self) -> u16 {
        self.u16_at(OFF_SLOT_COUNT)
    }

    /// The linked page id, or [`NO_LINK`].
    pub fn link(&self) -> PageId {
        PageId(self.u64_at(OFF_LINK))
    }

    /// Bytes free for a new cell plus its slot entry (the gap between `lower` and `upper`).
    /// Zero for a zeroed page, which has no layout yet.
    pub fn free_space(&self) -> usize {
        self.upper().saturating_sub(self.lower())
    }

    /// Cell `slot`, or `None` past the end.
    pub fn cell(&self, slot: u16) -> Option<&[u8]> {
        if slot >= self.slot_count() {
            return None;
        }
        let (start, end) = self.cell_range(slot);
        self.bytes.get(start..end)
    }

    /// All cells in slot order.
    pub fn cells(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.slot_count()).filter_map(move |slot| self.cell(slot))
    }

    /// The stored checksum field.
    pub fn stored_checksum(&self) -> u32 {
        self.u32_at(OFF_CHECKSUM)
    }

    /// crc32 of the page with the checksum field taken as zero.
    pub fn compute_checksum(&self) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&[0u8; 4]);
        hasher.update(&self.bytes[OFF_CHECKSUM + 4..]);
        hasher.finalize()
    }

    /// Writes the checksum of the current contents. `apply` calls this after every change, so
    /// callers only need it if they build images some other way (tests). The zeroed page is
    /// left all-zero: that is its canonical image (invariant 1).
    pub fn seal_checksum(&mut self) {
        if self.is_all_zero() {
            return;
        }
        let checksum = self.compute_checksum();
        self.bytes[OFF_CHECKSUM..OFF_CHECKSUM + 4].copy_from_slice(&checksum.to_le_bytes());
    }

    /// Checks the stored checksum against the contents (the all-zero page passes).
    pub fn verify_checksum(&self) -> Result<(), PageError> {
        let stored = self.stored_checksum();
        if stored == 0 && self.is_all_zero() {
            return Ok(());
        }
        let computed = self.compute_checksum();
        if stored != computed {
            return Err(PageError::ChecksumMismatch { stored, computed });
        }
        Ok(())
    }

    /// Checks invariants 2–5 of an initialized page. Every offset is bounds-checked before use,
    /// so corrupt bytes give an error, never a panic.
    pub(crate) fn validate_layout(&self) -> Result<(), PageError> {
        let corrupt = |reason| Err(PageError::CorruptPage { reason });
        if self.bytes[OFF_FORMAT] != PAGE_FORMAT_VERSION {
            return corrupt("unknown page format version");
        }
        if self.kind().is_none() {
            return corrupt("initialized page has kind 0");
        }
        if self.u32_at(OFF_RESERVED) != 0 {
            return corrupt("reserved header bytes are not zero");
        }
        let slot_count = usize::from(self.slot_count());
        if slot_count > SLOT_COUNT_MAX {
            return corrupt("slot count exceeds SLOT_COUNT_MAX");
        }
        let (lower, upper) = (self.lower(), self.upper());
        if lower != PAGE_HEADER_BYTES + SLOT_BYTES * slot_count {
            return corrupt("lower does not match the slot count");
        }
        if upper < lower || upper > PAGE_SIZE {
            return corrupt("upper outside [lower, PAGE_SIZE]");
        }
        let mut cells_start = PAGE_SIZE;
        for slot in 0..self.slot_count() {
            let (offset, len) = self.slot_entry(slot);
            if len > CELL_BYTES_MAX {
                return corrupt("cell longer than CELL_BYTES_MAX");
            }
            // Both are u16 values, so the sum cannot overflow a usize.
            if offset + len != cells_start {
                return corrupt("cell is not adjacent to the previous cell");
            }
            cells_start = offset;
        }
        if cells_start != upper {
            return corrupt("cells do not end at upper");
        }
        if self.bytes[lower..upper].iter().any(|&b| b != 0) {
            return corrupt("free space is not zero");
        }
        Ok(())
    }

    fn is_all_zero(&self) -> bool {
        self.bytes.iter().all(|&b| b == 0)
    }

    fn lower(&self) -> usize {
        usize::from(self.u16_at(OFF_LOWER))
    }

    fn upper(&self) -> usize {
        usize::from(self.u16_at(OFF_UPPER))
    }

    /// (offset, len) of slot entry `slot`. Callers keep `slot < slot_count <= SLOT_COUNT_MAX`,
    /// which keeps the entry inside the page.
    fn slot_entry(&self, slot: u16) -> (usize, usize) {
        let at = slot_pos(slot);
        (
            usize::from(self.u16_at(at)),
            usize::from(self.u16_at(at + 2)),
        )
    }

    fn cell_range(&self, slot: u16) -> (usize, usize) {
        let (offset, len) = self.slot_entry(slot);
        (offset, offset + len)
    }

    fn u16_at(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]])
    }

    fn u32_at(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes[at..at + 4]);
        u32::from_le_bytes(b)
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[at..at + 8]);
        u64::from_le_bytes(b)
    }
}

/// Crate-private mutators: the building blocks of [`apply`](crate::apply()). Each one either
/// checks everything before it writes a byte and leaves the page untouched on error, or
/// cannot fail. None of them seals the checksum or sets the LSN; `apply` does that once.
impl Page {
    /// Resets the page to an empty one of `kind`, LSN 0, checksum not sealed.
    pub(crate) fn init_in_place(&mut self, page_id: PageId, kind: PageKind) {
        self.bytes.fill(0);
        self.bytes[OFF_FORMAT] = PAGE_FORMAT_VERSION;
        self.bytes[OFF_KIND] = kind.get();
        self.put_u64(OFF_PAGE_ID, page_id.get());
        self.put_u16(OFF_LOWER, PAGE_HEADER_BYTES);
        self.put_u16(OFF_UPPER, PAGE_SIZE);
    }

    pub(crate) fn set_lsn(&mut self, lsn: Lsn) {
        self.put_u64(OFF_LSN, lsn.get());
    }

    pub(crate) fn set_link(&mut self, link: PageId) {
        self.put_u64(OFF_LINK, link.get());
    }

    /// Inserts `cell` at `slot` (`slot == slot_count` appends); later slots shift up by one.
    pub(crate) fn insert_cell(&mut self, slot: u16, cell: &[u8]) -> Result<(), PageError> {
        let slot_count = self.slot_count();
        if slot > slot_count {
            return Err(PageError::SlotOutOfRange { slot, slot_count });
        }
        check_cell_len(cell)?;
        let needed = cell.len() + SLOT_BYTES;
        let free = self.free_space();
        if needed > free {
            return Err(PageError::PageFull { needed, free });
        }
        // Open an empty slot entry at `slot`, positioned where cell `slot` belongs in the
        // canonical layout (the start of the previous cell), then grow it to size.
        let at = slot_pos(slot);
        let lower = self.lower();
        self.bytes.copy_within(at..lower, at + SLOT_BYTES);
        let end = if slot == 0 {
            PAGE_SIZE
        } else {
            self.slot_entry(slot - 1).0
        };
        self.put_u16(at, end);
        self.put_u16(at + 2, 0);
        self.put_u16(OFF_SLOT_COUNT, usize::from(slot_count) + 1);
        self.put_u16(OFF_LOWER, lower + SLOT_BYTES);
        self.resize_cell(slot, cell.len());
        self.write_cell(slot, cell);
        Ok(())
    }

    /// Replaces the bytes of cell `slot`; the cell may grow or shrink.
    pub(crate) fn replace_cell(&mut self, slot: u16, cell: &[u8]) -> Result<(), PageError> {
        let slot_count = self.slot_count();
        if slot >= slot_count {
            return Err(PageError::SlotOutOfRange { slot, slot_count });
        }
        check_cell_len(cell)?;
        let old_len = self.slot_entry(slot).1;
        let needed = cell.len().saturating_sub(old_len);
        let free = self.free_space();
        if needed > free {
            return Err(PageError::PageFull { needed, free });
        }
        self.resize_cell(slot, cell.len());
        self.write_cell(slot, cell);
        Ok(())
    }

    /// Removes cell `slot`; later slots shift down by one.
    pub(crate) fn delete_cell(&mut self, slot: u16) -> Result<(), PageError> {
        let slot_count = self.slot_count();
        if slot >= slot_count {
            return Err(PageError::SlotOutOfRange { slot, slot_count });
        }
        self.resize_cell(slot, 0);
        let at = slot_pos(slot);
        let lower = self.lower();
        self.bytes.copy_within(at + SLOT_BYTES..lower, at);
        // The vacated last entry becomes free space, which must read as zero (invariant 5).
        self.bytes[lower - SLOT_BYTES..lower].fill(0);
        self.put_u16(OFF_SLOT_COUNT, usize::from(slot_count) - 1);
        self.put_u16(OFF_LOWER, lower - SLOT_BYTES);
        Ok(())
    }

    /// Changes cell `slot` to `new_len` bytes while keeping the layout canonical: the cell's
    /// end stays put, and the cells after it in slot order (which sit below it) move as one
    /// block. The cell's new bytes are left for the caller to write. The caller has checked
    /// that `slot` is in range and that the growth fits in the free gap.
    fn resize_cell(&mut self, slot: u16, new_len: usize) {
        let (offset, old_len) = self.slot_entry(slot);
        let end = offset + old_len;
        let upper = self.upper();
        assert!(new_len <= CELL_BYTES_MAX && upper <= offset && end <= PAGE_SIZE);
        assert!(new_len <= old_len || new_len - old_len <= self.free_space());
        // `upper + old_len - new_len`, computed without going below zero in the middle.
        let new_upper = upper + old_len - new_len;
        self.bytes.copy_within(upper..offset, new_upper);
        if new_upper > upper {
            // Shrinking vacates the bottom of the old block: it joins the zeroed free gap.
            self.bytes[upper..new_upper].fill(0);
        }
        for later in slot + 1..self.slot_count() {
            let at = slot_pos(later);
            let later_offset = usize::from(self.u16_at(at));
            self.put_u16(at, later_offset + old_len - new_len);
        }
        let at = slot_pos(slot);
        self.put_u16(at, end - new_len);
        self.put_u16(at + 2, new_len);
        self.put_u16(OFF_UPPER, new_upper);
    }

    fn write_cell(&mut self, slot: u16, cell: &[u8]) {
        let (start, end) = self.cell_range(slot);
        self.bytes[start..end].copy_from_slice(cell);
    }

    /// Stores an offset, length or count; all of them are bounded by `PAGE_SIZE`, which the
    /// const assertions above keep within a u16.
    fn put_u16(&mut self, at: usize, value: usize) {
        let value = u16::try_from(value).expect("page offsets and counts fit in u16");
        self.bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }

    fn put_u64(&mut self, at: usize, value: u64) {
        self.bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
}

fn slot_pos(slot: u16) -> usize {
    PAGE_HEADER_BYTES + SLOT_BYTES * usize::from(slot)
}

fn check_cell_len(cell: &[u8]) -> Result<(), PageError> {
    if cell.len() > CELL_BYTES_MAX {
        return Err(PageError::CellTooLarge {
            len: cell.len(),
            max: CELL_BYTES_MAX,
        });
    }
    Ok(())
}

impl fmt::Debug for Page {
    // The 8 KiB of bytes would drown any assertion message; show the header instead.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("page_id", &self.page_id())
            .field("lsn", &self.lsn())
            .field("kind", &self.kind())
            .field("slot_count", &self.slot_count())
            .field("free_space", &self.free_space())
            .field("link", &self.link())
            .field(
                "checksum",
                &format_args!("{:#010x}", self.stored_checksum()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_page() -> Page {
        let mut page = Page::init(PageId(7), PageKind::new(3).expect("non-zero"));
        page.insert_cell(0, b"bravo").expect("fits");
        page.insert_cell(0, b"alpha").expect("fits");
        page.insert_cell(2, b"charlie").expect("fits");
        page.seal_checksum();
        page
    }

    /// Rewrites a u16 header or slot field and reseals, so the checksum passes and only the
    /// layout validation can catch the damage.
    fn with_u16(page: &Page, at: usize, value: u16) -> Vec<u8> {
        let mut bytes = page.as_bytes().to_vec();
        bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&[0u8; 4]);
        hasher.update(&bytes[4..]);
        let checksum = hasher.finalize();
        bytes[0..4].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    fn assert_corrupt(bytes: &[u8]) {
        match Page::from_bytes(bytes) {
            Err(PageError::CorruptPage { .. }) => {}
            other => panic!("expected CorruptPage, got {other:?}"),
        }
    }

    // Proves the documented header offsets: a fresh page has exactly the bytes the spec says.
    #[test]
    fn init_writes_the_documented_header() {
        let page = Page::init(PageId(0x0102_0304), PageKind::new(9).expect("non-zero"));
        let b = page.as_bytes();
        assert_eq!(b[OFF_FORMAT], PAGE_FORMAT_VERSION);
        assert_eq!(b[OFF_KIND], 9);
        assert_eq!(
            &b[OFF_PAGE_ID..OFF_PAGE_ID + 8],
            &0x0102_0304u64.to_le_bytes()
        );
        assert_eq!(&b[OFF_LOWER..OFF_LOWER + 2], &40u16.to_le_bytes());
        assert_eq!(&b[OFF_UPPER..OFF_UPPER + 2], &8192u16.to_le_bytes());
        assert_eq!(page.free_space(), PAGE_BODY_BYTES);
        assert_eq!(page.slot_count(), 0);
        assert_eq!(page.link(), NO_LINK);
        assert_eq!(page.lsn(), Lsn::ZERO);
        page.verify_checksum().expect("sealed");
        assert_eq!(Page::from_bytes(b.as_slice()), Ok(page.clone()));
    }

    // Proves the canonical layout: cell 0 ends at PAGE_SIZE and each next cell sits below.
    #[test]
    fn cells_are_packed_in_slot_order_from_the_back() {
        let page = sample_page();
        assert_eq!(page.slot_entry(0), (PAGE_SIZE - 5, 5));
        assert_eq!(page.slot_entry(1), (PAGE_SIZE - 10, 5));
        assert_eq!(page.slot_entry(2), (PAGE_SIZE - 17, 7));
        assert_eq!(page.upper(), PAGE_SIZE - 17);
        let cells: Vec<&[u8]> = page.cells().collect();
        assert_eq!(cells, vec![&b"alpha"[..], b"bravo", b"charlie"]);
        assert_eq!(page.cell(3), None);
        page.validate_layout().expect("canonical");
    }

    // Proves the all-zero page is accepted as "never initialized" and stays all-zero when
    // sealed, while a single flipped bit in it is a checksum error.
    #[test]
    fn zeroed_page_round_trips_and_detects_flips() {
        let mut zeroed = Page::new_zeroed();
        zeroed.seal_checksum();
        assert!(zeroed.as_bytes().iter().all(|&b| b == 0));
        let parsed = Page::from_bytes(&[0u8; PAGE_SIZE]).expect("zeroed page is valid");
        assert!(parsed.is_zeroed());
        assert_eq!(parsed.kind(), None);
        assert_eq!(parsed.free_space(), 0);
        for bit in [0, 7, 33, 8 * 100, 8 * PAGE_SIZE - 1] {
            assert_flip_is_caught(&[0u8; PAGE_SIZE], bit);
        }
    }

    /// Flips `bit` of a copy of `bytes` and asserts the page checksum refuses it.
    fn assert_flip_is_caught(bytes: &[u8], bit: usize) {
        let mut bytes = bytes.to_vec();
        bytes[bit / 8] ^= 1 << (bit % 8);
        assert!(
            matches!(
                Page::from_bytes(&bytes),
                Err(PageError::ChecksumMismatch { .. })
            ),
            "bit {bit}"
        );
    }

    // Proves that any single flipped bit in an initialized page is caught by the checksum,
    // by flipping a spread of bits across header, slots, free space and cells.
    #[test]
    fn flipped_bits_fail_the_checksum() {
        let page = sample_page();
        for bit in (0..8 * PAGE_SIZE).step_by(61) {
            assert_flip_is_caught(page.as_bytes(), bit);
        }
    }

    // Proves size validation: short, long and empty inputs are errors, not panics.
    #[test]
    fn wrong_sizes_are_rejected() {
        for len in [0, 1, PAGE_SIZE - 1, PAGE_SIZE + 1] {
            assert_eq!(
                Page::from_bytes(&vec![0u8; len]),
                Err(PageError::WrongSize {
                    len,
                    expected: PAGE_SIZE
                })
            );
        }
    }

    // Proves layout validation catches bad offsets even when the checksum was resealed over
    // them (a buggy or hostile writer), one field at a time.
    #[test]
    fn bad_offsets_are_rejected_despite_a_valid_checksum() {
        let page = sample_page();
        let slot1 = slot_pos(1);
        for (at, value) in [
            (OFF_SLOT_COUNT, 4),                     // more slots than lower says
            (OFF_SLOT_COUNT, u16::MAX),              // beyond SLOT_COUNT_MAX
            (OFF_LOWER, 60),                         // lower disagrees with slot count
            (OFF_UPPER, 8000),                       // cells do not end at upper
            (OFF_UPPER, 10),                         // upper below lower
            (OFF_UPPER, u16::MAX),                   // upper past the page
            (slot1, (PAGE_SIZE - 11) as u16),        // overlapping / non-adjacent cell
            (slot1, u16::MAX),                       // offset past the page
            (slot1 + 2, u16::MAX),                   // length past CELL_BYTES_MAX
            (slot1 + 2, 6),                          // length breaks adjacency
            (PAGE_HEADER_BYTES + 3 * SLOT_BYTES, 1), // garbage in the free gap
            (OFF_RESERVED, 1),                       // reserved bytes in use
        ] {
            assert_corrupt(&with_u16(&page, at, value));
        }
        // Format version and kind share one u16 at offset 4.
        assert_corrupt(&with_u16(&page, OFF_FORMAT, u16::from_le_bytes([2, 3])));
        assert_corrupt(&with_u16(&page, OFF_FORMAT, u16::from_le_bytes([1, 0])));
        assert_corrupt(&with_u16(&page, OFF_FORMAT, u16::from_le_bytes([0, 3])));
        // The unmodified page still parses: the helper itself is not what breaks it.
        assert_eq!(Page::from_bytes(page.as_bytes().as_slice()), Ok(page));
    }

    // Proves the mutators refuse what does not fit and leave the page byte-identical.
    #[test]
    fn refused_changes_leave_the_page_untouched() {
        let mut page = sample_page();
        let before = page.clone();
        let too_big = vec![1u8; CELL_BYTES_MAX + 1];
        assert_eq!(
            page.insert_cell(4, b"x"),
            Err(PageError::SlotOutOfRange {
                slot: 4,
                slot_count: 3
            })
        );
        assert!(matches!(
            page.insert_cell(0, &too_big),
            Err(PageError::CellTooLarge { .. })
        ));
        assert!(matches!(
            page.replace_cell(3, b"x"),
            Err(PageError::SlotOutOfRange { .. })
        ));
        assert!(matches!(
            page.delete_cell(3),
            Err(PageError::SlotOutOfRange { .. })
        ));
        assert_eq!(page, before);
    }
}
