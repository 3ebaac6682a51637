//! The numbers the cluster map talks in: the workspace's one set of newtypes, defined in
//! `sixfold-log-service` so that placement, epochs and node ids mean the same thing on the log
//! path and in the cluster map.

pub use sixfold_log_service::types::{Epoch, NodeId, PgId, VolumeId};
