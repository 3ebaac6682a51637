//! Durability: everything between "compute has a redo record" and "four of six storage nodes
//! have it on disk".
//!
//! - [`record`]: the redo record's bytes (the format spec is there).
//! - [`segment`]: one PG's copy on a storage node: the append-only hot log, written and
//!   fsync'd in groups by the [`flusher`] (which also keeps zeros written ahead of the records),
//!   verified on open, with its SCL and epoch.
//! - [`server`] and [`gossip`]: the storage node's LogService (writers append on one
//!   long-lived stream per segment) and hole filling between peers.
//! - [`writer`] and [`recovery`]: the quorum writer compute uses: LSN allocation, boxcar
//!   batching, 4-of-6 acks, VCL/VDL, LAL back-pressure, and takeover with truncation.
//!
//! This crate never interprets redo payloads: a record's `kind` and payload are opaque here.
//! It must not depend on `storage`, `meta` or `compute`.

pub mod client;
pub mod declaration;
pub mod error;
pub mod flusher;
pub mod gossip;
pub mod limits;
pub mod lsn_index;
pub mod placement;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod server;
pub mod types;
pub mod writer;

pub use types::{Epoch, Lsn, NodeId, PageId, PgId, VolumeId};
