//! The one client for the meta group: finds the leader, follows redirects, and retries across
//! members while an election is under way.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sixfold_log_service::placement::{NodeInfo, PgPlacement, Placement};
use sixfold_proto::meta as pb;
use sixfold_proto::meta::meta_service_client::MetaServiceClient;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::cluster_map::{ClusterMap, Command, CommandError, CommandOutcome, Volume};
use crate::lease::WriterLease;
use crate::limits::{CLIENT_RETRY_MS, META_MESSAGE_BYTES_MAX};
use crate::service::LEADER_KEY;
use crate::{Epoch, NodeId, VolumeId};

#[derive(Debug, Error)]
pub enum MetaClientError {
    /// The meta group applied the command and refused it; the map is unchanged.
    #[error("{0}")]
    Refused(#[from] CommandError),
    #[error("meta service unreachable: {0}")]
    Unavailable(String),
    #[error("bad reply from the meta service: {0}")]
    Protocol(String),
    #[error("invalid meta address {0:?}")]
    BadAddress(String),
}

#[derive(Clone)]
pub struct MetaClient {
    members: Arc<Vec<(String, MetaServiceClient<Channel>)>>,
    leader: Arc<AtomicUsize>,
    retry_for: Duration,
}

impl MetaClient {
    /// A client for the meta group whose members are at `addrs` (`host:port`).
    pub fn new(addrs: &[String]) -> Result<MetaClient, MetaClientError> {
        if addrs.is_empty() {
            return Err(MetaClientError::BadAddress(String::new()));
        }
        let mut members = Vec::new();
        for addr in addrs {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|_| MetaClientError::BadAddress(addr.clone()))?;
            let channel = endpoint
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .connect_lazy();
            let client = MetaServiceClient::new(channel)
                .max_decoding_message_size(META_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(META_MESSAGE_BYTES_MAX);
            members.push((addr.clone(), client));
        }
        Ok(MetaClient {
            members: Arc::new(members),
            leader: Arc::new(AtomicUsize::new(0)),
            retry_for: Duration::from_millis(CLIENT_RETRY_MS),
        })
    }

    /// Parses a comma-separated member list.
    pub fn from_list(list: &str) -> Result<MetaClient, MetaClientError> {
        let addrs: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        Self::new(&addrs)
    }

    /// How long calls keep retrying before giving up.
    pub fn with_retry(mut self, retry_for: Duration) -> MetaClient {
        self.retry_for = retry_for;
        self
    }

    pub fn addrs(&self) -> Vec<String> {
        self.members.iter().map(|(a, _)| a.clone()).collect()
    }

