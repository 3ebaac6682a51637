//! One segment's page store: the stack of layers that answers GetPage@LSN.
//!
//! ```text
//!   newest ┌─────────────────────────────┐
//!          │ hot log above M              │  the segment's records, applied on the fly by
//!          │ (owned by log-service)       │  GetPage, never stored (they may be truncated)
//!   M ─────├─────────────────────────────┤
//!          │ open layer (memory)          │  versions the materializer appended, (E', M]
//!          ├─────────────────────────────┤
//!          │ frozen layers (memory)       │  being written as delta layer files
//!          ├─────────────────────────────┤
//!          │ delta layer files            │  contiguous LSN ranges down to the base
//!          │   with image layers at some  │
//!          │   of their boundaries        │
//!   base ──├─────────────────────────────┤
//!   oldest │ image layer at base (or 0)   │  reads below the base are refused (dropped)
//!          └─────────────────────────────┘
//! ```
//!
//! `M`, the *materialized point*, only covers records that are durable for sure (see
//! [`crate::materializer`]). Reading page `p` at LSN `t <= M` walks the stack from the top,
//! collecting `p`'s versions at or below `t` until one ends the chain (an image, an `InitPage`,
//! or an image layer), then replays them ([`crate::versions::Chain::replay`]). The page cache
//! short-cuts the walk for the newest version of a page.
//!
//! # Concurrency
//! One `RwLock` guards the stack and `M`. GetPage takes it for reading while it collects a
//! chain and replays outside it. The materializer is the only task that moves `M`; it applies a
//! batch outside the lock and installs the batch, the new `M` and the new cache entries in one
//! write-lock hold (lock order: state, then cache), so a reader sees either all of a batch or
//! none. Image layers and garbage collection run beside it under `maintenance`.
//!
//! # Redo that does not apply
//! A record whose payload does not decode or whose redo does not apply to the page is skipped
//! (the page stays as it was), counted and logged. Only a buggy writer can produce one (compute
//! applies every record to its own copy before logging it), and skipping is deterministic, so
//! every segment still serves the same bytes. GetPage's on-the-fly replay follows the same rule.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use sixfold_log_service::record::{self, RecordView};
use sixfold_log_service::segment::Segment;
use sixfold_log_service::{Lsn, PageId, PgId};
use tokio::sync::watch;

use crate::apply::apply;
use crate::error::{PageError, StorageError};
use crate::layer_file::{LAYER_SUFFIX, LayerDesc, LayerFile, LayerWriter, write_delta};
use crate::limits::{COALESCE_PAGES_TRACKED_MAX, HOT_SCAN_BYTES_MAX, MATERIALIZE_BATCH_BYTES};
use crate::page::Page;
use crate::page_cache::PageCache;
use crate::redo::PageRedo;
use crate::versions::{Chain, Version, VersionChains, Walk};

/// Tuning of one segment's page store; see [`crate::config`] for where the numbers come from.
#[derive(Debug, Clone)]
pub struct PageStoreConfig {
    /// Freeze the open layer at this many charged bytes.
    pub layer_bytes: usize,
    /// Pages the cache holds.
    pub cache_pages: usize,
    /// Delta bytes above the newest image layer that call for a new one.
    pub image_layer_delta_bytes: u64,
    /// Freeze a non-empty open layer after this long even if small.
    pub freeze_interval: Duration,
    /// Redo records per page between stored images.
    pub coalesce_redo_max: u32,
}

/// A layer of the stack.
#[derive(Clone, Debug)]
pub enum Layer {
    /// Frozen versions waiting to be written as a delta layer file.
    Memory(Arc<VersionChains>),
    File(Arc<LayerFile>),
}

impl Layer {
    pub fn desc(&self) -> LayerDesc {
        match self {
            Layer::Memory(v) => LayerDesc::Delta {
                start: v.start(),
                end: v.end(),
            },
            Layer::File(f) => f.desc(),
        }
    }

    fn walk(&self, page: PageId, through: Lsn, chain: &mut Chain) -> Result<Walk, StorageError> {
        match self {
            Layer::Memory(v) => Ok(v.walk(page, through, chain)),
            Layer::File(f) => f.walk(page, through, chain),
        }
    }

    fn changed_after(&self, page: PageId, after: Lsn) -> bool {
        match self {
            Layer::Memory(v) => v.changed_after(page, after),
            Layer::File(f) => f.changed_after(page, after),
        }
    }
}

