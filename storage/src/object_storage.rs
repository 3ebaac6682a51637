//! Object storage: continuous snapshots of each segment's layer files and of the log above
//! them, and rebuilding a segment from them.
//!
//! # Layout (under the configured URL's prefix)
//! ```text
//!   node-<node>/pg-<pg>/manifest                       crc32 (4 bytes, LE) ‖ JSON Manifest
//!   node-<node>/pg-<pg>/layers/<layer file name>       the layer file's exact bytes
//!   node-<node>/pg-<pg>/log/<after>-<through>.redo     records of the PG in (after, through],
//!                                                      concatenated, in the redo record format
//! ```
//! Each segment uploads its own copy under its node (six copies per PG: simple and
//! independent of which segments are alive; uploading from one segment per PG is a later
//! saving). Objects are immutable; only the manifest is replaced.
//!
//! # Invariants
//! - Only durable records are uploaded: layers hold versions at or below the materialized
//!   point, and log objects only records at or below it, which never exceed the segment's VDL
//!   hint, so no truncation can take them back.
//! - Objects are uploaded before the manifest that names them, and deleted only after a
//!   manifest that no longer names them is written, so every manifest names objects that exist.
//! - The manifest lists a contiguous chain of layers, its `durable_lsn` says everything of the
//!   PG at or below it is in those layers plus the log objects, and every object carries its CRC.
//!
//! # Rebuild
//! A segment with no layer files on start (a new or wiped disk) fetches the manifest of its
//! own node, or else of the PG's other nodes, downloads the layers (checking every CRC), and
//! feeds the log objects above them into the segment's hot log through the same checked append
//! gossip uses. Materialization then resumes from the restored layers, and gossip brings the rest
//! of the log from the peers.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sixfold_log_service::limits::BATCH_BYTES_MAX;
use sixfold_log_service::record;
use sixfold_log_service::segment::{Origin, Segment};
use sixfold_log_service::{Lsn, NodeId, PgId};

use crate::config::ObjectStoreConfig;
use crate::error::{StorageError, blocking};
use crate::layer_file::{LayerDesc, LayerFile};
use crate::limits::{
    MANIFEST_BYTES_MAX, OBJECT_STORE_TIMEOUT, UPLOAD_LOG_CHUNK_BYTES_MAX,
    UPLOAD_LOG_CHUNKS_PER_PASS_MAX,
};
use crate::page_store::PageStore;

const MANIFEST_FORMAT: u32 = 1;

/// An object named by a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub name: String,
    pub bytes: u64,
    pub crc32: u32,
}

/// A log object: the PG's records in `(after, through]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogObject {
    pub after: Lsn,
    pub through: Lsn,
    pub object: ObjectEntry,
}

/// What one segment has in object storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub node: NodeId,
    pub pg: PgId,
    /// A contiguous chain of layers, oldest first.
    pub layers: Vec<ObjectEntry>,
    /// Log above the newest layer, oldest first.
    pub log: Vec<LogObject>,
    /// Every record of the PG at or below this is in `layers` plus `log`, and durable.
    pub durable_lsn: Lsn,
}

impl Manifest {
    fn encode(&self) -> Result<Bytes, StorageError> {
        let body = serde_json::to_vec(self).map_err(|e| StorageError::Internal(e.to_string()))?;
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(Bytes::from(out))
    }

    fn decode(bytes: &[u8]) -> Result<Manifest, StorageError> {
        let bad = |m: String| StorageError::ObjectStore(format!("bad manifest: {m}"));
        if bytes.len() < 4 || bytes.len() > MANIFEST_BYTES_MAX {
            return Err(bad(format!("{} bytes", bytes.len())));
        }
        let (crc, body) = bytes.split_at(4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if stored != crc32fast::hash(body) {
            return Err(bad("checksum mismatch".into()));
        }
        let m: Manifest = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        if m.format != MANIFEST_FORMAT {
            return Err(bad(format!("format {}", m.format)));
        }
        Ok(m)
    }

    /// The newest layer's end: the log objects matter only above it.
    fn layers_end(&self) -> Lsn {
        self.layers
            .iter()
            .filter_map(|e| LayerDesc::parse(&e.name))
            .map(|d| d.end())
            .max()
            .unwrap_or(Lsn::ZERO)
    }
}

fn entry_for(name: String, bytes: &[u8]) -> ObjectEntry {
    ObjectEntry {
        name,
        bytes: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
    }
}

/// A handle on the configured object store.
pub struct ObjectStorage {
    url: String,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectStorage({})", self.url)
    }
}

fn os_err(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::ObjectStore(format!("{what}: {e}"))
}

