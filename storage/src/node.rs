//! The page side of a storage node: one [`SegmentPages`] per segment the node hosts, each with
//! its page store and background tasks, and the node-wide read points. `sixfold storage`
//! starts it with [`PageNode::start`] and serves [`PageNode::service`] next to the LogService.
//!
//! Start-up of a segment runs in the background, so the LogService serves at once: if the
//! segment has no layer files (a new or wiped disk) it is first rebuilt from object storage
//! (GetPage answers UNAVAILABLE meanwhile), then the materializer, the maintenance loop and the
//! uploader start.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sixfold_log_service::placement::Placement;
use sixfold_log_service::segment::Segment;
use sixfold_log_service::server::StorageNode;
use sixfold_log_service::{Lsn, NodeId, PageId, PgId};
use sixfold_proto::page as pb;
use tokio::task::JoinHandle;

use crate::config::{PageArgs, PageConfig};
use crate::error::StorageError;
use crate::layer_file::LAYER_SUFFIX;
use crate::limits::{GETPAGE_CATCH_UP_WAIT, RESTORE_ATTEMPTS_MAX, UPLOADER_VIEW_STALE};
use crate::materializer;
use crate::object_storage::{self, ObjectStorage, RestoreReport, Uploader};
use crate::page::Page;
use crate::page_service::PageServer;
use crate::page_store::{PageStore, PageStoreConfig};
use crate::read_points::ReadPoints;

/// One segment's pages.
pub struct SegmentPages {
    pub pg: PgId,
    pub node: NodeId,
    pub pages: Range<u64>,
    pub segment: Arc<Segment>,
    pub object_storage: Option<Arc<ObjectStorage>>,
    store: OnceLock<Arc<PageStore>>,
    /// Everything at or below this is durable: learned from object storage on a rebuild.
    pub known_durable: AtomicU64,
    pub pgmrpl: AtomicU64,
    uploaded: AtomicU64,
    restored: Mutex<Option<RestoreReport>>,
    last_upload_error: Mutex<String>,
}

impl SegmentPages {
    pub fn store(&self) -> Option<&Arc<PageStore>> {
        self.store.get()
    }

    /// GetPage on this segment: waits (bounded) until the segment can serve `lsn`, then reads.
    pub async fn get_page(&self, page: PageId, lsn: Lsn) -> Result<Arc<Page>, StorageError> {
        let store = self
            .store
            .get()
            .ok_or(StorageError::Rebuilding(self.pg))?
            .clone();
        let deadline = tokio::time::Instant::now() + GETPAGE_CATCH_UP_WAIT;
        let mut scl = self.segment.subscribe_scl();
        loop {
            let m = store.materialized();
            let complete = self.segment.state().complete_lsn;
            let mut last_error = None;
            if lsn <= m || lsn <= complete {
                let (s, seg) = (store.clone(), self.segment.clone());
                let result = tokio::task::spawn_blocking(move || s.get_page(&seg, page, lsn))
                    .await
                    .map_err(|e| StorageError::Internal(format!("GetPage task failed: {e}")))?;
                match result {
                    Err(e @ (StorageError::Behind(_) | StorageError::NotComplete { .. })) => {
                        last_error = Some(e)
                    }
                    other => return other,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(last_error.unwrap_or(StorageError::NotComplete {
                    lsn,
                    complete: complete.max(m),
                }));
            }
            tokio::select! {
                r = scl.changed() => {
                    if r.is_err() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    }

    pub fn status(&self) -> pb::PgPageStatus {
        let mut out = pb::PgPageStatus {
            pg: self.pg.get(),
            uploaded_lsn: self.uploaded.load(Ordering::Relaxed),
            pgmrpl: self.pgmrpl.load(Ordering::Relaxed),
            last_upload_error: self
                .last_upload_error
                .lock()
                .expect("status lock poisoned")
                .clone(),
            ..Default::default()
        };
        if let Some(r) = &*self.restored.lock().expect("status lock poisoned") {
            out.restored_from = format!("node-{}", r.source.get());
            out.restored_layers = r.layers as u64;
        }
        if let Some(store) = self.store.get() {
            let s = store.status();
            out.ready = true;
            out.materialized_lsn = s.materialized.get();
            out.retained_from_lsn = s.retained_from.get();
            out.delta_layers = s.delta_layers;
            out.image_layers = s.image_layers;
            out.open_layer_bytes = s.open_layer_bytes;
            out.cache_pages = s.cache_pages;
            out.cache_hits = s.cache_hits;
            out.cache_misses = s.cache_misses;
            out.images_coalesced = s.images_coalesced;
            out.redo_skipped = s.redo_skipped;
            out.layers_repaired = s.layers_repaired;
        }
        out
    }
}

/// The page side of one storage node.
pub struct NodePages {
    pub node: NodeId,
    placement: Placement,
    segments: BTreeMap<PgId, Arc<SegmentPages>>,
    pub read_points: Arc<ReadPoints>,
}

impl NodePages {
    /// The segment holding `page`.
    pub fn segment_of(&self, page: PageId) -> Result<&Arc<SegmentPages>, StorageError> {
        self.placement
            .pg_of(page)
            .and_then(|pg| self.segments.get(&pg))
            .ok_or(StorageError::NotHosted(page))
    }

    pub fn status(&self) -> Vec<pb::PgPageStatus> {
        self.segments.values().map(|s| s.status()).collect()
    }
}

/// Handle on the running page side; dropping it stops the background tasks.
pub struct PageNode {
    inner: Arc<NodePages>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Runs the background work; Some until dropped.
    background: Option<tokio::runtime::Runtime>,
}

impl Drop for PageNode {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("tasks lock poisoned").drain(..) {
            t.abort();
        }
        if let Some(rt) = self.background.take() {
            // Dropping a runtime waits for its blocking threads, which an async caller must
            // not do; they finish their current step on their own.
            rt.shutdown_background();
        }
    }
}

/// Nice value of the background threads: under CFS a nice-10 thread gets about a tenth of the
/// CPU a normal one does when both want it, and all of it when the log path is idle.
const BACKGROUND_NICE: libc::c_int = 10;

/// The runtime that materializes, compacts, scrubs and uploads, apart from the one that serves
/// the log: its threads (workers and blocking pool alike) run at a lower priority, so on a busy
/// machine appends and GetPage are served first and background work fills the idle time.
/// Materialization still cannot fall behind without bound: the segment's back-pressure
/// (`note_materialized`) slows the writer when it does.
fn background_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sixfold-background")
        .on_thread_start(|| {
            // SAFETY: plain syscalls on the calling thread; no memory is shared with them.
            let rc = unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, BACKGROUND_NICE)
            };
            if rc != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a background thread's priority");
            }
        })
        .enable_all()
        .build()
}