/// Collects `page`'s chain at `t` from an open layer and a stack (newest first).
fn walk_stack(
    open: Option<&VersionChains>,
    layers: &[Layer],
    page: PageId,
    t: Lsn,
    chain: &mut Chain,
) -> Result<(), StorageError> {
    if let Some(open) = open
        && open.walk(page, t, chain) == Walk::Done
    {
        return Ok(());
    }
    for layer in layers {
        match layer.desc() {
            LayerDesc::Delta { start, .. } if start >= t => continue,
            LayerDesc::Image { at } if at > t => continue,
            _ => {}
        }
        if layer.walk(page, t, chain)? == Walk::Done {
            return Ok(());
        }
    }
    Ok(())
}

fn sort_stack(layers: &mut [Layer]) {
    layers.sort_by_key(|l| std::cmp::Reverse(l.desc().stack_key()));
}

struct State {
    /// M: every durable record of the PG at or below it is in the stack.
    materialized: Lsn,
    /// The PG's last record at or below M: the backlink of the next one.
    pg_tail: Lsn,
    open: VersionChains,
    /// Newest first (see [`LayerDesc::stack_key`]).
    layers: Vec<Layer>,
    /// Reads below this were dropped by garbage collection.
    retained_from: Lsn,
    /// Bumped when the stack is rebuilt after corruption, so work started on the old stack is
    /// not installed into the new one.
    generation: u64,
}

/// What opening a page store found on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub layers: usize,
    /// Files that failed their checks and were deleted (the log rebuilds what they held).
    pub corrupt_deleted: Vec<String>,
    /// Files not on the chosen chain (left over from garbage collection or a rebuild).
    pub stale_deleted: usize,
    pub materialized: Lsn,
    pub retained_from: Lsn,
}

/// Counters for status and benchmarks.
#[derive(Debug, Default)]
struct Stats {
    images_coalesced: AtomicU64,
    redo_skipped: AtomicU64,
    layers_repaired: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    records_materialized: AtomicU64,
}

/// A snapshot of a page store for status reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageStoreStatus {
    pub materialized: Lsn,
    pub retained_from: Lsn,
    pub delta_layers: u32,
    pub image_layers: u32,
    pub memory_layers: u32,
    pub open_layer_bytes: u64,
    pub cache_pages: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub images_coalesced: u64,
    pub redo_skipped: u64,
    pub layers_repaired: u64,
    pub records_materialized: u64,
}

pub struct PageStore {
    pg: PgId,
    pages: Range<u64>,
    dir: PathBuf,
    config: PageStoreConfig,
    state: RwLock<State>,
    cache: Mutex<PageCache>,
    /// Per page: redo records stored since its last image (the materializer's).
    coalesce: Mutex<HashMap<PageId, u32>>,
    /// Layers a reader or the scrub found corrupt, for the materializer to repair.
    corrupt: Mutex<BTreeSet<String>>,
    /// Held by image-layer writing, garbage collection and repair.
    maintenance: Mutex<()>,
    materialized_tx: watch::Sender<Lsn>,
    stats: Stats,
}

/// The chain of layer files chosen on open.
struct Loaded {
    layers: Vec<Layer>,
    base: Lsn,
    end: Lsn,
    tail: Lsn,
    report: OpenReport,
}