impl ObjectStorage {
    /// Opens the store `config.url` names (see [`crate::config`] for the schemes).
    pub fn open(config: &ObjectStoreConfig) -> Result<ObjectStorage, StorageError> {
        let bad = |m: String| StorageError::Config(format!("--object-store {}: {m}", config.url));
        let url = url::Url::parse(&config.url).map_err(|e| bad(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|_| bad("not an absolute local path".into()))?;
                std::fs::create_dir_all(&dir)?;
                Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?)
            }
            "memory" => Arc::new(InMemory::new()),
            "s3" | "s3a" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("no bucket".into()))?;
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &config.region {
                    builder = builder.with_region(region);
                } else if let Ok(region) = std::env::var("AWS_REGION") {
                    builder = builder.with_region(region);
                }
                if config.allow_http {
                    builder = builder.with_allow_http(true);
                }
                let s3 = builder.build().map_err(|e| bad(e.to_string()))?;
                let prefix = url.path().trim_matches('/');
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix))
                }
            }
            other => return Err(bad(format!("unsupported scheme {other}"))),
        };
        Ok(ObjectStorage {
            url: config.url.clone(),
            store,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<(), StorageError> {
        let location = ObjectPath::from(path);
        tokio::time::timeout(
            OBJECT_STORE_TIMEOUT,
            self.store.put(&location, PutPayload::from_bytes(bytes)),
        )
        .await
        .map_err(|_| os_err(path, "timed out"))?
        .map_err(|e| os_err(path, e))?;
        Ok(())
    }

    /// The object's bytes, or None if there is no such object.
    pub async fn get(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
        let location = ObjectPath::from(path);
        let fetch = async {
            match self.store.get(&location).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        tokio::time::timeout(OBJECT_STORE_TIMEOUT, fetch)
            .await
            .map_err(|_| os_err(path, "timed out"))?
            .map_err(|e| os_err(path, e))
    }

    pub async fn delete(&self, path: &str) -> Result<(), StorageError> {
        let location = ObjectPath::from(path);
        match tokio::time::timeout(OBJECT_STORE_TIMEOUT, self.store.delete(&location)).await {
            Err(_) => Err(os_err(path, "timed out")),
            Ok(Ok(())) | Ok(Err(object_store::Error::NotFound { .. })) => Ok(()),
            Ok(Err(e)) => Err(os_err(path, e)),
        }
    }

    /// Every object name under `prefix` (for tests and operators).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        use futures::TryStreamExt;
        let location = ObjectPath::from(prefix);
        let metas: Vec<object_store::ObjectMeta> = tokio::time::timeout(
            OBJECT_STORE_TIMEOUT,
            self.store.list(Some(&location)).try_collect(),
        )
        .await
        .map_err(|_| os_err(prefix, "timed out"))?
        .map_err(|e| os_err(prefix, e))?;
        let mut names: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
        names.sort();
        Ok(names)
    }
}

fn segment_prefix(node: NodeId, pg: PgId) -> String {
    format!("node-{}/pg-{}", node.get(), pg.get())
}

fn manifest_path(node: NodeId, pg: PgId) -> String {
    format!("{}/manifest", segment_prefix(node, pg))
}

fn layer_path(node: NodeId, pg: PgId, name: &str) -> String {
    format!("{}/layers/{name}", segment_prefix(node, pg))
}

fn log_path(node: NodeId, pg: PgId, name: &str) -> String {
    format!("{}/log/{name}", segment_prefix(node, pg))
}

/// Reads a segment's manifest, if it has one.
pub async fn read_manifest(
    storage: &ObjectStorage,
    node: NodeId,
    pg: PgId,
) -> Result<Option<Manifest>, StorageError> {
    match storage.get(&manifest_path(node, pg)).await? {
        Some(bytes) => Manifest::decode(&bytes).map(Some),
        None => Ok(None),
    }
}

/// Uploads one segment's layers and log, pass after pass.
pub struct Uploader {
    storage: Arc<ObjectStorage>,
    node: NodeId,
    pg: PgId,
    /// What the last manifest written says (or what was found at start).
    manifest: Manifest,
    /// Log uploaded through here (0: none yet).
    log_through: Lsn,
}

impl Uploader {
    /// Picks up where an earlier run of this node left off, so layers are not uploaded twice.
    pub async fn start(
        storage: Arc<ObjectStorage>,
        node: NodeId,
        pg: PgId,
    ) -> Result<Uploader, StorageError> {
        let manifest = read_manifest(&storage, node, pg)
            .await?
            .unwrap_or_else(|| Manifest {
                format: MANIFEST_FORMAT,
                node,
                pg,
                ..Manifest::default()
            });
        let log_through = manifest.log.last().map_or(Lsn::ZERO, |l| l.through);
        Ok(Uploader {
            storage,
            node,
            pg,
            manifest,
            log_through,
        })
    }

    /// Uploads what is new and returns the manifest's durable LSN.
    pub async fn pass(
        &mut self,
        store: &Arc<PageStore>,
        segment: &Arc<Segment>,
    ) -> Result<Lsn, StorageError> {
        let (node, pg) = (self.node, self.pg);
        let mut files = store.file_layers();
        files.reverse(); // oldest first
        let layers_end = files.last().map_or(Lsn::ZERO, |f| f.desc().end());
        let mut layers = Vec::with_capacity(files.len());
        for f in &files {
            let known = self
                .manifest
                .layers
                .iter()
                .find(|e| e.name == f.name() && e.bytes == f.file_bytes());
            if let Some(entry) = known {
                layers.push(entry.clone());
                continue;
            }
            // Check the file before it becomes the copy a rebuild trusts.
            let file = f.clone();
            let bytes = blocking(move || {
                file.verify_entries()?;
                Ok(file.to_bytes())
            })
            .await?;
            let entry = entry_for(f.name().to_string(), &bytes);
            self.storage
                .put(&layer_path(node, pg, f.name()), bytes)
                .await?;
            layers.push(entry);
        }
        // The log above the layers, up to the materialized point (durable and complete).
        let m = store.materialized();
        let mut log: Vec<LogObject> = self
            .manifest
            .log
            .iter()
            .filter(|l| l.through > layers_end)
            .cloned()
            .collect();
        let mut from = self.log_through.max(layers_end);
        for _ in 0..UPLOAD_LOG_CHUNKS_PER_PASS_MAX {
            if from >= m {
                break;
            }
            let seg = segment.clone();
            let got = blocking(move || Ok(seg.read(from, m, UPLOAD_LOG_CHUNK_BYTES_MAX)?)).await?;
            let records = record::decode_all(&got.records)
                .map_err(|e| StorageError::Internal(format!("segment served a bad record: {e}")))?;
            let through = match (got.more, records.last()) {
                (true, Some(last)) => last.header.lsn,
                _ => m,
            };
            if !records.is_empty() {
                let name = format!("{:016x}-{:016x}.redo", from.get(), through.get());
                let bytes = Bytes::from(got.records);
                let object = entry_for(name.clone(), &bytes);
                self.storage.put(&log_path(node, pg, &name), bytes).await?;
                log.push(LogObject {
                    after: from,
                    through,
                    object,
                });
            }
            from = through;
        }
        self.log_through = from;
        let next = Manifest {
            format: MANIFEST_FORMAT,
            node,
            pg,
            layers,
            log,
            durable_lsn: from.max(layers_end),
        };
        // Never replace a snapshot with one that covers less (a segment that is materializing
        // from scratch after a failed rebuild): the old one stays until the new one passes it.
        if next.durable_lsn < self.manifest.durable_lsn {
            return Ok(self.manifest.durable_lsn);
        }
        if next != self.manifest {
            self.storage
                .put(&manifest_path(node, pg), next.encode()?)
                .await?;
            // Only now that no manifest names them may old objects go.
            let old = std::mem::replace(&mut self.manifest, next);
            for e in old.layers {
                if !self.manifest.layers.iter().any(|n| n.name == e.name) {
                    self.storage.delete(&layer_path(node, pg, &e.name)).await?;
                }
            }
            for l in old.log {
                if !self
                    .manifest
                    .log
                    .iter()
                    .any(|n| n.object.name == l.object.name)
                {
                    self.storage
                        .delete(&log_path(node, pg, &l.object.name))
                        .await?;
                }
            }
        }
        Ok(self.manifest.durable_lsn)
    }
}

/// What a rebuild from object storage restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub source: NodeId,
    pub layers: usize,
    pub log_records: usize,
    pub durable_lsn: Lsn,
}