fn has_layer_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(LAYER_SUFFIX))
    })
}

impl PageNode {
    /// Starts the page side for every segment of `storage` (placed by `placement` on `node`),
    /// keeping layer files under `<data_dir>/pages/`.
    pub async fn start(
        storage: &Arc<StorageNode>,
        placement: &Placement,
        node: NodeId,
        data_dir: &Path,
        args: &PageArgs,
    ) -> Result<PageNode, StorageError> {
        let config = args.resolve(data_dir)?;
        let object_storage = Arc::new(ObjectStorage::open(&config.object_store)?);
        let pgs: Vec<_> = placement.pgs_on(node).collect();
        let store_config = config.store_config(pgs.len());
        let read_points = Arc::new(ReadPoints::new(config.read_point_ttl));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let background = background_runtime()?;
        let mut segments = BTreeMap::new();
        for pg in pgs {
            let segment = storage.segment(pg.id)?.clone();
            let peers: Vec<NodeId> = pg.segments.iter().copied().filter(|n| *n != node).collect();
            let ctx = Arc::new(SegmentPages {
                pg: pg.id,
                node,
                pages: placement.pages_of(pg.id),
                segment,
                object_storage: Some(object_storage.clone()),
                store: OnceLock::new(),
                known_durable: AtomicU64::new(0),
                pgmrpl: AtomicU64::new(0),
                uploaded: AtomicU64::new(0),
                restored: Mutex::new(None),
                last_upload_error: Mutex::new(String::new()),
            });
            let dir = data_dir.join("pages").join(format!("pg-{}", pg.id.get()));
            let handle = background.spawn(bring_up(
                ctx.clone(),
                dir,
                peers,
                store_config.clone(),
                config.clone(),
                read_points.clone(),
                tasks.clone(),
            ));
            tasks.lock().expect("tasks lock poisoned").push(handle);
            segments.insert(pg.id, ctx);
        }
        tracing::info!(node = node.get(), object_store = %object_storage.url(), segments = segments.len(), "page service starting");
        Ok(PageNode {
            inner: Arc::new(NodePages {
                node,
                placement: placement.clone(),
                segments,
                read_points,
            }),
            tasks,
            background: Some(background),
        })
    }

    pub fn pages(&self) -> &Arc<NodePages> {
        &self.inner
    }

    pub fn service(&self) -> pb::page_service_server::PageServiceServer<PageServer> {
        PageServer::new(self.inner.clone()).into_service()
    }
}

