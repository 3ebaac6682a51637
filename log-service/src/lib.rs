//! Durability. (Work in progress.)
pub mod types;
pub use types::{Epoch, Lsn, NodeId, PageId, PgId};