/// Opens the layer files in `dir` and picks the longest contiguous chain (ties: the one that
/// keeps the most history). Deletes temporary files, corrupt files and files off the chain.
fn load_chain(dir: &Path, pg: PgId) -> Result<Loaded, StorageError> {
    let mut report = OpenReport::default();
    let mut files: Vec<Arc<LayerFile>> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if name.ends_with(".tmp") {
            std::fs::remove_file(&path)?;
            continue;
        }
        if !name.ends_with(LAYER_SUFFIX) {
            continue;
        }
        match LayerFile::open(&path) {
            Ok(f) if f.pg() == pg => files.push(Arc::new(f)),
            Ok(_) | Err(StorageError::CorruptLayer { .. }) => {
                tracing::error!(pg = pg.get(), file = %path.display(), "layer file failed its checks; deleted, the log rebuilds it");
                std::fs::remove_file(&path)?;
                report.corrupt_deleted.push(name);
            }
            Err(e) => return Err(e),
        }
    }
    let mut deltas: BTreeMap<Lsn, Vec<&Arc<LayerFile>>> = BTreeMap::new();
    let mut images: BTreeMap<Lsn, &Arc<LayerFile>> = BTreeMap::new();
    for f in &files {
        match f.desc() {
            LayerDesc::Delta { start, .. } => deltas.entry(start).or_default().push(f),
            LayerDesc::Image { at } => {
                images.insert(at, f);
            }
        }
    }
    // From a base, follow the delta with the furthest end at each step.
    let follow = |base: Lsn| {
        let mut path: Vec<&Arc<LayerFile>> = Vec::new();
        let mut at = base;
        while let Some(next) = deltas
            .get(&at)
            .and_then(|v| v.iter().max_by_key(|f| f.desc().end()))
        {
            path.push(next);
            at = next.desc().end();
        }
        (at, path)
    };
    let mut best = (Lsn::ZERO, follow(Lsn::ZERO));
    for at in images.keys() {
        let candidate = follow(*at);
        if candidate.0 > best.1.0 {
            best = (*at, candidate);
        }
    }
    let (base, (end, path)) = best;
    let mut keep: Vec<Arc<LayerFile>> = path.into_iter().cloned().collect();
    let boundaries: BTreeSet<Lsn> = keep.iter().map(|f| f.desc().end()).collect();
    for (at, f) in &images {
        if *at == base || boundaries.contains(at) {
            keep.push((*f).clone());
        }
    }
    let kept: BTreeSet<&str> = keep.iter().map(|f| f.name()).collect();
    for f in &files {
        if !kept.contains(f.name()) {
            std::fs::remove_file(f.path())?;
            report.stale_deleted += 1;
        }
    }
    let mut layers: Vec<Layer> = keep.into_iter().map(Layer::File).collect();
    sort_stack(&mut layers);
    let tail = match layers.first() {
        Some(Layer::File(f)) => f.pg_tail(),
        _ => Lsn::ZERO,
    };
    report.layers = layers.len();
    report.materialized = end;
    report.retained_from = base;
    Ok(Loaded {
        layers,
        base,
        end,
        tail,
        report,
    })
}

/// Applies one log record to `page` by the rules in the module docs.
/// Decodes a record's redo and checks it names its own page. Done before any page image is
/// built, so a record that cannot apply costs no page work.
fn decode_record(rec: &RecordView<'_>) -> Result<PageRedo, PageError> {
    let redo = PageRedo::decode(rec.header.kind, rec.payload)?;
    if let PageRedo::InitPage { page_id, .. } = &redo
        && *page_id != rec.header.page_id
    {
        return Err(PageError::PageIdMismatch {
            page: rec.header.page_id,
            redo: *page_id,
        });
    }
    Ok(redo)
}

fn apply_record(page: &mut Page, rec: &RecordView<'_>) -> Result<(), PageError> {
    apply(page, rec.header.lsn, &decode_record(rec)?)
}

impl PageStore {
    /// Opens the page store of `pg` (owning `pages`) in `dir`, creating it if needed.
    pub fn open(
        dir: &Path,
        pg: PgId,
        pages: Range<u64>,
        config: PageStoreConfig,
    ) -> Result<(PageStore, OpenReport), StorageError> {
        std::fs::create_dir_all(dir)?;
        let loaded = load_chain(dir, pg)?;
        let cache = PageCache::new(config.cache_pages);
        let state = State {
            materialized: loaded.end,
            pg_tail: loaded.tail,
            open: VersionChains::new(loaded.end, loaded.tail),
            layers: loaded.layers,
            retained_from: loaded.base,
            generation: 0,
        };
        let store = PageStore {
            pg,
            pages,
            dir: dir.to_path_buf(),
            config,
            state: RwLock::new(state),
            cache: Mutex::new(cache),
            coalesce: Mutex::new(HashMap::new()),
            corrupt: Mutex::new(BTreeSet::new()),
            maintenance: Mutex::new(()),
            materialized_tx: watch::Sender::new(loaded.end),
            stats: Stats::default(),
        };
        Ok((store, loaded.report))
    }

    pub fn pg(&self) -> PgId {
        self.pg
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding this lock is a bug in this module; the state may be torn.
        self.state.read().expect("page store lock poisoned")
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().expect("page store lock poisoned")
    }