async fn bring_up(
    ctx: Arc<SegmentPages>,
    dir: PathBuf,
    peers: Vec<NodeId>,
    store_config: PageStoreConfig,
    config: PageConfig,
    read_points: Arc<ReadPoints>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let pg = ctx.pg.get();
    if let Some(storage) = &ctx.object_storage
        && !has_layer_files(&dir)
    {
        for attempt in 1..=RESTORE_ATTEMPTS_MAX {
            match object_storage::restore(storage, ctx.node, &peers, ctx.pg, &dir, &ctx.segment)
                .await
            {
                Ok(Some(report)) => {
                    tracing::info!(pg, ?report, "segment pages rebuilt from object storage");
                    ctx.known_durable
                        .store(report.durable_lsn.get(), Ordering::Relaxed);
                    *ctx.restored.lock().expect("status lock poisoned") = Some(report);
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(pg, attempt, error = %e, "rebuild from object storage failed");
                    if attempt == RESTORE_ATTEMPTS_MAX {
                        tracing::warn!(pg, "materializing from the log alone");
                    } else {
                        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                    }
                }
            }
        }
    }
    let store = loop {
        let (d, c, range) = (dir.clone(), store_config.clone(), ctx.pages.clone());
        let id = ctx.pg;
        match tokio::task::spawn_blocking(move || PageStore::open(&d, id, range, c)).await {
            Ok(Ok((store, report))) => {
                if !report.corrupt_deleted.is_empty() {
                    tracing::error!(pg, ?report, "page store opened with corrupt layers deleted");
                } else {
                    tracing::info!(pg, ?report, "page store opened");
                }
                break Arc::new(store);
            }
            Ok(Err(e)) => {
                tracing::error!(pg, error = %e, "could not open the page store; retrying")
            }
            Err(e) => tracing::error!(pg, error = %e, "page store open task failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if ctx.store.set(store.clone()).is_err() {
        return;
    }
    let mut handles = vec![
        tokio::spawn(materializer::run(ctx.clone(), store.clone())),
        tokio::spawn(materializer::maintain(
            ctx.clone(),
            store.clone(),
            read_points,
        )),
    ];
    if let Some(storage) = ctx.object_storage.clone() {
        handles.push(tokio::spawn(upload_loop(
            ctx.clone(),
            store,
            storage,
            config.upload_interval,
        )));
    }
    tasks.lock().expect("tasks lock poisoned").extend(handles);
}

async fn upload_loop(
    ctx: Arc<SegmentPages>,
    store: Arc<PageStore>,
    storage: Arc<ObjectStorage>,
    interval: Duration,
) {
    let pg = ctx.pg.get();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut uploader = None;
    let mut failures = 0u32;
    let started = tokio::time::Instant::now();
    let mut uploading = false;
    loop {
        ticker.tick().await;
        let elected = is_uploader(&ctx, started.elapsed());
        if elected != uploading {
            uploading = elected;
            tracing::info!(pg, uploading, "object-storage uploader role changed");
        }
        if !uploading {
            continue;
        }
        let up = match &mut uploader {
            Some(u) => u,
            None => match Uploader::start(storage.clone(), ctx.node, ctx.pg).await {
                Ok(u) => uploader.insert(u),
                Err(e) => {
                    note_upload_error(&ctx, &e, &mut failures);
                    continue;
                }
            },
        };
        match up.pass(&store, &ctx.segment).await {
            Ok(durable) => {
                ctx.uploaded.store(durable.get(), Ordering::Relaxed);
                ctx.last_upload_error
                    .lock()
                    .expect("status lock poisoned")
                    .clear();
                failures = 0;
            }
            Err(e) => {
                note_upload_error(&ctx, &e, &mut failures);
                // Start over from the manifest: it is the truth about what is uploaded.
                uploader = None;
                tracing::debug!(pg, "uploader restarts from its manifest");
            }
        }
    }
}

/// Whether this node uploads its copy of the PG. One copy of each PG is enough in object
/// storage, so of the segments that reach each other only the lowest-numbered node uploads; the
/// others stand by and take over when gossip stops hearing from every lower one. When views
/// disagree (a partition) two copies are uploaded, each under its own node's prefix: a waste,
/// never a loss. With no view at all (gossip not answering for a while) the node uploads.
fn is_uploader(ctx: &SegmentPages, running_for: Duration) -> bool {
    match ctx.segment.peers_answering() {
        Some((age, peers)) if age < UPLOADER_VIEW_STALE => peers.iter().all(|p| *p > ctx.node),
        Some(_) => true,
        None => running_for >= UPLOADER_VIEW_STALE,
    }
}

fn note_upload_error(ctx: &SegmentPages, e: &StorageError, failures: &mut u32) {
    *failures += 1;
    if failures.is_power_of_two() {
        tracing::warn!(pg = ctx.pg.get(), error = %e, failures = *failures, "upload to object storage failed; retrying");
    }
    *ctx.last_upload_error.lock().expect("status lock poisoned") = e.to_string();
}