/// Downloads one layer into `dir`, checking its bytes against `entry` (if known) and its own
/// CRCs. Returns false if the object does not exist.
pub async fn fetch_layer(
    storage: &ObjectStorage,
    node: NodeId,
    pg: PgId,
    name: &str,
    expected: Option<&ObjectEntry>,
    dir: &Path,
) -> Result<bool, StorageError> {
    let Some(bytes) = storage.get(&layer_path(node, pg, name)).await? else {
        return Ok(false);
    };
    if let Some(e) = expected
        && (bytes.len() as u64 != e.bytes || crc32fast::hash(&bytes) != e.crc32)
    {
        return Err(StorageError::ObjectStore(format!(
            "layer {name} does not match its manifest entry"
        )));
    }
    let (dir, name) = (dir.to_path_buf(), name.to_string());
    blocking(move || {
        use std::io::Write;
        let tmp = dir.join(format!("{name}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        let check = LayerFile::open_named(&tmp, name.clone()).and_then(|f| f.verify_entries());
        // Checked under the temporary name: a bad download never appears as a layer file.
        if let Err(e) = check {
            std::fs::remove_file(&tmp)?;
            return Err(StorageError::ObjectStore(format!(
                "downloaded layer {name} is corrupt: {e}"
            )));
        }
        std::fs::rename(&tmp, dir.join(&name))?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(true)
    })
    .await
}

/// Rebuilds a segment's layers (into `dir`) and hot log from the object-storage copy of `node`
/// or else of the best of `peers`. Returns None when no copy exists.
pub async fn restore(
    storage: &ObjectStorage,
    node: NodeId,
    peers: &[NodeId],
    pg: PgId,
    dir: &Path,
    segment: &Arc<Segment>,
) -> Result<Option<RestoreReport>, StorageError> {
    let mut chosen = read_manifest(storage, node, pg).await?;
    if chosen.is_none() {
        for peer in peers {
            match read_manifest(storage, *peer, pg).await {
                Ok(Some(m))
                    if chosen
                        .as_ref()
                        .is_none_or(|c| m.durable_lsn > c.durable_lsn) =>
                {
                    chosen = Some(m)
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(pg = pg.get(), peer = peer.get(), error = %e, "skipping a peer's snapshot")
                }
            }
        }
    }
    let Some(manifest) = chosen else {
        return Ok(None);
    };
    if manifest.pg != pg {
        return Err(StorageError::ObjectStore(format!(
            "manifest of {:?} found for {pg:?}",
            manifest.pg
        )));
    }
    let source = manifest.node;
    std::fs::create_dir_all(dir)?;
    for e in &manifest.layers {
        let fetched = fetch_layer(storage, source, pg, &e.name, Some(e), dir).await;
        if !matches!(fetched, Ok(true)) {
            // Leave no partial chain behind: the next attempt (or the log) starts clean.
            for e in &manifest.layers {
                let _ = std::fs::remove_file(dir.join(&e.name));
            }
            return Err(fetched.err().unwrap_or_else(|| {
                StorageError::ObjectStore(format!(
                    "layer {} named by the manifest is missing",
                    e.name
                ))
            }));
        }
    }
    let layers_end = manifest.layers_end();
    let mut log_records = 0;
    for l in manifest.log.iter().filter(|l| l.through > layers_end) {
        let path = log_path(source, pg, &l.object.name);
        let Some(bytes) = storage.get(&path).await? else {
            return Err(StorageError::ObjectStore(format!("{path} is missing")));
        };
        if bytes.len() as u64 != l.object.bytes || crc32fast::hash(&bytes) != l.object.crc32 {
            return Err(StorageError::ObjectStore(format!(
                "{path} fails its checksum"
            )));
        }
        let records = record::decode_all(&bytes)
            .map_err(|e| StorageError::ObjectStore(format!("{path}: {e}")))?;
        let mut batch = Vec::new();
        for r in records.iter().filter(|r| r.header.lsn > layers_end) {
            if batch.len() + r.bytes.len() > BATCH_BYTES_MAX {
                segment.append(&batch, Origin::Gossip).await?;
                batch.clear();
            }
            batch.extend_from_slice(r.bytes);
            log_records += 1;
        }
        if !batch.is_empty() {
            segment.append(&batch, Origin::Gossip).await?;
        }
    }
    Ok(Some(RestoreReport {
        source,
        layers: manifest.layers.len(),
        log_records,
        durable_lsn: manifest.durable_lsn,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a manifest round-trips and a flipped byte is refused.
    #[test]
    fn manifest_round_trips_and_detects_damage() {
        let m = Manifest {
            format: MANIFEST_FORMAT,
            node: NodeId(3),
            pg: PgId(1),
            layers: vec![entry_for(LayerDesc::Image { at: Lsn(9) }.name(), b"abc")],
            log: vec![],
            durable_lsn: Lsn(12),
        };
        let bytes = m.encode().unwrap();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        assert_eq!(m.layers_end(), Lsn(9));
        let mut bad = bytes.to_vec();
        bad[10] ^= 1;
        assert!(Manifest::decode(&bad).is_err());
    }

    // Proves put/get/list/delete work on the local-directory store, and a missing object is None.
    #[tokio::test]
    async fn local_directory_store_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ObjectStoreConfig {
            url: format!("file://{}", dir.path().join("os").display()),
            endpoint: None,
            region: None,
            allow_http: false,
        };
        let s = ObjectStorage::open(&cfg).unwrap();
        s.put("node-1/pg-0/manifest", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(
            s.get("node-1/pg-0/manifest").await.unwrap().as_deref(),
            Some(&b"x"[..])
        );
        assert_eq!(s.get("nope").await.unwrap(), None);
        assert_eq!(
            s.list("node-1").await.unwrap(),
            vec!["node-1/pg-0/manifest"]
        );
        s.delete("node-1/pg-0/manifest").await.unwrap();
        s.delete("node-1/pg-0/manifest").await.unwrap();
        assert!(s.list("node-1").await.unwrap().is_empty());
    }
}