    fn cache(&self) -> MutexGuard<'_, PageCache> {
        self.cache.lock().expect("page cache lock poisoned")
    }

    fn lock_maintenance(&self) -> MutexGuard<'_, ()> {
        self.maintenance.lock().expect("maintenance lock poisoned")
    }

    /// Log bytes the materializer reads per step: at most a layer's worth, so layer files stay
    /// near their target size.
    pub fn batch_bytes(&self) -> usize {
        MATERIALIZE_BATCH_BYTES.min(self.config.layer_bytes)
    }

    pub fn materialized(&self) -> Lsn {
        self.read_state().materialized
    }

    pub fn pg_tail(&self) -> Lsn {
        self.read_state().pg_tail
    }

    pub fn retained_from(&self) -> Lsn {
        self.read_state().retained_from
    }

    pub fn subscribe_materialized(&self) -> watch::Receiver<Lsn> {
        self.materialized_tx.subscribe()
    }

    /// Memory layers waiting to be written (the materializer pauses while there are many).
    pub fn frozen_layers(&self) -> usize {
        self.read_state()
            .layers
            .iter()
            .filter(|l| matches!(l, Layer::Memory(_)))
            .count()
    }

    /// The layer files of the stack, newest first.
    pub fn file_layers(&self) -> Vec<Arc<LayerFile>> {
        self.read_state()
            .layers
            .iter()
            .filter_map(|l| match l {
                Layer::File(f) => Some(f.clone()),
                Layer::Memory(_) => None,
            })
            .collect()
    }

    /// Takes the names of the layers found corrupt since the last call.
    pub fn take_corrupt(&self) -> Vec<String> {
        std::mem::take(&mut *self.corrupt.lock().expect("corrupt lock poisoned"))
            .into_iter()
            .collect()
    }

    fn note_corrupt(&self, e: &StorageError) {
        if let StorageError::CorruptLayer { name, reason } = e {
            tracing::error!(pg = self.pg.get(), file = %name, %reason, "corrupt layer file; not served, rebuilding");
            self.corrupt
                .lock()
                .expect("corrupt lock poisoned")
                .insert(name.clone());
        }
    }

    fn note_skipped(&self, rec: &RecordView<'_>, err: &PageError) {
        let n = self.stats.redo_skipped.fetch_add(1, Ordering::Relaxed);
        if n < 10 || n.is_multiple_of(10_000) {
            tracing::warn!(
                pg = self.pg.get(),
                lsn = rec.header.lsn.get(),
                page = rec.header.page_id.get(),
                skipped = n + 1,
                %err,
                "redo record does not apply; skipped (a writer bug)"
            );
        }
    }

    /// The page exactly as of `lsn`. Above M it applies the segment's hot log on the fly, which
    /// needs the segment complete up to `lsn` (the caller waited for that; it is checked again).
    /// The caller vouches that `lsn` is a read point, so at or below the VDL.
    pub fn get_page(
        &self,
        segment: &Segment,
        page: PageId,
        lsn: Lsn,
    ) -> Result<Arc<Page>, StorageError> {
        if !self.pages.contains(&page.get()) {
            return Err(StorageError::NotHosted(page));
        }
        let (m, generation, found) = {
            let st = self.read_state();
            if lsn < st.retained_from {
                return Err(StorageError::VersionDropped {
                    lsn,
                    retained_from: st.retained_from,
                });
            }
            let t = lsn.min(st.materialized);
            let cached = self.cache().get(page);
            let found = match cached {
                Some(img) if img.lsn() <= t => {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    Ok(img)
                }
                _ => {
                    self.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
                    let mut chain = Chain::default();
                    walk_stack(Some(&st.open), &st.layers, page, t, &mut chain)
                        .inspect_err(|e| self.note_corrupt(e))?;
                    Err((chain, t == st.materialized))
                }
            };
            (st.materialized, st.generation, found)
        };
        let mut img = match found {
            Ok(img) => img,
            Err((chain, newest)) => {
                let img = Arc::new(chain.replay()?);
                if newest && !img.is_zeroed() {
                    self.cache_if_current(page, m, generation, &img);
                }
                img
            }
        };
        if lsn > m {
            let before = segment.state();
            if lsn > before.complete_lsn {
                return Err(StorageError::NotComplete {
                    lsn,
                    complete: before.complete_lsn.max(m),
                });
            }
            let got = segment.read(m, lsn, HOT_SCAN_BYTES_MAX)?;
            // A read that met a corrupt record dropped it (and lowered SCL): then the records
            // read are not all there are, and the page must not be served from them.
            let after = segment.state();
            if after.scl < before.scl || lsn > after.complete_lsn {
                return Err(StorageError::NotComplete {
                    lsn,
                    complete: after.complete_lsn.min(after.scl).max(m),
                });
            }
            if got.more {
                return Err(StorageError::Behind(format!(
                    "more than {HOT_SCAN_BYTES_MAX} bytes of log between {m:?} and {lsn:?}"
                )));
            }
            for rec in record::decode_all(&got.records)
                .map_err(|e| StorageError::Internal(format!("segment served a bad record: {e}")))?
            {
                if rec.header.page_id == page {
                    let mut next = (*img).clone();
                    // The skip rule: a failed apply leaves the page as it was.
                    if apply_record(&mut next, &rec).is_ok() {
                        img = Arc::new(next);
                    }
                }
            }
        }
        if img.is_zeroed() {
            return Err(StorageError::PageNotWritten { page, lsn });
        }
        Ok(img)
    }

    /// Caches a page rebuilt at M if it is still the newest version.
    fn cache_if_current(&self, page: PageId, m: Lsn, generation: u64, img: &Arc<Page>) {
        let st = self.read_state();
        if st.generation != generation {
            return;
        }
        if st.materialized != m {
            let changed = st.open.changed_after(page, m)
                || st
                    .layers
                    .iter()
                    .take_while(|l| l.desc().end() > m)
                    .any(|l| !l.desc().is_image() && l.changed_after(page, m));
            if changed {
                return;
            }
        }
        self.cache().put(page, img.clone());
    }

    /// The newest version of `page` at M, for the materializer.
    fn newest(&self, page: PageId) -> Result<Arc<Page>, StorageError> {
        if let Some(img) = self.cache().get(page) {
            return Ok(img);
        }
        let mut chain = Chain::default();
        {
            let st = self.read_state();
            walk_stack(
                Some(&st.open),
                &st.layers,
                page,
                st.materialized,
                &mut chain,
            )
            .inspect_err(|e| self.note_corrupt(e))?;
        }
        Ok(Arc::new(chain.replay()?))
    }

    /// Applies `records` (chained, durable, in LSN order, all in `(M, new_m]`) and moves M to
    /// `new_m`, with `new_tail` the PG's last record at or below it.
    pub fn ingest(
        &self,
        records: &[RecordView<'_>],
        new_m: Lsn,
        new_tail: Lsn,
    ) -> Result<(), StorageError> {
        let m = self.materialized();
        assert!(new_m >= m, "the materialized point never moves back here");
        let mut staged: HashMap<PageId, Arc<Page>> = HashMap::new();
        let mut versions: Vec<(PageId, Lsn, Version)> = Vec::with_capacity(records.len());
        let max = self.config.coalesce_redo_max;
        {
            let mut coalesce = self.coalesce.lock().expect("coalesce lock poisoned");
            for rec in records {
                let (page, lsn) = (rec.header.page_id, rec.header.lsn);
                assert!(
                    m < lsn && lsn <= new_m,
                    "{lsn:?} outside ({m:?}, {new_m:?}]"
                );
                assert!(self.pages.contains(&page.get()), "record of another PG");
                let redo = match decode_record(rec) {
                    Ok(redo) => redo,
                    Err(err) => {
                        self.note_skipped(rec, &err);
                        continue;
                    }
                };
                let img = match staged.entry(page) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(self.newest(page)?),
                };
                if let Err(err) = apply(Arc::make_mut(img), lsn, &redo) {
                    self.note_skipped(rec, &err);
                    continue;
                }
                // A page whose count is unknown (first change since this process started)
                // gets an image at once: that bounds chains across restarts too.
                let count = coalesce.entry(page).or_insert(max - 1);
                let version = if rec.header.kind == PageRedo::KIND_INIT_PAGE {
                    *count = 0;
                    None
                } else {
                    *count += 1;
                    (*count >= max).then(|| {
                        *count = 0;
                        self.stats.images_coalesced.fetch_add(1, Ordering::Relaxed);
                        Version::Image(img.clone())
                    })
                };
                let version = version.unwrap_or_else(|| Version::Redo {
                    kind: rec.header.kind,
                    payload: bytes::Bytes::copy_from_slice(rec.payload),
                });
                versions.push((page, lsn, version));
            }
            if coalesce.len() > COALESCE_PAGES_TRACKED_MAX {
                coalesce.clear();
            }
        }
        let applied = versions.len() as u64;
        {
            let mut st = self.write_state();
            assert_eq!(
                st.materialized, m,
                "only the materializer moves the materialized point"
            );
            for (page, lsn, version) in versions {
                st.open.insert(page, lsn, version);
            }
            st.open.extend_to(new_m, new_tail);
            st.materialized = new_m;
            st.pg_tail = new_tail;
            let mut cache = self.cache();
            for (page, img) in staged {
                if !img.is_zeroed() {
                    cache.put(page, img);
                }
            }
        }
        self.stats
            .records_materialized
            .fetch_add(applied, Ordering::Relaxed);
        self.materialized_tx.send_replace(new_m);
        Ok(())
    }

    /// Freezes the open layer if it is big or old enough, then writes every frozen layer to a
    /// delta layer file. Returns whether a file was written.
    pub fn freeze_if_due(&self) -> Result<bool, StorageError> {
        {
            let mut st = self.write_state();
            let due = !st.open.is_empty()
                && (st.open.charged_bytes() >= self.config.layer_bytes
                    || st
                        .open
                        .first_insert()
                        .is_some_and(|t| t.elapsed() >= self.config.freeze_interval));
            if due {
                let (m, tail) = (st.materialized, st.pg_tail);
                let frozen = std::mem::replace(&mut st.open, VersionChains::new(m, tail));
                st.layers.insert(0, Layer::Memory(Arc::new(frozen)));
                sort_stack(&mut st.layers);
            }
        }
        let mut wrote = false;
        loop {
            // Oldest frozen layer first, so files always extend a contiguous chain.
            let (frozen, tail, generation) = {
                let st = self.read_state();
                let Some(frozen) = st.layers.iter().rev().find_map(|l| match l {
                    Layer::Memory(v) => Some(v.clone()),
                    Layer::File(_) => None,
                }) else {
                    return Ok(wrote);
                };
                let tail = frozen.pg_tail();
                (frozen, tail, st.generation)
            };
            let desc = LayerDesc::Delta {
                start: frozen.start(),
                end: frozen.end(),
            };
            let file = Arc::new(write_delta(&self.dir, desc, self.pg, tail, frozen.iter())?);
            let mut st = self.write_state();
            if st.generation != generation {
                return Ok(wrote);
            }
            for l in st.layers.iter_mut() {
                if let Layer::Memory(v) = l
                    && Arc::ptr_eq(v, &frozen)
                {
                    *l = Layer::File(file.clone());
                }
            }
            wrote = true;
        }
    }

    /// Writes an image layer at the top of the file layers if enough delta bytes piled up above
    /// the newest one. Slow for a big PG; runs beside materialization.
    pub fn create_image_layer_if_due(&self) -> Result<bool, StorageError> {
        let _maintenance = self.lock_maintenance();
        let (files, at, tail, generation) = {
            let st = self.read_state();
            let files: Vec<Arc<LayerFile>> = st
                .layers
                .iter()
                .filter_map(|l| match l {
                    Layer::File(f) => Some(f.clone()),
                    Layer::Memory(_) => None,
                })
                .collect();
            let Some(top) = files.first() else {
                return Ok(false);
            };
            if top.desc().is_image() {
                return Ok(false);
            }
            let delta_bytes: u64 = files
                .iter()
                .take_while(|f| !f.desc().is_image())
                .map(|f| f.file_bytes())
                .sum();
            let last_image = files
                .iter()
                .find(|f| f.desc().is_image())
                .map_or(0, |f| f.file_bytes());
            if delta_bytes < self.config.image_layer_delta_bytes.max(last_image) {
                return Ok(false);
            }
            (
                files.clone(),
                top.desc().end(),
                top.pg_tail(),
                st.generation,
            )
        };
        let mut pages: BTreeSet<PageId> = BTreeSet::new();
        for f in &files {
            pages.extend(f.pages());
            if f.desc().is_image() {
                break;
            }
        }
        let stack: Vec<Layer> = files.into_iter().map(Layer::File).collect();
        let mut w = LayerWriter::create(&self.dir, LayerDesc::Image { at }, self.pg, tail)?;
        for page in pages {
            let mut chain = Chain::default();
            walk_stack(None, &stack, page, at, &mut chain).inspect_err(|e| self.note_corrupt(e))?;
            let img = chain.replay()?;
            if !img.is_zeroed() {
                let lsn = img.lsn();
                w.add(page, lsn, &Version::Image(Arc::new(img)))?;
            }
        }
        let file = Arc::new(w.finish()?);
        let mut st = self.write_state();
        if st.generation != generation {
            drop(st);
            std::fs::remove_file(file.path())?;
            return Ok(false);
        }
        st.layers.push(Layer::File(file));
        sort_stack(&mut st.layers);
        Ok(true)
    }

    /// Drops every layer below the newest image layer at or below `horizon` (PGMRPL): no
    /// reader needs a version below it. Returns the names removed.
    pub fn gc(&self, horizon: Lsn) -> Result<Vec<String>, StorageError> {
        let _maintenance = self.lock_maintenance();
        let removed: Vec<Layer> = {
            let mut st = self.write_state();
            let Some(base) = st
                .layers
                .iter()
                .filter_map(|l| match l.desc() {
                    LayerDesc::Image { at } if at <= horizon => Some(at),
                    _ => None,
                })
                .max()
            else {
                return Ok(Vec::new());
            };
            if base <= st.retained_from {
                return Ok(Vec::new());
            }
            let (keep, drop): (Vec<Layer>, Vec<Layer>) =
                st.layers.drain(..).partition(|l| match l.desc() {
                    LayerDesc::Delta { end, .. } => end > base,
                    LayerDesc::Image { at } => at >= base,
                });
            st.layers = keep;
            st.retained_from = base;
            drop
        };
        let mut names = Vec::new();
        for l in removed {
            if let Layer::File(f) = l {
                match std::fs::remove_file(f.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                names.push(f.name().to_string());
            }
        }
        if !names.is_empty() {
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(names)
    }

    /// Re-reads every layer file's entries (scrub). Corrupt ones are reported for repair;
    /// returns how many.
    pub fn scrub(&self) -> Result<usize, StorageError> {
        let mut corrupt = 0;
        for f in self.file_layers() {
            match f.verify_entries() {
                Ok(()) => {}
                Err(e @ StorageError::CorruptLayer { .. }) => {
                    self.note_corrupt(&e);
                    corrupt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(corrupt)
    }

    /// Rebuilds the stack from the layer files on disk after a corrupt one was removed (or
    /// replaced): materialization resumes from the end of the longest valid chain, so the log
    /// rebuilds whatever the bad file held.
    pub fn reload(&self) -> Result<OpenReport, StorageError> {
        let _maintenance = self.lock_maintenance();
        let loaded = load_chain(&self.dir, self.pg)?;
        {
            let mut st = self.write_state();
            let generation = st.generation + 1;
            *st = State {
                materialized: loaded.end,
                pg_tail: loaded.tail,
                open: VersionChains::new(loaded.end, loaded.tail),
                layers: loaded.layers,
                retained_from: loaded.base,
                generation,
            };
            self.cache().clear();
        }
        self.coalesce
            .lock()
            .expect("coalesce lock poisoned")
            .clear();
        self.stats.layers_repaired.fetch_add(1, Ordering::Relaxed);
        self.materialized_tx.send_replace(loaded.end);
        Ok(loaded.report)
    }

    pub fn status(&self) -> PageStoreStatus {
        let st = self.read_state();
        let mut s = PageStoreStatus {
            materialized: st.materialized,
            retained_from: st.retained_from,
            open_layer_bytes: st.open.charged_bytes() as u64,
            cache_pages: self.cache().len() as u64,
            cache_hits: self.stats.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.stats.cache_misses.load(Ordering::Relaxed),
            images_coalesced: self.stats.images_coalesced.load(Ordering::Relaxed),
            redo_skipped: self.stats.redo_skipped.load(Ordering::Relaxed),
            layers_repaired: self.stats.layers_repaired.load(Ordering::Relaxed),
            records_materialized: self.stats.records_materialized.load(Ordering::Relaxed),
            ..Default::default()
        };
        for l in &st.layers {
            match l {
                Layer::Memory(_) => s.memory_layers += 1,
                Layer::File(f) if f.desc().is_image() => s.image_layers += 1,
                Layer::File(_) => s.delta_layers += 1,
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_support::{BenchConfig, filled_segment, materialize_all, redo_stream};

    fn config() -> PageStoreConfig {
        PageStoreConfig {
            layer_bytes: 16 * 1024,
            cache_pages: 8,
            image_layer_delta_bytes: 32 * 1024,
            freeze_interval: Duration::from_secs(3600),
            coalesce_redo_max: 4,
        }
    }

    /// The page at `lsn` built by applying the stream's prefix directly.
    fn expected(stream: &[(PageId, PageRedo)], page: PageId, lsn: Lsn) -> Option<Page> {
        let mut p = Page::new_zeroed();
        for (i, (id, redo)) in stream.iter().enumerate().take(lsn.get() as usize) {
            if *id == page {
                apply(&mut p, Lsn(i as u64 + 1), redo).expect("stream is valid");
            }
        }
        (!p.is_zeroed()).then_some(p)
    }

    fn read(store: &PageStore, seg: &Segment, page: PageId, lsn: Lsn) -> Option<Page> {
        match store.get_page(seg, page, lsn) {
            Ok(p) => Some((*p).clone()),
            Err(StorageError::PageNotWritten { .. }) => None,
            Err(e) => panic!("{page:?} at {lsn:?}: {e}"),
        }
    }

    // Proves the layer stack answers every (page, lsn) like a direct replay of the log: with
    // a tiny cache (misses), coalesced images, several delta layers, an image layer, after
    // garbage collection (reads below it are refused) and after reopening from disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stack_matches_replay_through_layers_gc_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let bench = BenchConfig {
            pages: 12,
            records: 1500,
            cell_bytes: 60,
            ..BenchConfig::default()
        };
        let stream = redo_stream(&bench);
        let (seg, last) = filled_segment(&dir.path().join("seg"), 12, &stream)
            .await
            .unwrap();
        let pages_dir = dir.path().join("pages");
        let (store, report) = PageStore::open(&pages_dir, PgId(0), 0..12, config()).unwrap();
        assert_eq!(report.materialized, Lsn::ZERO);
        let store = Arc::new(store);
        materialize_all(&store, &seg, last).await.unwrap();
        let st = store.status();
        assert!(st.delta_layers >= 2, "{st:?}");
        assert!(st.images_coalesced > 0, "{st:?}");
        let samples: Vec<Lsn> = (1..=last.get())
            .step_by(97)
            .map(Lsn)
            .chain([last])
            .collect();
        for lsn in &samples {
            for p in 0..13 {
                assert_eq!(
                    read(&store, &seg, PageId(p % 12), *lsn),
                    expected(&stream, PageId(p % 12), *lsn),
                    "{p} at {lsn:?}"
                );
            }
        }
        // An image layer at the top of the files, then GC up to it.
        assert!(store.create_image_layer_if_due().unwrap());
        let at = store.file_layers()[0].desc().end();
        let removed = store.gc(at).unwrap();
        assert!(!removed.is_empty());
        assert_eq!(store.retained_from(), at);
        assert!(matches!(
            store.get_page(&seg, PageId(1), Lsn(at.get() - 1)),
            Err(StorageError::VersionDropped { .. })
        ));
        for lsn in samples.iter().filter(|l| **l >= at) {
            for p in 0..12 {
                assert_eq!(
                    read(&store, &seg, PageId(p), *lsn),
                    expected(&stream, PageId(p), *lsn)
                );
            }
        }
        // Reopen: the chain on disk starts at the image layer and resumes from its end.
        let end = store.file_layers()[0].desc().end();
        drop(store);
        let (store, report) = PageStore::open(&pages_dir, PgId(0), 0..12, config()).unwrap();
        assert_eq!(report.retained_from, at);
        assert_eq!(report.materialized, end);
        let store = Arc::new(store);
        materialize_all(&store, &seg, last).await.unwrap();
        for p in 0..12 {
            assert_eq!(
                read(&store, &seg, PageId(p), last),
                expected(&stream, PageId(p), last)
            );
        }
    }

    // Proves GetPage above the materialized point applies the hot log on the fly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_above_the_materialized_point_use_the_hot_log() {
        let dir = tempfile::tempdir().unwrap();
        let bench = BenchConfig {
            pages: 4,
            records: 200,
            cell_bytes: 10,
            ..BenchConfig::default()
        };
        let stream = redo_stream(&bench);
        let (seg, last) = filled_segment(&dir.path().join("seg"), 4, &stream)
            .await
            .unwrap();
        let (store, _) =
            PageStore::open(&dir.path().join("pages"), PgId(0), 0..4, config()).unwrap();
        assert_eq!(store.materialized(), Lsn::ZERO);
        for p in 0..4 {
            assert_eq!(
                read(&store, &seg, PageId(p), last),
                expected(&stream, PageId(p), last)
            );
        }
    }
}
