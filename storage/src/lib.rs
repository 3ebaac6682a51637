//! Availability of pages. This crate turns redo into pages: it owns the 8 KiB page format
//! and the one redo apply that compute, storage nodes and read replicas all share (DESIGN.md:
//! "one implementation of the page format and redo apply"). Page versions, GetPage@LSN,
//! layer files and object-store snapshots will be built on top of it.
//!
//! What is here is a pure library: no networking, no disk, no clocks. It depends only on the
//! domain newtypes of `sixfold-log-service`; the segment log that feeds it lives there, and
//! this crate will read that log, never write it.
//!
//! The byte-level spec lives next to the code that implements it:
//! - [`page`]: header, slot entries, cell area and the page invariants;
//! - [`redo`]: each redo kind's code and payload bytes;
//! - [`apply`](apply()): the rules for applying redo (LSN order, all-or-nothing, checksum).
//!
//! Write path: compute calls [`apply()`] on its cached page, then [`PageRedo::encode`]s the
//! same redo into a log record. Read path: a storage node [`PageRedo::decode`]s records from
//! its segment and calls [`apply()`] in LSN order on a page it started as
//! [`Page::new_zeroed`] or loaded with [`Page::from_bytes`].

pub mod apply;
pub mod error;
pub mod page;
pub mod redo;

pub use apply::apply;
pub use error::PageError;
pub use page::{CELL_BYTES_MAX, NO_LINK, PAGE_SIZE, Page, PageKind};
pub use redo::{PageRedo, REDO_PAYLOAD_BYTES_MAX};
