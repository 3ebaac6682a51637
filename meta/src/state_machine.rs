//! The replicated state machine of a meta node: the [`ClusterMap`] in memory, with snapshots on
//! disk.
//!
//! Applying an entry only changes memory; durability comes from the Raft log plus the latest
//! snapshot. A snapshot file holds the map with its snapshot meta (last applied log id and
//! membership) as one CRC-checked frame, replaced atomically, so a restarted node resumes from
//! it and openraft re-applies the log after it; a node that lost its disk is rebuilt from the
//! leader's snapshot the same way. Snapshot data sent between nodes is the map as one frame,
//! checked again on install.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::atomic_file::{DirLock, prepare_dir, read_atomic, write_atomic};
use crate::cluster_map::ClusterMap;
use crate::error::{MetaError, poisoned, task_failed};
use crate::frame::{Decoded, decode_frame, encode_frame};
use crate::limits::SNAPSHOT_BYTES_MAX;
use crate::types::{
    MetaEntry, MetaLogId, MetaNode, MetaNodeId, MetaResponse, MetaStorageError, TypeConfig,
};

/// Name of the snapshot file inside the state machine's directory.
pub const SNAPSHOT_FILE_NAME: &str = "snapshot";

type MetaSnapshotMeta = SnapshotMeta<MetaNodeId, MetaNode>;
type MetaMembership = StoredMembership<MetaNodeId, MetaNode>;

/// The snapshot file's contents.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: MetaSnapshotMeta,
    map: ClusterMap,
}

#[derive(Default)]
struct Applied {
    last_applied: Option<MetaLogId>,
    last_membership: MetaMembership,
    map: ClusterMap,
}

#[derive(Clone)]
struct CurrentSnapshot {
    meta: MetaSnapshotMeta,
    /// The map encoded as one frame: what is sent to followers.
    data: Vec<u8>,
}

struct Shared {
    dir: PathBuf,
    applied: Mutex<Applied>,
    current: Mutex<Option<CurrentSnapshot>>,
    /// Serializes snapshot file writes, so an older build cannot overwrite a newer snapshot.
    /// Held only on the blocking pool.
    persist: Mutex<()>,
    builds: AtomicU64,
    _lock: DirLock,
}

/// The meta state machine. Hand it to `openraft::Raft::new`; clones share the same state.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

fn lock<'a, T>(m: &'a Mutex<T>, what: &'static str) -> Result<MutexGuard<'a, T>, MetaError> {
    m.lock().map_err(|_| poisoned(what))
}

fn encode_map(map: &ClusterMap) -> Result<Vec<u8>, MetaError> {
    let json = serde_json::to_vec(map).map_err(|source| MetaError::Encode {
        what: "cluster map",
        source,
    })?;
    if json.len() > SNAPSHOT_BYTES_MAX {
        return Err(MetaError::TooLarge {
            what: "snapshot",
            len: json.len() as u64,
            max: SNAPSHOT_BYTES_MAX as u64,
        });
    }
    let mut data = Vec::with_capacity(json.len() + crate::frame::FRAME_HEADER_BYTES);
    encode_frame(&json, &mut data);
    Ok(data)
}

/// Decodes snapshot data received from the leader, checking its frame and the map's invariants.
fn decode_map(data: &[u8], source: &Path) -> Result<ClusterMap, MetaError> {
    let corrupt = |reason: String| MetaError::Corrupt {
        path: source.to_path_buf(),
        offset: 0,
        reason,
    };
    let json = match decode_frame(data) {
        Decoded::Frame {
            payload,
            frame_bytes,
        } if frame_bytes == data.len() => payload,
        Decoded::Frame { .. } => return Err(corrupt("trailing bytes after the snapshot".into())),
        Decoded::Incomplete => return Err(corrupt("snapshot data is incomplete".into())),
        Decoded::Invalid(reason) => return Err(corrupt(format!("snapshot data: {reason}"))),
    };
    let map: ClusterMap = serde_json::from_slice(json).map_err(|e| {
        corrupt(format!(
            "snapshot checksum matches but it does not decode: {e}"
        ))
    })?;
    map.check()
        .map_err(|e| corrupt(format!("snapshot breaks an invariant: {e}")))?;
    Ok(map)
}

