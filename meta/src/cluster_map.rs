//! The cluster map: the state the meta group replicates, and the commands that change it.
//!
//! [`ClusterMap::apply`] is the state machine's transition function. It is deterministic: it
//! reads no clock, no randomness and no environment (times come inside the commands), so every
//! replica that applies the same log holds the same map. A refused command leaves the map
//! unchanged and says why in its result.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, NodeId, PgId, VolumeId};
use crate::lease::{self, LeaseError, WriterLease};
use crate::limits::{
    ADDRESS_BYTES_MAX, AZ_BYTES_MAX, NODES_MAX, PAGE_SIZE_BYTES_MAX, PAGE_SIZE_BYTES_MIN,
    PAGES_PER_PG_MAX, PGS_PER_VOLUME_MAX, SEGMENTS_PER_PG, VOLUMES_MAX,
};
use crate::placement::{self, Candidate, PlacementError};

/// Where a storage node is in its life.
///
/// Provisioning → Ready → Running → Draining → Removed; any live state → Failed; Failed →
/// Ready (re-admitted) or Removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Registered, not yet ready to hold segments.
    Provisioning,
    /// May receive segments.
    Ready,
    /// Holds segments and serves them.
    Running,
    /// Its segments are being moved away; receives no new ones.
    Draining,
    /// Gone for good; holds nothing.
    Removed,
    /// Stopped answering; its segments will be replaced after a grace period.
    Failed,
}

impl NodeState {
    /// Whether a node in this state may be moved to `to`. Staying in the same state is allowed
    /// so a retried command is harmless.
    pub fn can_become(self, to: NodeState) -> bool {
        use NodeState::*;
        self == to
            || matches!(
                (self, to),
                (Provisioning, Ready)
                    | (Ready, Running)
                    | (Ready | Running, Draining)
                    | (Draining, Removed)
                    | (Provisioning | Ready | Running | Draining, Failed)
                    | (Failed, Ready | Removed)
            )
    }

    /// Whether new segments may be placed on a node in this state.
    pub fn takes_segments(self) -> bool {
        matches!(self, NodeState::Ready | NodeState::Running)
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    /// gRPC address, `host:port`.
    pub address: String,
    /// Availability-zone label.
    pub az: String,
    pub state: NodeState,
    /// The latest heartbeat time carried by a command (ms since the Unix epoch). Never
    /// decreases.
    pub last_heartbeat_ms: u64,
}

/// One protection group: its six segments and the version of that set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectionGroup {
    pub id: PgId,
    /// The node holding each segment, two per availability zone.
    pub segments: [NodeId; SEGMENTS_PER_PG],
    pub membership_epoch: Epoch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub id: VolumeId,
    pub page_size: u32,
    pub pages_per_pg: u64,
    /// PG `i` holds pages `i * pages_per_pg .. (i + 1) * pages_per_pg`.
    pub pgs: Vec<ProtectionGroup>,
}

/// Everything the meta group agrees on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    pub volumes: BTreeMap<VolumeId, Volume>,
    pub lease: Option<WriterLease>,
    /// The highest volume epoch ever granted. Never decreases, survives lease release.
    pub epoch_max: Epoch,
}

/// A change to the cluster map, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Adds a storage node in state Provisioning. Registering again with the same address and
    /// zone is a no-op.
    RegisterNode {
        id: NodeId,
        address: String,
        az: String,
        now_ms: u64,
    },
    Heartbeat {
        id: NodeId,
        now_ms: u64,
    },
    SetNodeState {
        id: NodeId,
        state: NodeState,
    },
    /// Forgets a node. Refused while any segment is placed on it.
    RemoveNode {
        id: NodeId,
    },
    /// Creates a volume of `pg_count` PGs placed on Ready and Running nodes; Ready nodes that
    /// receive a segment become Running.
    CreateVolume {
        id: VolumeId,
        page_size: u32,
        pages_per_pg: u64,
        pg_count: u32,
    },
    AcquireLease {
        holder: String,
        now_ms: u64,
        lease_ms: u64,
    },
    RenewLease {
        holder: String,
        epoch: Epoch,
        now_ms: u64,
        lease_ms: u64,
    },
    ReleaseLease {
        holder: String,
        epoch: Epoch,
    },
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutcome {
    /// The node as registered (or as it already was).
    NodeRegistered(NodeRecord),
    HeartbeatRecorded,
    NodeStateSet {
        id: NodeId,
        from: NodeState,
        to: NodeState,
    },
    NodeRemoved(NodeId),
    VolumeCreated(Volume),
    /// Granted by acquire or renew.
    LeaseGranted(WriterLease),
    LeaseReleased,
}

