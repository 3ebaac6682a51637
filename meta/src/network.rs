//! openraft's network over gRPC: each member reaches the others through the `RaftService`.
//! Bodies are openraft's own serde types as JSON (see `proto/meta.proto` for why).

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sixfold_proto::meta as pb;
use sixfold_proto::meta::raft_service_client::RaftServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::limits::RAFT_MESSAGE_BYTES_MAX;
use crate::types::{MetaNode, MetaNodeId, TypeConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Creates one gRPC connection per peer.
#[derive(Clone, Default)]
pub struct GrpcNetwork;

pub struct GrpcConnection {
    target: MetaNodeId,
    client: Option<RaftServiceClient<Channel>>,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: MetaNodeId, node: &MetaNode) -> GrpcConnection {
        let client = Endpoint::from_shared(format!("http://{}", node.rpc_addr))
            .ok()
            .map(|e| {
                let channel = e
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect_lazy();
                RaftServiceClient::new(channel)
                    .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            });
        GrpcConnection { target, client }
    }
}

fn unreachable<E: std::error::Error>(
    why: impl std::fmt::Display,
) -> RPCError<MetaNodeId, MetaNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why.to_string())))
}

fn encode<T: Serialize>(value: &T) -> Result<pb::RaftPayload, serde_json::Error> {
    Ok(pb::RaftPayload {
        json: serde_json::to_vec(value)?.into(),
    })
}

/// Decodes a peer's reply: `Ok(response)` or the peer's Raft error. The error type is
/// openraft's, as its `RaftNetwork` trait requires, large as it is.
#[allow(clippy::result_large_err)]
fn decode<T: DeserializeOwned, E: DeserializeOwned + std::error::Error>(
    target: MetaNodeId,
    payload: pb::RaftPayload,
) -> Result<T, RPCError<MetaNodeId, MetaNode, RaftError<MetaNodeId, E>>> {
    let result: Result<T, RaftError<MetaNodeId, E>> = serde_json::from_slice(&payload.json)
        .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

impl GrpcConnection {
    async fn call<Req, Resp, E>(
        &mut self,
        req: &Req,
        option: &RPCOption,
        which: Rpc,
    ) -> Result<Resp, RPCError<MetaNodeId, MetaNode, RaftError<MetaNodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::error::Error,
    {
        let Some(client) = self.client.clone() else {
            return Err(unreachable("bad member address"));
        };
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(payload);
        request.set_timeout(option.hard_ttl());
        let mut client = client;
        let reply = match which {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        match reply {
            Ok(r) => decode(self.target, r.into_inner()),
            Err(status) => Err(unreachable(status.message())),
        }
    }
}

enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for GrpcConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        AppendEntriesResponse<MetaNodeId>,
        RPCError<MetaNodeId, MetaNode, RaftError<MetaNodeId>>,
    > {
        self.call(&rpc, &option, Rpc::Append).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<MetaNodeId>,
        RPCError<MetaNodeId, MetaNode, RaftError<MetaNodeId, InstallSnapshotError>>,
    > {
        self.call(&rpc, &option, Rpc::Snapshot).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MetaNodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MetaNodeId>, RPCError<MetaNodeId, MetaNode, RaftError<MetaNodeId>>>
    {
        self.call(&rpc, &option, Rpc::Vote).await
    }
}