impl StateMachineStore {
    /// Opens the state machine in `dir`, creating it if needed, and loads the latest snapshot.
    pub fn open(dir: &Path) -> Result<StateMachineStore, MetaError> {
        let lock = prepare_dir(dir)?;
        let path = dir.join(SNAPSHOT_FILE_NAME);
        let (applied, current) = match read_atomic(dir, SNAPSHOT_FILE_NAME, SNAPSHOT_BYTES_MAX)? {
            None => (Applied::default(), None),
            Some(bytes) => {
                let file: SnapshotFile =
                    serde_json::from_slice(&bytes).map_err(|e| MetaError::Corrupt {
                        path: path.clone(),
                        offset: 0,
                        reason: format!("checksum matches but the snapshot does not decode: {e}"),
                    })?;
                file.map.check().map_err(|e| MetaError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: format!("snapshot breaks an invariant: {e}"),
                })?;
                let current = CurrentSnapshot {
                    data: encode_map(&file.map)?,
                    meta: file.meta.clone(),
                };
                let applied = Applied {
                    last_applied: file.meta.last_log_id,
                    last_membership: file.meta.last_membership,
                    map: file.map,
                };
                (applied, Some(current))
            }
        };
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                applied: Mutex::new(applied),
                current: Mutex::new(current),
                persist: Mutex::new(()),
                builds: AtomicU64::new(0),
                _lock: lock,
            }),
        })
    }

    /// A copy of the cluster map as of the last applied entry.
    pub fn cluster_map(&self) -> Result<ClusterMap, MetaError> {
        Ok(lock(&self.shared.applied, "state machine")?.map.clone())
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Result<Option<MetaLogId>, MetaError> {
        Ok(lock(&self.shared.applied, "state machine")?.last_applied)
    }

    /// Writes a snapshot file and makes it current, on the blocking pool. With `only_if_newer`,
    /// a snapshot not newer than the current one is left unwritten.
    async fn persist(
        &self,
        meta: MetaSnapshotMeta,
        map: ClusterMap,
        data: Vec<u8>,
        only_if_newer: bool,
    ) -> Result<(), MetaError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let _serial = lock(&shared.persist, "snapshot writer")?;
            if only_if_newer {
                let current = lock(&shared.current, "current snapshot")?;
                if current
                    .as_ref()
                    .is_some_and(|c| c.meta.last_log_id >= meta.last_log_id)
                {
                    return Ok(());
                }
            }
            let file = SnapshotFile { meta, map };
            let bytes = serde_json::to_vec(&file).map_err(|source| MetaError::Encode {
                what: "snapshot file",
                source,
            })?;
            write_atomic(&shared.dir, SNAPSHOT_FILE_NAME, &bytes, SNAPSHOT_BYTES_MAX)?;
            *lock(&shared.current, "current snapshot")? = Some(CurrentSnapshot {
                meta: file.meta,
                data,
            });
            Ok(())
        })
        .await
        .map_err(task_failed)?
    }

    async fn build(&self) -> Result<Snapshot<TypeConfig>, MetaError> {
        let (last_applied, last_membership, map) = {
            let applied = lock(&self.shared.applied, "state machine")?;
            (
                applied.last_applied,
                applied.last_membership.clone(),
                applied.map.clone(),
            )
        };
        let build = self.shared.builds.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(id) => format!(
                "{}-{}-{}-{build}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => format!("none-{build}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let data = encode_map(&map)?;
        self.persist(meta.clone(), map, data.clone(), true).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }

    async fn install(&self, meta: &MetaSnapshotMeta, data: Vec<u8>) -> Result<(), MetaError> {
        let map = decode_map(&data, Path::new("<snapshot received from the leader>"))?;
        self.persist(meta.clone(), map.clone(), data, false).await?;
        let mut applied = lock(&self.shared.applied, "state machine")?;
        *applied = Applied {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            map,
        };
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, MetaStorageError> {
        self.build()
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<MetaLogId>, MetaMembership), MetaStorageError> {
        let applied = lock(&self.shared.applied, "state machine")
            .map_err(|e| e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Read))?;
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResponse>, MetaStorageError>
    where
        I: IntoIterator<Item = MetaEntry> + Send,
        I::IntoIter: Send,
    {
        let mut applied = lock(&self.shared.applied, "state machine")
            .map_err(|e| e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Write))?;
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => MetaResponse::Internal,
                EntryPayload::Normal(command) => MetaResponse::Command(applied.map.apply(&command)),
                EntryPayload::Membership(membership) => {
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    MetaResponse::Internal
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachineStore {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, MetaStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &MetaSnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), MetaStorageError> {
        self.install(meta, snapshot.into_inner())
            .await
            .map_err(|e| {
                e.into_storage(
                    ErrorSubject::Snapshot(Some(meta.signature())),
                    ErrorVerb::Write,
                )
            })
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, MetaStorageError> {
        let current = lock(&self.shared.current, "current snapshot")
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(current.as_ref().map(|c| Snapshot {
            meta: c.meta.clone(),
            snapshot: Box::new(Cursor::new(c.data.clone())),
        }))
    }
}
