//! Availability of pages. This crate turns redo into pages: it owns the 8 KiB page format
//! and the one redo apply that compute, storage nodes and read replicas all share (DESIGN.md:
//! "one implementation of the page format and redo apply"), and, on a storage node, the page
//! versions, layer files, GetPage@LSN and object-store snapshots built on them.
//!
//! It depends on `sixfold-log-service` for the domain newtypes and the segment log it
//! materializes; it reads that log, never writes it (except to refill a rebuilt segment with
//! records restored from object storage, which goes through the same checked append as
//! gossip). It must not depend on `meta` or `compute`.
//!
//! # Pure library (no I/O)
//! - [`page`]: header, slot entries, cell area and the page invariants (byte-level spec);
//! - [`redo`]: each redo kind's code and payload bytes;
//! - [`apply`](apply()): the rules for applying redo (LSN order, all-or-nothing, checksum);
//! - [`versions`]: per-page version chains (images and redo) and their replay.
//!
//! # The storage node's page path
//! - [`layer_file`]: immutable CRC-checked files of versions, read through memmap2 (byte spec);
//! - [`page_store`]: one segment's stack of layers that answers GetPage@LSN;
//! - [`materializer`]: the background loop that applies durable records into the store,
//!   freezes layers, writes image layers, drops versions below PGMRPL and repairs corruption;
//! - [`read_points`]: PGMRPL, from the read points computes report;
//! - [`object_storage`]: layer and log uploads, manifests, and rebuilding a segment from them;
//! - [`node`], [`page_service`], [`page_client`]: the PageService a storage node serves and the
//!   one client for it; [`config`] and [`limits`]: its flags and bounds;
//! - [`bench_support`]: a GetPage and materialization benchmark on one in-process segment.
//!
//! Write path: compute calls [`apply()`] on its cached page, then [`PageRedo::encode`]s the
//! same redo into a log record. Read path: a storage node [`PageRedo::decode`]s records from
//! its segment and calls [`apply()`] in LSN order on a page it started as
//! [`Page::new_zeroed`] or loaded with [`Page::from_bytes`].

pub mod apply;
pub mod bench_support;
pub mod config;
pub mod error;
pub mod layer_file;
pub mod limits;
pub mod materializer;
pub mod node;
pub mod object_storage;
pub mod page;
pub mod page_cache;
pub mod page_client;
pub mod page_service;
pub mod page_store;
pub mod read_points;
pub mod redo;
pub mod versions;

pub use apply::apply;
pub use error::{PageError, StorageError};
pub use page::{CELL_BYTES_MAX, NO_LINK, PAGE_SIZE, Page, PageKind};
pub use redo::{PageRedo, REDO_PAYLOAD_BYTES_MAX};
