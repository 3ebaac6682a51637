//! One member of the meta group as a running thing: its stores, its Raft, its gRPC server, and
//! the failure detector that runs while it leads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{Config, ServerState, SnapshotPolicy};

use crate::cluster_map::{Command, NodeState};
use crate::error::MetaError;
use crate::limits::{FAILURE_CHECK_INTERVAL_MS, NODE_FAILED_AFTER_MS, SNAPSHOT_EVERY_LOGS};
use crate::network::GrpcNetwork;
use crate::service::{MetaServer, now_ms};
use crate::types::{MetaNode, MetaNodeId, MetaRaft};
use crate::{StateMachineStore, open_storage};

pub struct MetaNodeConfig {
    pub id: MetaNodeId,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Every member, this one included.
    pub members: BTreeMap<MetaNodeId, MetaNode>,
    /// Initialize the group if this member's log is empty (first start of a new cluster only).
    pub bootstrap: bool,
    pub snapshot_every_logs: u64,
}

impl MetaNodeConfig {
    pub fn new(
        id: MetaNodeId,
        listen: SocketAddr,
        data_dir: PathBuf,
        members: BTreeMap<MetaNodeId, MetaNode>,
    ) -> MetaNodeConfig {
        MetaNodeConfig {
            id,
            listen,
            data_dir,
            members,
            bootstrap: false,
            snapshot_every_logs: SNAPSHOT_EVERY_LOGS,
        }
    }
}

fn raft_config(snapshot_every_logs: u64) -> Result<Arc<Config>, MetaError> {
    let config = Config {
        cluster_name: "sixfold-meta".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every_logs),
        max_in_snapshot_log_to_keep: snapshot_every_logs / 2,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| MetaError::Invariant(format!("raft config: {e}")))
}

/// Runs a meta member until `shutdown` resolves.
pub async fn run(
    config: MetaNodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MetaError> {
    let (log, state_machine) = open_storage(&config.data_dir)?;
    let raft = MetaRaft::new(
        config.id,
        raft_config(config.snapshot_every_logs)?,
        GrpcNetwork,
        log,
        state_machine.clone(),
    )
    .await
    .map_err(|e| MetaError::Invariant(format!("starting raft: {e}")))?;
    if config.bootstrap {
        match raft.initialize(config.members.clone()).await {
            Ok(()) => tracing::info!(id = config.id, "meta group initialized"),
            Err(e) => {
                tracing::info!(id = config.id, error = %e, "not initializing: this member already has state")
            }
        }
    }
    let server = MetaServer::new(raft.clone(), state_machine.clone());
    let detector = tokio::spawn(detect_failures(raft.clone(), state_machine, server.clone()));
    let incoming = tonic::transport::server::TcpIncoming::bind(config.listen)
        .map_err(|source| MetaError::Io {
            context: "binding the meta listener",
            path: PathBuf::from(config.listen.to_string()),
            source,
        })?
        .with_nodelay(Some(true));
    tracing::info!(id = config.id, listen = %config.listen, "meta member serving");
    let served = tonic::transport::Server::builder()
        .add_service(server.raft_service())
        .add_service(server.meta_service())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    detector.abort();
    let _ = raft.shutdown().await;
    served.map_err(|e| MetaError::Invariant(format!("serving: {e}")))
}

/// While this member leads: marks storage nodes that stopped heartbeating Failed. A new leader
/// first waits a full failure period, so nodes that could not heartbeat during the election are
/// not failed for it.
async fn detect_failures(raft: MetaRaft, state_machine: StateMachineStore, server: MetaServer) {
    let mut leading_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(FAILURE_CHECK_INTERVAL_MS));
    loop {
        tick.tick().await;
        let leader = raft.metrics().borrow().state == ServerState::Leader;
        if !leader {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        if since.elapsed() < Duration::from_millis(NODE_FAILED_AFTER_MS) {
            continue;
        }
        let Ok(map) = state_machine.cluster_map() else {
            continue;
        };
        let now = now_ms();
        for node in map.nodes.values() {
            let live = matches!(
                node.state,
                NodeState::Ready | NodeState::Running | NodeState::Draining
            );
            if live && now.saturating_sub(node.last_heartbeat_ms) > NODE_FAILED_AFTER_MS {
                tracing::warn!(
                    node = node.id.get(),
                    silent_ms = now - node.last_heartbeat_ms,
                    "storage node stopped heartbeating; marking it Failed"
                );
                if let Err(e) = server
                    .write(Command::SetNodeState {
                        id: node.id,
                        state: NodeState::Failed,
                    })
                    .await
                {
                    tracing::debug!(error = %e, "could not mark node failed (lost leadership?)");
                }
            }
        }
    }
}
