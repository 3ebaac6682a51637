//! sixfold-meta: the durable core of the meta service, the small Raft group (openraft 0.9)
//! that holds the cluster map.
//!
//! This crate owns:
//! - the cluster map ([`ClusterMap`]): storage nodes and their lifecycle, volumes with the
//!   segment placement of every protection group, and the writer lease with the volume epoch;
//! - the commands that change it ([`Command`]), applied deterministically, with placement
//!   ([`placement`]) and lease ([`lease`]) rules as plain functions;
//! - the Raft storage: a CRC-framed, fsynced log store ([`LogStore`]) and a state machine with
//!   atomic, CRC-checked snapshots ([`StateMachineStore`]), both ready for `Raft::new`.
//!
//! Around that core: the gRPC transport between members ([`network`]), the MetaService that
//! storage nodes, writers and `sixfold ctl` call ([`service`], [`client`]), and a running member
//! with its failure detector ([`node`]). The state machine reads no clock while applying
//! commands; times travel inside the commands, stamped by the leader.

pub mod atomic_file;
pub mod client;
pub mod cluster_map;
pub mod error;
pub mod frame;
pub mod ids;
pub mod lease;
pub mod limits;
mod log_file;
pub mod log_store;
pub mod network;
pub mod node;
pub mod placement;
pub mod service;
pub mod state_machine;
pub mod types;

use std::path::Path;

pub use cluster_map::{
    ClusterMap, Command, CommandError, CommandOutcome, CommandResult, NodeRecord, NodeState,
    ProtectionGroup, Volume,
};
pub use error::MetaError;
pub use ids::{Epoch, NodeId, PgId, VolumeId};
pub use lease::{LeaseError, WriterLease};
pub use log_file::LOG_FILE_NAME;
pub use log_store::{LogReader, LogStore};
pub use placement::PlacementError;
pub use state_machine::StateMachineStore;
pub use types::{
    MetaEntry, MetaLogId, MetaNode, MetaNodeId, MetaRaft, MetaRequest, MetaResponse,
    MetaStorageError, MetaVote, TypeConfig,
};

/// Subdirectory of a meta node's data directory holding the Raft log.
pub const LOG_DIR_NAME: &str = "raft-log";
/// Subdirectory of a meta node's data directory holding the state machine's snapshot.
pub const STATE_MACHINE_DIR_NAME: &str = "state-machine";

/// Opens (creating if needed) the log store and state machine of a meta node whose data lives
/// in `data_dir`, ready to pass to `openraft::Raft::new`.
pub fn open_storage(data_dir: &Path) -> Result<(LogStore, StateMachineStore), MetaError> {
    let log = LogStore::open(&data_dir.join(LOG_DIR_NAME))?;
    let state_machine = StateMachineStore::open(&data_dir.join(STATE_MACHINE_DIR_NAME))?;
    Ok((log, state_machine))
}
