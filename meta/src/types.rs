//! The Raft type configuration of the meta group: who the members are and what a log entry
//! carries.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::cluster_map::{Command, CommandResult};

/// A member of the meta Raft group. Distinct from [`crate::NodeId`], which names storage nodes.
pub type MetaNodeId = u64;

/// How to reach a meta group member: its gRPC address (`host:port`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaNode {
    pub rpc_addr: String,
}

impl MetaNode {
    pub fn new(rpc_addr: impl Into<String>) -> MetaNode {
        MetaNode {
            rpc_addr: rpc_addr.into(),
        }
    }
}

impl fmt::Display for MetaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rpc_addr)
    }
}

/// What a client proposes to the meta group: one command on the cluster map.
pub type MetaRequest = Command;

/// What applying one log entry answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// A blank (leader no-op) or membership entry: nothing for the client.
    Internal,
    /// The outcome of a [`Command`]: done, or refused with the reason.
    Command(CommandResult),
}

openraft::declare_raft_types!(
    /// openraft's view of the meta group.
    pub TypeConfig:
        D = MetaRequest,
        R = MetaResponse,
        NodeId = MetaNodeId,
        Node = MetaNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle the meta service runs.
pub type MetaRaft = openraft::Raft<TypeConfig>;
/// A log entry of the meta group.
pub type MetaEntry = openraft::Entry<TypeConfig>;
/// A log id of the meta group.
pub type MetaLogId = openraft::LogId<MetaNodeId>;
/// A vote of the meta group.
pub type MetaVote = openraft::Vote<MetaNodeId>;
/// openraft's storage error for this group.
pub type MetaStorageError = openraft::StorageError<MetaNodeId>;
