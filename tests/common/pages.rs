//! Helpers for the page tests: a cluster of real `sixfold storage` processes started with page
//! flags (small layers so coalescing, image layers and GC happen within a test), a plain model
//! of what each page should hold at every LSN, and a generator of redo that is valid for it.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use rand::rngs::StdRng;
use sixfold_log_service::client::SegmentClient;
use sixfold_log_service::placement::Placement;
use sixfold_log_service::writer::{QuorumWriter, RecordSpec, WriterConfig};
use sixfold_log_service::{Lsn, PageId};
use sixfold_proto::page::PgPageStatus;
use sixfold_storage::page::{PAGE_BODY_BYTES, SLOT_BYTES};
use sixfold_storage::page_client::PageClient;
use sixfold_storage::{CELL_BYTES_MAX, Page, PageKind, PageRedo};
use tonic::Code;

use super::placement;

pub const BIN: &str = env!("CARGO_BIN_EXE_sixfold");

/// Flags that make every mechanism run within seconds on a few hundred records.
pub const SMALL_LAYERS: &[&str] = &[
    "--page-layer-bytes",
    "16384",
    "--page-image-layer-bytes",
    "24576",
    "--page-freeze-ms",
    "300",
    "--page-upload-ms",
    "200",
    "--read-point-ttl-ms",
    "3000",
    "--page-memory-bytes",
    "4194304",
];

/// Six storage nodes with page flags and environment of the test's choosing.
pub struct PagesCluster {
    pub dir: tempfile::TempDir,
    pub placement: Placement,
    pub placement_path: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    nodes: Vec<Option<Child>>,
}

