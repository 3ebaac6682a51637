//! The storage under a real openraft group: three meta nodes in one process, joined by an
//! in-memory router instead of gRPC. Proves the stores work from `Raft::new`: commands replicate
//! and apply identically, a new member is rebuilt from a snapshot once the log is purged, and a
//! restarted member recovers from its own disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Config, SnapshotPolicy};
use sixfold_meta::{
    ClusterMap, Command, CommandError, CommandOutcome, Epoch, LeaseError, MetaError, MetaNode,
    MetaNodeId, MetaRaft, MetaResponse, NodeId, NodeState, StateMachineStore, TypeConfig, VolumeId,
    open_storage,
};

/// Delivers RPCs by calling the target's `Raft` directly.
#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<BTreeMap<MetaNodeId, MetaRaft>>>,
}

struct Connection {
    router: Router,
    target: MetaNodeId,
}

impl Connection {
    /// The target's Raft, or `None` while it is down.
    fn target_raft(&self) -> Option<MetaRaft> {
        self.router.nodes.lock().unwrap().get(&self.target).cloned()
    }
}

fn unreachable<E: std::error::Error>() -> RPCError<MetaNodeId, MetaNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("node is down")))
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: MetaNodeId, _node: &MetaNode) -> Connection {
        Connection {
            router: self.clone(),
            target,
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        AppendEntriesResponse<MetaNodeId>,
        RPCError<MetaNodeId, MetaNode, RaftError<MetaNodeId>>,
    > {
        let raft = self.target_raft().ok_or_else(unreachable)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<MetaNodeId>,
        RPCError<MetaNodeId, MetaNode, RaftError<MetaNodeId, InstallSnapshotError>>,
    > {
        let raft = self.target_raft().ok_or_else(unreachable)?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MetaNodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<MetaNodeId>, RPCError<MetaNodeId, MetaNode, RaftError<MetaNodeId>>>
    {
        let raft = self.target_raft().ok_or_else(unreachable)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        // Snapshots only when the test asks, and purge everything they cover.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

async fn start(router: &Router, root: &Path, id: MetaNodeId) -> (MetaRaft, StateMachineStore) {
    // After a shutdown, openraft's state machine task lets go of its store (and the directory
    // lock) a moment later; a restart in the same process waits for that.
    let dir = root.join(format!("meta-{id}"));
    let mut attempts = 0;
    let (log, sm) = loop {
        match open_storage(&dir) {
            Err(MetaError::Locked { .. }) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            opened => break opened.unwrap(),
        }
    };
    let raft = MetaRaft::new(id, config(), router.clone(), log, sm.clone())
        .await
        .unwrap();
    router.nodes.lock().unwrap().insert(id, raft.clone());
    (raft, sm)
}

fn member(id: MetaNodeId) -> MetaNode {
    MetaNode::new(format!("127.0.0.1:{}", 7000 + id))
}

/// Proposes `command` and returns the index it was applied at with its result.
async fn write_at(
    raft: &MetaRaft,
    command: Command,
) -> (u64, Result<CommandOutcome, CommandError>) {
    let response = raft.client_write(command).await.unwrap();
    match response.data {
        MetaResponse::Command(result) => (response.log_id.index, result),
        MetaResponse::Internal => panic!("a command answered as an internal entry"),
    }
}

async fn write(raft: &MetaRaft, command: Command) -> Result<CommandOutcome, CommandError> {
    write_at(raft, command).await.1
}

fn storage_cluster() -> Vec<Command> {
    let mut commands = Vec::new();
    for (id, az) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")] {
        commands.push(Command::RegisterNode {
            id: NodeId(id),
            address: format!("10.0.0.{id}:7100"),
            az: az.into(),
            now_ms: 1_000,
        });
        commands.push(Command::SetNodeState {
            id: NodeId(id),
            state: NodeState::Ready,
        });
    }
    commands
}

async fn map_when_applied(raft: &MetaRaft, sm: &StateMachineStore, index: u64) -> ClusterMap {
    raft.wait(WAIT)
        .applied_index_at_least(Some(index), "replica catches up")
        .await
        .unwrap();
    sm.cluster_map().unwrap()
}

// Proves, on a three-node group over the real stores: commands (node registration, volume
// placement, leases) commit and return their results; every replica holds the same map; a
// fourth node that joins after the log was purged is rebuilt from a snapshot; and a restarted
// node recovers the map from its own disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_snapshot_and_restart() {
    let root = tempfile::tempdir().unwrap();
    let router = Router::default();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(&router, root.path(), id).await);
    }
    let members: BTreeMap<_, _> = (1..=3).map(|id| (id, member(id))).collect();
    nodes[&1].0.initialize(members).await.unwrap();
    let metrics = nodes[&1]
        .0
        .wait(WAIT)
        .metrics(|m| m.current_leader.is_some(), "a leader is elected")
        .await
        .unwrap();
    let leader = nodes[&metrics.current_leader.unwrap()].0.clone();

    for command in storage_cluster() {
        write(&leader, command).await.unwrap();
    }
    let created = write(
        &leader,
        Command::CreateVolume {
            id: VolumeId(1),
            page_size: 8192,
            pages_per_pg: 256,
            pg_count: 4,
        },
    )
    .await
    .unwrap();
    assert!(matches!(created, CommandOutcome::VolumeCreated(ref v) if v.pgs.len() == 4));
    let granted = write(
        &leader,
        Command::AcquireLease {
            holder: "compute-1".into(),
            now_ms: 2_000,
            lease_ms: 5_000,
        },
    )
    .await
    .unwrap();
    assert!(matches!(granted, CommandOutcome::LeaseGranted(ref l) if l.epoch == Epoch(1)));
    let (last, refused) = write_at(
        &leader,
        Command::AcquireLease {
            holder: "compute-2".into(),
            now_ms: 3_000,
            lease_ms: 5_000,
        },
    )
    .await;
    assert!(matches!(
        refused,
        Err(CommandError::Lease(LeaseError::Held { .. }))
    ));

    let expected = map_when_applied(&nodes[&1].0, &nodes[&1].1, last).await;
    for (raft, sm) in nodes.values() {
        assert_eq!(map_when_applied(raft, sm, last).await, expected);
    }
    assert_eq!(expected.volumes[&VolumeId(1)].pgs.len(), 4);

    // Snapshot and purge everywhere, so a new member can only be rebuilt from a snapshot.
    for (raft, _) in nodes.values() {
        raft.trigger().snapshot().await.unwrap();
        raft.wait(WAIT)
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= last),
                "snapshot built",
            )
            .await
            .unwrap();
        raft.trigger().purge_log(last).await.unwrap();
        raft.wait(WAIT)
            .metrics(|m| m.purged.is_some_and(|p| p.index >= last), "log purged")
            .await
            .unwrap();
    }
    let (learner, learner_sm) = start(&router, root.path(), 4).await;
    leader.add_learner(4, member(4), true).await.unwrap();
    let learner_map = map_when_applied(&learner, &learner_sm, last).await;
    assert_eq!(learner_map, expected);
    assert!(
        learner.metrics().borrow().snapshot.is_some(),
        "rebuilt from a snapshot"
    );

    // One more command after the snapshot, so recovery needs both snapshot and log.
    let (last, heartbeat) = write_at(
        &leader,
        Command::Heartbeat {
            id: NodeId(3),
            now_ms: 9_000,
        },
    )
    .await;
    heartbeat.unwrap();
    let expected = map_when_applied(&learner, &learner_sm, last).await;
    assert_eq!(expected.nodes[&NodeId(3)].last_heartbeat_ms, 9_000);

    // Restart a follower from its disk.
    let leader_id = leader.metrics().borrow().id;
    let follower = *nodes.keys().find(|&&id| id != leader_id).unwrap();
    let (raft, sm) = nodes.remove(&follower).unwrap();
    router.nodes.lock().unwrap().remove(&follower);
    raft.shutdown().await.unwrap();
    drop((raft, sm));
    let (raft, sm) = start(&router, root.path(), follower).await;
    assert_eq!(map_when_applied(&raft, &sm, last).await, expected);

    for (raft, _) in nodes.values() {
        raft.shutdown().await.unwrap();
    }
    raft.shutdown().await.unwrap();
    learner.shutdown().await.unwrap();
}
