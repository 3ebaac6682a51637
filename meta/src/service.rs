//! The meta node's gRPC services: the Raft transport between members, and the MetaService that
//! storage nodes, writers and `sixfold ctl` use.

use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ServerState, error::CheckIsLeaderError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sixfold_proto::meta as pb;
use sixfold_proto::meta::meta_service_server::{MetaService, MetaServiceServer};
use sixfold_proto::meta::raft_service_server::{RaftService, RaftServiceServer};
use tonic::{Request, Response, Status};

use crate::NodeId;
use crate::cluster_map::{Command, CommandResult, NodeState};
use crate::limits::{META_MESSAGE_BYTES_MAX, RAFT_MESSAGE_BYTES_MAX};
use crate::state_machine::StateMachineStore;
use crate::types::{MetaNode, MetaNodeId, MetaRaft, MetaResponse};

/// The metadata key a follower puts the leader's address in.
pub const LEADER_KEY: &str = "x-sixfold-leader";

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn json<T: Serialize>(value: &T) -> Result<bytes::Bytes, Status> {
    serde_json::to_vec(value)
        .map(Into::into)
        .map_err(|e| Status::internal(format!("encoding reply: {e}")))
}

fn parse<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))
}

fn not_leader(leader: Option<&MetaNode>) -> Status {
    let mut status = Status::unavailable(match leader {
        Some(l) => format!("not the meta leader; the leader is at {}", l.rpc_addr),
        None => "no meta leader is known right now (an election is under way)".to_string(),
    });
    if let Some(l) = leader
        && let Ok(v) = l.rpc_addr.parse()
    {
        status.metadata_mut().insert(LEADER_KEY, v);
    }
    status
}

#[derive(Clone)]
pub struct MetaServer {
    raft: MetaRaft,
    state_machine: StateMachineStore,
}

impl MetaServer {
    pub fn new(raft: MetaRaft, state_machine: StateMachineStore) -> MetaServer {
        MetaServer {
            raft,
            state_machine,
        }
    }

    pub fn raft_service(&self) -> RaftServiceServer<MetaServer> {
        RaftServiceServer::new(self.clone())
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX)
    }

    pub fn meta_service(&self) -> MetaServiceServer<MetaServer> {
        MetaServiceServer::new(self.clone())
            .max_decoding_message_size(META_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(META_MESSAGE_BYTES_MAX)
    }

    /// Proposes `command` through Raft and returns its result (or NOT_LEADER).
    pub async fn write(&self, command: Command) -> Result<CommandResult, Status> {
        match self.raft.client_write(command).await {
            Ok(reply) => match reply.data {
                MetaResponse::Command(result) => Ok(result),
                MetaResponse::Internal => Err(Status::internal(
                    "a command was answered as an internal entry",
                )),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(not_leader(f.leader_node.as_ref()))
            }
            Err(e) => Err(Status::unavailable(format!("meta write failed: {e}"))),
        }
    }

    fn map(&self) -> Result<crate::ClusterMap, Status> {
        self.state_machine
            .cluster_map()
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// Puts the leader's clock into a command: time is decided where the command is ordered, never
/// by the caller, so a client with a wrong clock cannot stretch a lease.
fn stamp(mut command: Command, now: u64) -> Command {
    match &mut command {
        Command::RegisterNode { now_ms, .. }
        | Command::Heartbeat { now_ms, .. }
        | Command::AcquireLease { now_ms, .. }
        | Command::RenewLease { now_ms, .. } => *now_ms = now,
        _ => {}
    }
    command
}

#[tonic::async_trait]
impl RaftService for MetaServer {
    async fn append_entries(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = parse(&request.into_inner().json, "append-entries")?;
        let result = self.raft.append_entries(rpc).await;
        Ok(Response::new(pb::RaftPayload {
            json: json(&result)?,
        }))
    }

    async fn vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = parse(&request.into_inner().json, "vote")?;
        let result = self.raft.vote(rpc).await;
        Ok(Response::new(pb::RaftPayload {
            json: json(&result)?,
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = parse(&request.into_inner().json, "install-snapshot")?;
        let result = self.raft.install_snapshot(rpc).await;
        Ok(Response::new(pb::RaftPayload {
            json: json(&result)?,
        }))
    }
}

#[tonic::async_trait]
impl MetaService for MetaServer {
    async fn propose(
        &self,
        request: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeReply>, Status> {
        let command: Command = parse(&request.into_inner().command_json, "command")?;
        let result = self.write(stamp(command, now_ms())).await?;
        Ok(Response::new(pb::ProposeReply {
            result_json: json(&result)?,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let id = NodeId(request.into_inner().node_id);
        if let Err(e) = self
            .write(Command::Heartbeat {
                id,
                now_ms: now_ms(),
            })
            .await?
        {
            return Err(Status::not_found(e.to_string()));
        }
        // A node that answers is usable again: Provisioning or Failed → Ready, and Running once
        // it holds segments.
        let map = self.map()?;
        let state = map.nodes.get(&id).map(|n| n.state);
        if matches!(state, Some(NodeState::Provisioning | NodeState::Failed)) {
            let _ = self
                .write(Command::SetNodeState {
                    id,
                    state: NodeState::Ready,
                })
                .await?;
        }
        let map = self.map()?;
        if map.nodes.get(&id).map(|n| n.state) == Some(NodeState::Ready) && map.segments_on(id) > 0
        {
            let _ = self
                .write(Command::SetNodeState {
                    id,
                    state: NodeState::Running,
                })
                .await?;
        }
        Ok(Response::new(pb::HeartbeatReply {
            epoch_max: map.epoch_max.get(),
        }))
    }

    async fn get_cluster_map(
        &self,
        request: Request<pb::GetClusterMapRequest>,
    ) -> Result<Response<pb::ClusterMapReply>, Status> {
        if request.into_inner().linearizable {
            match self.raft.ensure_linearizable().await {
                Ok(_) => {}
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    return Err(not_leader(f.leader_node.as_ref()));
                }
                Err(e) => {
                    return Err(Status::unavailable(format!(
                        "cannot confirm leadership: {e}"
                    )));
                }
            }
        }
        let map = self.map()?;
        let applied_index = self
            .state_machine
            .last_applied()
            .map_err(|e| Status::internal(e.to_string()))?
            .map(|l| l.index)
            .unwrap_or(0);
        Ok(Response::new(pb::ClusterMapReply {
            map_json: json(&map)?,
            applied_index,
        }))
    }

    async fn group_status(
        &self,
        _request: Request<pb::GroupStatusRequest>,
    ) -> Result<Response<pb::GroupStatusReply>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let members = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node): (&MetaNodeId, &MetaNode)| pb::GroupMember {
                id: *id,
                addr: node.rpc_addr.clone(),
            })
            .collect();
        Ok(Response::new(pb::GroupStatusReply {
            id: metrics.id,
            role: role.to_string(),
            leader_id: metrics.current_leader.unwrap_or(0),
            term: metrics.current_term,
            last_applied: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            members,
        }))
    }
}