    /// Calls `op` on the leader (as far as we know), following redirects and trying every member
    /// until one answers or the retry time runs out.
    async fn on_leader<T, F, Fut>(&self, op: F) -> Result<T, MetaClientError>
    where
        F: Fn(MetaServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.retry_for;
        let mut last;
        let mut attempt = 0usize;
        loop {
            let index = self.leader.load(Ordering::Relaxed) % self.members.len();
            let (addr, client) = &self.members[index];
            match op(client.clone()).await {
                Ok(v) => return Ok(v),
                Err(status) => {
                    last = format!("{addr}: {}", status.message());
                    let hinted = status
                        .metadata()
                        .get(LEADER_KEY)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|l| self.members.iter().position(|(a, _)| a == l));
                    match (status.code(), hinted) {
                        (_, Some(leader)) if leader != index => {
                            self.leader.store(leader, Ordering::Relaxed);
                            continue;
                        }
                        (
                            Code::Unavailable
                            | Code::DeadlineExceeded
                            | Code::Unknown
                            | Code::Cancelled,
                            _,
                        ) => {
                            self.leader.store(index + 1, Ordering::Relaxed);
                        }
                        _ => return Err(MetaClientError::Protocol(last)),
                    }
                }
            }
            attempt += 1;
            if Instant::now() >= deadline {
                return Err(MetaClientError::Unavailable(last));
            }
            if attempt.is_multiple_of(self.members.len()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Proposes a command; `Err(Refused)` when the group applied it and said no.
    pub async fn propose(&self, command: Command) -> Result<CommandOutcome, MetaClientError> {
        let body =
            serde_json::to_vec(&command).map_err(|e| MetaClientError::Protocol(e.to_string()))?;
        let reply = self
            .on_leader(|mut c| {
                let command_json = body.clone().into();
                async move { c.propose(pb::ProposeRequest { command_json }).await }
            })
            .await?
            .into_inner();
        let result: Result<CommandOutcome, CommandError> =
            serde_json::from_slice(&reply.result_json)
                .map_err(|e| MetaClientError::Protocol(e.to_string()))?;
        Ok(result?)
    }

    /// Reports storage node `id` alive; returns the highest volume epoch granted.
    pub async fn heartbeat(&self, id: NodeId) -> Result<Epoch, MetaClientError> {
        let reply = self
            .on_leader(|mut c| async move {
                c.heartbeat(pb::HeartbeatRequest { node_id: id.get() })
                    .await
            })
            .await?;
        Ok(Epoch(reply.into_inner().epoch_max))
    }

    /// The cluster map, read on the leader after it confirmed its leadership.
    pub async fn cluster_map(&self) -> Result<ClusterMap, MetaClientError> {
        let reply = self
            .on_leader(|mut c| async move {
                c.get_cluster_map(pb::GetClusterMapRequest { linearizable: true })
                    .await
            })
            .await?;
        serde_json::from_slice(&reply.into_inner().map_json)
            .map_err(|e| MetaClientError::Protocol(e.to_string()))
    }

    /// Every member's own view of the group (or why it did not answer).
    pub async fn group_status(&self) -> Vec<(String, Result<pb::GroupStatusReply, String>)> {
        let calls = self.members.iter().map(|(addr, client)| {
            let mut client = client.clone();
            async move {
                let mut request = tonic::Request::new(pb::GroupStatusRequest {});
                request.set_timeout(Duration::from_secs(1));
                (
                    addr.clone(),
                    client
                        .group_status(request)
                        .await
                        .map(|r| r.into_inner())
                        .map_err(|s| s.message().to_string()),
                )
            }
        });
        futures::future::join_all(calls).await
    }

    /// Takes the writer lease for `holder`, or says who holds it.
    pub async fn acquire_lease(
        &self,
        holder: &str,
        lease_ms: u64,
    ) -> Result<WriterLease, MetaClientError> {
        self.propose(Command::AcquireLease {
            holder: holder.into(),
            now_ms: 0,
            lease_ms,
        })
        .await
        .and_then(granted)
    }

    pub async fn renew_lease(
        &self,
        holder: &str,
        epoch: Epoch,
        lease_ms: u64,
    ) -> Result<WriterLease, MetaClientError> {
        self.propose(Command::RenewLease {
            holder: holder.into(),
            epoch,
            now_ms: 0,
            lease_ms,
        })
        .await
        .and_then(granted)
    }

    /// Gives the lease up so the next writer need not wait for it to expire.
    pub async fn release_lease(&self, holder: &str, epoch: Epoch) -> Result<(), MetaClientError> {
        self.propose(Command::ReleaseLease {
            holder: holder.into(),
            epoch,
        })
        .await
        .map(|_| ())
    }

    /// The placement of `volume` in the form the log path uses.
    pub async fn placement(&self, volume: VolumeId) -> Result<Placement, MetaClientError> {
        let map = self.cluster_map().await?;
        placement_of(&map, volume).ok_or_else(|| {
            MetaClientError::Refused(CommandError::InvalidArgument(format!("no volume {volume}")))
        })
    }
}

/// The lease a lease command granted.
fn granted(outcome: CommandOutcome) -> Result<WriterLease, MetaClientError> {
    match outcome {
        CommandOutcome::LeaseGranted(lease) => Ok(lease),
        other => Err(MetaClientError::Protocol(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

/// Converts a volume of the cluster map into the placement the writer and storage nodes use.
pub fn placement_of(map: &ClusterMap, volume: VolumeId) -> Option<Placement> {
    let v: &Volume = map.volumes.get(&volume)?;
    let nodes = map
        .nodes
        .values()
        .map(|n| NodeInfo {
            id: n.id,
            addr: n.address.clone(),
            az: n.az.clone(),
        })
        .collect();
    let pgs = v
        .pgs
        .iter()
        .map(|pg| PgPlacement {
            id: pg.id,
            segments: pg.segments,
        })
        .collect();
    Some(Placement {
        nodes,
        pages_per_pg: v.pages_per_pg,
        pgs,
    })
}