impl PagesCluster {
    pub async fn start(
        pgs: u32,
        pages_per_pg: u64,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> PagesCluster {
        let dir = tempfile::tempdir().unwrap();
        let (placement, placement_path) = placement::six_nodes(dir.path(), pgs, pages_per_pg);
        let mut c = PagesCluster {
            dir,
            placement,
            placement_path,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            nodes: (0..6).map(|_| None).collect(),
        };
        for i in 0..6 {
            c.start_node(i).await;
        }
        c
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("storage-{}", i + 1))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    pub fn running(&self) -> Vec<usize> {
        (0..6).filter(|i| self.is_running(*i)).collect()
    }

    pub async fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} already running");
        let child = placement::start_storage(
            self.dir.path(),
            &self.node_dir(i),
            &self.placement,
            &self.placement_path,
            i,
            &self.args,
            &self.env,
        )
        .await;
        self.nodes[i] = Some(child);
    }

    pub fn kill9(&mut self, i: usize) {
        let mut child = self.nodes[i].take().expect("node running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn log_client(&self, i: usize) -> SegmentClient {
        let n = &self.placement.nodes[i];
        SegmentClient::with_timeout(n.id, &n.addr, Duration::from_secs(5)).unwrap()
    }

    pub fn page_client(&self, i: usize) -> PageClient {
        page_client_for(&self.placement, i)
    }

    pub async fn status(&self, i: usize) -> Vec<PgPageStatus> {
        self.page_client(i).status().await.expect("page status")
    }

    pub async fn open_writer(&self) -> QuorumWriter {
        open_writer(&self.placement).await
    }

    /// Dumps the tail of every node's log, to explain a failure.
    pub fn dump_logs(&self) {
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                eprintln!("--- {name}");
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

impl Drop for PagesCluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn page_client_for(placement: &Placement, i: usize) -> PageClient {
    PageClient::with_timeout(&placement.nodes[i].addr, Duration::from_secs(10)).unwrap()
}

pub async fn open_writer(placement: &Placement) -> QuorumWriter {
    tokio::time::timeout(
        Duration::from_secs(90),
        QuorumWriter::open(placement.clone(), None, WriterConfig::default()),
    )
    .await
    .expect("writer recovery timed out")
    .expect("writer opens")
}

/// GetPage from node `i`, retrying while the node answers UNAVAILABLE (catching up, being
/// rebuilt, repairing a layer) for up to `patience`.
pub async fn get_page(
    client: &PageClient,
    page: PageId,
    lsn: Lsn,
    patience: Duration,
) -> Result<Option<Page>, tonic::Status> {
    let deadline = Instant::now() + patience;
    loop {
        match client.get_page(page, lsn).await {
            Err(s)
                if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Keeps reporting a read point to every node so PGMRPL never passes it: what a compute with a
/// long-running snapshot does. Stops when dropped.
pub struct ReadPointPin {
    pub lsn: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl ReadPointPin {
    pub fn start(placement: &Placement, compute: u64, lsn: Lsn) -> ReadPointPin {
        let pin = Arc::new(AtomicU64::new(lsn.get()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<PageClient> = (0..placement.nodes.len())
            .map(|i| {
                PageClient::with_timeout(&placement.nodes[i].addr, Duration::from_millis(300))
                    .unwrap()
            })
            .collect();
        let (p, s) = (pin.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                for c in &clients {
                    let _ = c
                        .report_read_point(compute, Lsn(p.load(Ordering::Relaxed)))
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        ReadPointPin { lsn: pin, stop }
    }

    pub fn set(&self, lsn: Lsn) {
        self.lsn.store(lsn.get(), Ordering::Relaxed);
    }
}

impl Drop for ReadPointPin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a page holds, as plainly as possible.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelPage {
    pub kind: u8,
    pub cells: Vec<Vec<u8>>,
    pub link: u64,
    pub lsn: Lsn,
}

impl ModelPage {
    fn free(&self) -> usize {
        PAGE_BODY_BYTES
            - SLOT_BYTES * self.cells.len()
            - self.cells.iter().map(Vec::len).sum::<usize>()
    }
}

/// Every page's history: (lsn, state after it), in LSN order.
#[derive(Default)]
pub struct Model {
    pub pages: BTreeMap<PageId, Vec<(Lsn, ModelPage)>>,
}

impl Model {
    pub fn current(&self, page: PageId) -> Option<&ModelPage> {
        self.pages.get(&page).and_then(|h| h.last()).map(|(_, p)| p)
    }

    /// The page at `lsn`; None if it was not written at or below it.
    pub fn at(&self, page: PageId, lsn: Lsn) -> Option<&ModelPage> {
        let h = self.pages.get(&page)?;
        let i = h.partition_point(|(l, _)| *l <= lsn);
        (i > 0).then(|| &h[i - 1].1)
    }

    /// A redo record valid for `page`'s current state.
    pub fn next_redo(&self, rng: &mut StdRng, page: PageId) -> PageRedo {
        let Some(cur) = self.current(page) else {
            return init(page, rng.random_range(1..=3));
        };
        let n = cur.cells.len();
        let free = cur.free();
        let cell = |rng: &mut StdRng, max: usize| {
            let len = if rng.random_bool(0.05) {
                rng.random_range(0..=max.min(CELL_BYTES_MAX))
            } else {
                rng.random_range(0..=max.min(120))
            };
            let fill: u8 = rng.random();
            (0..len)
                .map(|i| fill.wrapping_add(i as u8))
                .collect::<Vec<u8>>()
        };
        loop {
            match rng.random_range(0..100) {
                0 => return init(page, cur.kind),
                1..=45 if free > SLOT_BYTES + 200 => {
                    let slot = rng.random_range(0..=n) as u16;
                    let bytes = cell(rng, free - SLOT_BYTES);
                    return PageRedo::InsertCell { slot, bytes };
                }
                46..=70 if n > 0 => {
                    let slot = rng.random_range(0..n);
                    let max = free + cur.cells[slot].len();
                    let bytes = cell(rng, max);
                    return PageRedo::ReplaceCell {
                        slot: slot as u16,
                        bytes,
                    };
                }
                71..=90 if n > 0 => {
                    return PageRedo::DeleteCell {
                        slot: rng.random_range(0..n) as u16,
                    };
                }
                91..=99 => {
                    return PageRedo::SetLink {
                        link: PageId(rng.random_range(0..1000)),
                    };
                }
                _ => {}
            }
        }
    }

    /// The model's own apply: the documented meaning of each redo kind.
    pub fn apply(&mut self, page: PageId, lsn: Lsn, redo: &PageRedo) {
        let mut next = self.current(page).cloned().unwrap_or_default();
        match redo {
            PageRedo::InitPage { kind, .. } => {
                next = ModelPage {
                    kind: kind.get(),
                    ..ModelPage::default()
                }
            }
            PageRedo::InsertCell { slot, bytes } => {
                next.cells.insert(*slot as usize, bytes.clone())
            }
            PageRedo::ReplaceCell { slot, bytes } => next.cells[*slot as usize] = bytes.clone(),
            PageRedo::DeleteCell { slot } => {
                next.cells.remove(*slot as usize);
            }
            PageRedo::SetLink { link } => next.link = link.get(),
        }
        next.lsn = lsn;
        self.pages.entry(page).or_default().push((lsn, next));
    }

    /// Panics unless `got` is what the model says `page` is at `lsn`.
    pub fn check(&self, page: PageId, lsn: Lsn, got: &Option<Page>, context: &str) {
        let want = self.at(page, lsn);
        match (want, got) {
            (None, None) => {}
            (Some(w), Some(g)) => {
                let cells: Vec<Vec<u8>> = g.cells().map(<[u8]>::to_vec).collect();
                assert_eq!(
                    (
                        g.kind().map_or(0, PageKind::get),
                        g.link().get(),
                        g.lsn(),
                        g.page_id()
                    ),
                    (w.kind, w.link, w.lsn, page),
                    "{context}: {page:?} at {lsn:?}: header differs"
                );
                assert!(
                    cells == w.cells,
                    "{context}: {page:?} at {lsn:?}: cells differ"
                );
            }
            (w, g) => panic!(
                "{context}: {page:?} at {lsn:?}: model has {:?}, storage sent {:?}",
                w.map(|p| p.lsn),
                g.as_ref().map(|p| p.lsn())
            ),
        }
    }
}

fn init(page: PageId, kind: u8) -> PageRedo {
    PageRedo::InitPage {
        page_id: page,
        kind: PageKind::new(kind).expect("non-zero"),
    }
}

/// Writes `records` random, valid redo records on `pages` through `writer` in MTRs of 1–3
/// records, updating `model`; returns the last LSN written (durable when this returns).
pub async fn write_random(
    writer: &QuorumWriter,
    model: &mut Model,
    rng: &mut StdRng,
    pages: &[PageId],
    records: usize,
) -> Lsn {
    let mut written = 0;
    let mut last = Lsn::ZERO;
    while written < records {
        let len = rng.random_range(1..=3usize).min(records - written);
        let mut mtr = Vec::with_capacity(len);
        let mut redo = Vec::with_capacity(len);
        // Pages are distinct within an MTR so each record is generated against the state the
        // previous records of the MTR leave.
        let mut used: HashMap<PageId, ()> = HashMap::new();
        while mtr.len() < len {
            let page = pages[rng.random_range(0..pages.len())];
            if used.insert(page, ()).is_some() {
                continue;
            }
            let r = model.next_redo(rng, page);
            let (kind, payload) = r.encode();
            mtr.push(RecordSpec {
                page_id: page,
                kind,
                payload: Bytes::from(payload),
            });
            redo.push((page, r));
        }
        let commit = writer.submit(&mtr).await.expect("submit");
        for (i, (page, r)) in redo.iter().enumerate() {
            model.apply(*page, Lsn(commit.first.get() + i as u64), r);
        }
        written += len;
        last = commit.cpl;
    }
    writer.wait_durable(last).await.expect("durable");
    last
}

/// Waits until node `i` reports every PG uploaded through `lsn` with at least one layer file.
pub async fn wait_uploaded(cluster: &PagesCluster, i: usize, lsn: Lsn, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let st = cluster.status(i).await;
        if st
            .iter()
            .all(|s| s.uploaded_lsn >= lsn.get() && s.delta_layers + s.image_layers > 0)
        {
            return;
        }
        if Instant::now() > deadline {
            cluster.dump_logs();
            panic!("node {i} did not upload through {lsn:?}: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rebuild scenario shared by the local-directory and S3 tests: write, let node 0 upload,
/// wipe its data directory, restart it, and check it serves the same bytes as before (for pages
/// across the whole history) and keeps materializing new writes.
pub async fn rebuild_scenario(cluster: &mut PagesCluster, seed: u64) {
    use rand::SeedableRng;
    let mut rng = StdRng::seed_from_u64(seed);
    let writer = cluster.open_writer().await;
    // Keep every version: the samples below reach back to the first write.
    let _pin = ReadPointPin::start(&cluster.placement, 1, Lsn::ZERO);
    let pages: Vec<PageId> = (0..24).map(PageId).collect();
    let mut model = Model::default();
    let mut lsns = Vec::new();
    for _ in 0..4 {
        lsns.push(write_random(&writer, &mut model, &mut rng, &pages, 250).await);
    }
    let vdl = *lsns.last().unwrap();
    wait_uploaded(cluster, 0, vdl, Duration::from_secs(30)).await;
    let before_status = cluster.status(0).await;
    let client = cluster.page_client(0);
    let mut samples = Vec::new();
    for lsn in &lsns {
        for p in (0..26).step_by(3) {
            let got = get_page(&client, PageId(p), *lsn, Duration::from_secs(10))
                .await
                .expect("read before the wipe");
            model.check(PageId(p), *lsn, &got, "before the wipe");
            samples.push((PageId(p), *lsn, got.map(|g| g.as_bytes().to_vec())));
        }
    }
    cluster.kill9(0);
    std::fs::remove_dir_all(cluster.node_dir(0)).expect("wipe node 0");
    cluster.start_node(0).await;
    // The rebuild runs in the background; wait until the node reports its page store ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let st = cluster.status(0).await;
        if st.iter().all(|s| s.ready) {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "node 0 never finished its rebuild: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for s in &st {
        if s.restored_from != "node-1" {
            cluster.dump_logs();
        }
        assert_eq!(
            s.restored_from, "node-1",
            "pg {} was not rebuilt from object storage: {st:?}",
            s.pg
        );
        assert!(
            s.restored_layers > 0,
            "no layers restored: {st:?} (before: {before_status:?})"
        );
    }
    let client = cluster.page_client(0);
    for (page, lsn, bytes) in &samples {
        let got = get_page(&client, *page, *lsn, Duration::from_secs(20))
            .await
            .unwrap_or_else(|s| {
                cluster.dump_logs();
                panic!("rebuilt node: {page:?} at {lsn:?}: {s:?}")
            });
        assert_eq!(
            got.map(|g| g.as_bytes().to_vec()),
            *bytes,
            "rebuilt node serves different bytes for {page:?} at {lsn:?}"
        );
    }
    // Materialization continues on the rebuilt node.
    let after = write_random(&writer, &mut model, &mut rng, &pages, 200).await;
    for p in 0..26 {
        let got = get_page(&client, PageId(p), after, Duration::from_secs(20))
            .await
            .expect("read after the rebuild");
        model.check(PageId(p), after, &got, "after the rebuild");
    }
}