/// Why a command was refused. The cluster map is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    #[error("node {id} is already registered with address {address:?} in zone {az:?}")]
    NodeConflict {
        id: NodeId,
        address: String,
        az: String,
    },
    #[error("node {id} cannot go from {from} to {to}")]
    InvalidTransition {
        id: NodeId,
        from: NodeState,
        to: NodeState,
    },
    #[error("node {id} still holds {segments} segments; move them first")]
    NodeHoldsSegments { id: NodeId, segments: u64 },
    #[error("volume {0} already exists")]
    VolumeExists(VolumeId),
    #[error("the cluster map already holds the maximum of {max} {what}")]
    TooMany { what: String, max: usize },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

pub type CommandResult = Result<CommandOutcome, CommandError>;

impl ClusterMap {
    /// Applies one command. On `Err` the map is unchanged.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        let result = match command {
            Command::RegisterNode {
                id,
                address,
                az,
                now_ms,
            } => self.register_node(*id, address, az, *now_ms),
            Command::Heartbeat { id, now_ms } => self.heartbeat(*id, *now_ms),
            Command::SetNodeState { id, state } => self.set_node_state(*id, *state),
            Command::RemoveNode { id } => self.remove_node(*id),
            Command::CreateVolume {
                id,
                page_size,
                pages_per_pg,
                pg_count,
            } => self.create_volume(*id, *page_size, *pages_per_pg, *pg_count),
            Command::AcquireLease {
                holder,
                now_ms,
                lease_ms,
            } => {
                let granted = lease::acquire(
                    self.lease.as_ref(),
                    self.epoch_max,
                    holder,
                    *now_ms,
                    *lease_ms,
                )?;
                self.epoch_max = granted.epoch;
                self.lease = Some(granted.clone());
                Ok(CommandOutcome::LeaseGranted(granted))
            }
            Command::RenewLease {
                holder,
                epoch,
                now_ms,
                lease_ms,
            } => {
                let granted =
                    lease::renew(self.lease.as_ref(), holder, *epoch, *now_ms, *lease_ms)?;
                self.lease = Some(granted.clone());
                Ok(CommandOutcome::LeaseGranted(granted))
            }
            Command::ReleaseLease { holder, epoch } => {
                lease::release(self.lease.as_ref(), holder, *epoch)?;
                self.lease = None;
                Ok(CommandOutcome::LeaseReleased)
            }
        };
        debug_assert_eq!(self.check(), Ok(()), "after {command:?}");
        result
    }

    fn register_node(&mut self, id: NodeId, address: &str, az: &str, now_ms: u64) -> CommandResult {
        if address.is_empty() || address.len() > ADDRESS_BYTES_MAX {
            return Err(CommandError::InvalidArgument(format!(
                "node address must be 1..={ADDRESS_BYTES_MAX} bytes"
            )));
        }
        if az.is_empty() || az.len() > AZ_BYTES_MAX {
            return Err(CommandError::InvalidArgument(format!(
                "availability zone must be 1..={AZ_BYTES_MAX} bytes"
            )));
        }
        if let Some(existing) = self.nodes.get(&id) {
            if existing.address == address && existing.az == az {
                return Ok(CommandOutcome::NodeRegistered(existing.clone()));
            }
            return Err(CommandError::NodeConflict {
                id,
                address: existing.address.clone(),
                az: existing.az.clone(),
            });
        }
        if self.nodes.len() >= NODES_MAX {
            return Err(CommandError::TooMany {
                what: "nodes".into(),
                max: NODES_MAX,
            });
        }
        let record = NodeRecord {
            id,
            address: address.to_string(),
            az: az.to_string(),
            state: NodeState::Provisioning,
            last_heartbeat_ms: now_ms,
        };
        self.nodes.insert(id, record.clone());
        Ok(CommandOutcome::NodeRegistered(record))
    }

    fn heartbeat(&mut self, id: NodeId, now_ms: u64) -> CommandResult {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(CommandError::UnknownNode(id))?;
        node.last_heartbeat_ms = node.last_heartbeat_ms.max(now_ms);
        Ok(CommandOutcome::HeartbeatRecorded)
    }

    fn set_node_state(&mut self, id: NodeId, to: NodeState) -> CommandResult {
        let segments = self.segments_on(id);
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(CommandError::UnknownNode(id))?;
        let from = node.state;
        if !from.can_become(to) {
            return Err(CommandError::InvalidTransition { id, from, to });
        }
        if to == NodeState::Removed && segments > 0 {
            return Err(CommandError::NodeHoldsSegments { id, segments });
        }
        node.state = to;
        Ok(CommandOutcome::NodeStateSet { id, from, to })
    }

    fn remove_node(&mut self, id: NodeId) -> CommandResult {
        if !self.nodes.contains_key(&id) {
            return Err(CommandError::UnknownNode(id));
        }
        let segments = self.segments_on(id);
        if segments > 0 {
            return Err(CommandError::NodeHoldsSegments { id, segments });
        }
        self.nodes.remove(&id);
        Ok(CommandOutcome::NodeRemoved(id))
    }

    fn create_volume(
        &mut self,
        id: VolumeId,
        page_size: u32,
        pages_per_pg: u64,
        pg_count: u32,
    ) -> CommandResult {
        if self.volumes.contains_key(&id) {
            return Err(CommandError::VolumeExists(id));
        }
        if self.volumes.len() >= VOLUMES_MAX {
            return Err(CommandError::TooMany {
                what: "volumes".into(),
                max: VOLUMES_MAX,
            });
        }
        if !page_size.is_power_of_two()
            || !(PAGE_SIZE_BYTES_MIN..=PAGE_SIZE_BYTES_MAX).contains(&page_size)
        {
            return Err(CommandError::InvalidArgument(format!(
                "page_size {page_size} must be a power of two in \
                 {PAGE_SIZE_BYTES_MIN}..={PAGE_SIZE_BYTES_MAX}"
            )));
        }
        if !(1..=PAGES_PER_PG_MAX).contains(&pages_per_pg) {
            return Err(CommandError::InvalidArgument(format!(
                "pages_per_pg {pages_per_pg} must be in 1..={PAGES_PER_PG_MAX}"
            )));
        }
        if !(1..=PGS_PER_VOLUME_MAX).contains(&pg_count) {
            return Err(CommandError::InvalidArgument(format!(
                "pg_count {pg_count} must be in 1..={PGS_PER_VOLUME_MAX}"
            )));
        }

        let candidates: Vec<Candidate<'_>> = self
            .nodes
            .values()
            .filter(|n| n.state.takes_segments())
            .map(|n| Candidate {
                id: n.id,
                az: &n.az,
            })
            .collect();
        let placed = placement::place_pgs(&candidates, &self.segment_load(), pg_count)?;

        let pgs: Vec<ProtectionGroup> = placed
            .into_iter()
            .enumerate()
            .map(|(i, segments)| ProtectionGroup {
                id: PgId(u32::try_from(i).expect("pg_count is a u32")),
                segments,
                membership_epoch: Epoch(1),
            })
            .collect();
        for pg in &pgs {
            for node_id in pg.segments {
                let node = self
                    .nodes
                    .get_mut(&node_id)
                    .expect("placement only picks registered nodes");
                if node.state == NodeState::Ready {
                    node.state = NodeState::Running;
                }
            }
        }
        let volume = Volume {
            id,
            page_size,
            pages_per_pg,
            pgs,
        };
        self.volumes.insert(id, volume.clone());
        Ok(CommandOutcome::VolumeCreated(volume))
    }

    /// Segments placed on `node` across all volumes.
    pub fn segments_on(&self, node: NodeId) -> u64 {
        self.volumes
            .values()
            .flat_map(|v| &v.pgs)
            .map(|pg| pg.segments.iter().filter(|&&s| s == node).count() as u64)
            .sum()
    }

    /// Segments per node across all volumes (nodes without segments are absent).
    pub fn segment_load(&self) -> BTreeMap<NodeId, u64> {
        let mut load = BTreeMap::new();
        for pg in self.volumes.values().flat_map(|v| &v.pgs) {
            for &node in &pg.segments {
                *load.entry(node).or_insert(0) += 1;
            }
        }
        load
    }

    /// Checks the map's invariants: run after loading a snapshot (which may come from another
    /// node) and, in debug builds, after every command.
    pub fn check(&self) -> Result<(), String> {
        if self.nodes.len() > NODES_MAX || self.volumes.len() > VOLUMES_MAX {
            return Err("more nodes or volumes than the limits allow".into());
        }
        for (id, node) in &self.nodes {
            if node.id != *id {
                return Err(format!("node keyed {id} says it is {}", node.id));
            }
        }
        if let Some(lease) = &self.lease
            && lease.epoch > self.epoch_max
        {
            return Err(format!(
                "lease epoch {} above the highest granted {}",
                lease.epoch, self.epoch_max
            ));
        }
        for (id, volume) in &self.volumes {
            if volume.id != *id {
                return Err(format!("volume keyed {id} says it is {}", volume.id));
            }
            if volume.pgs.len() > PGS_PER_VOLUME_MAX as usize {
                return Err(format!("volume {id} has too many PGs"));
            }
            for (i, pg) in volume.pgs.iter().enumerate() {
                if pg.id.0 as usize != i {
                    return Err(format!("volume {id}: PG at position {i} has id {}", pg.id));
                }
                for (j, node) in pg.segments.iter().enumerate() {
                    if pg.segments[..j].contains(node) {
                        return Err(format!(
                            "volume {id} {:?}: node {node} holds two segments",
                            pg.id
                        ));
                    }
                    if !self.nodes.contains_key(node) {
                        return Err(format!("volume {id} {:?}: unknown node {node}", pg.id));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(map: &mut ClusterMap, id: u64, az: &str, state: NodeState) {
        map.apply(&Command::RegisterNode {
            id: NodeId(id),
            address: format!("10.0.0.{id}:7000"),
            az: az.into(),
            now_ms: 1,
        })
        .unwrap();
        if state != NodeState::Provisioning {
            map.apply(&Command::SetNodeState {
                id: NodeId(id),
                state: NodeState::Ready,
            })
            .unwrap();
        }
    }

    fn six_ready() -> ClusterMap {
        let mut map = ClusterMap::default();
        for (id, az) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")] {
            register(&mut map, id, az, NodeState::Ready);
        }
        map
    }

    fn create(id: u64, pg_count: u32) -> Command {
        Command::CreateVolume {
            id: VolumeId(id),
            page_size: 8192,
            pages_per_pg: 1024,
            pg_count,
        }
    }

    // Proves a volume is placed on Ready nodes, which then become Running, and that the nodes
    // holding segments cannot be removed.
    #[test]
    fn create_volume_places_and_pins_nodes() {
        let mut map = six_ready();
        let Ok(CommandOutcome::VolumeCreated(volume)) = map.apply(&create(1, 4)) else {
            panic!("volume not created");
        };
        assert_eq!(volume.pgs.len(), 4);
        assert!(volume.pgs.iter().all(|pg| pg.membership_epoch == Epoch(1)));
        assert!(map.nodes.values().all(|n| n.state == NodeState::Running));
        assert_eq!(map.segments_on(NodeId(1)), 4);
        assert_eq!(
            map.apply(&Command::RemoveNode { id: NodeId(1) }),
            Err(CommandError::NodeHoldsSegments {
                id: NodeId(1),
                segments: 4
            })
        );
        assert_eq!(
            map.apply(&create(1, 1)),
            Err(CommandError::VolumeExists(VolumeId(1)))
        );
    }

    // Proves a placement refusal (a node still Provisioning leaves only five usable) leaves the
    // map exactly as it was.
    #[test]
    fn refused_volume_leaves_map_unchanged() {
        let mut map = ClusterMap::default();
        for (id, az) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")] {
            register(&mut map, id, az, NodeState::Ready);
        }
        register(&mut map, 6, "c", NodeState::Provisioning);
        let before = map.clone();
        assert_eq!(
            map.apply(&create(1, 1)),
            Err(CommandError::Placement(PlacementError::TooFewNodes {
                usable: 5,
                needed: 6
            }))
        );
        assert_eq!(map, before);
    }

    // Proves the lifecycle rules: allowed steps pass, skipped steps and leaving Removed are
    // refused, and heartbeats never move time backwards.
    #[test]
    fn node_lifecycle() {
        let mut map = ClusterMap::default();
        register(&mut map, 1, "a", NodeState::Provisioning);
        let set = |map: &mut ClusterMap, state| {
            map.apply(&Command::SetNodeState {
                id: NodeId(1),
                state,
            })
        };
        assert!(matches!(
            set(&mut map, NodeState::Running),
            Err(CommandError::InvalidTransition { .. })
        ));
        for state in [
            NodeState::Ready,
            NodeState::Running,
            NodeState::Draining,
            NodeState::Removed,
        ] {
            set(&mut map, state).unwrap();
        }
        assert!(set(&mut map, NodeState::Ready).is_err());

        map.apply(&Command::Heartbeat {
            id: NodeId(1),
            now_ms: 50,
        })
        .unwrap();
        map.apply(&Command::Heartbeat {
            id: NodeId(1),
            now_ms: 40,
        })
        .unwrap();
        assert_eq!(map.nodes[&NodeId(1)].last_heartbeat_ms, 50);
        assert_eq!(
            map.apply(&Command::Heartbeat {
                id: NodeId(9),
                now_ms: 1
            }),
            Err(CommandError::UnknownNode(NodeId(9)))
        );
        assert_eq!(
            map.apply(&Command::RemoveNode { id: NodeId(1) }),
            Ok(CommandOutcome::NodeRemoved(NodeId(1)))
        );
    }

    // Proves the lease commands keep epoch_max across a release, so the next writer's epoch is
    // higher than any before.
    #[test]
    fn lease_epochs_never_repeat() {
        let mut map = ClusterMap::default();
        let acquire = |holder: &str, now_ms| Command::AcquireLease {
            holder: holder.into(),
            now_ms,
            lease_ms: 100,
        };
        map.apply(&acquire("w1", 0)).unwrap();
        assert!(map.apply(&acquire("w2", 50)).is_err());
        map.apply(&Command::ReleaseLease {
            holder: "w1".into(),
            epoch: Epoch(1),
        })
        .unwrap();
        let Ok(CommandOutcome::LeaseGranted(lease)) = map.apply(&acquire("w2", 60)) else {
            panic!("not granted");
        };
        assert_eq!(lease.epoch, Epoch(2));
        assert_eq!(map.epoch_max, Epoch(2));
    }

    // Proves the map survives a JSON round trip (the snapshot and log encoding), including the
    // newtype map keys.
    #[test]
    fn json_round_trip() {
        let mut map = six_ready();
        map.apply(&create(7, 2)).unwrap();
        let json = serde_json::to_vec(&map).unwrap();
        let back: ClusterMap = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, map);
        assert_eq!(back.check(), Ok(()));
    }
}
