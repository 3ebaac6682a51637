//! A benchmark of the page path on one in-process segment, for the load harness to call:
//! materialization throughput (records/s from hot log to stored versions, layer files
//! included), and GetPage@LSN throughput and latency for cache hits (newest versions) and
//! misses (old versions: a walk down the layer stack and a replay).
//!
//! It measures the storage engine without the network: the segment is a real
//! `log-service` segment on disk (fsync and all) and the page store is the one `sixfold storage`
//! runs. Run it with `cargo run --release -p sixfold-storage --example page_bench [records]
//! [reads] [readers]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sixfold_log_service::declaration::Declaration;
use sixfold_log_service::limits::BATCH_BYTES_MAX;
use sixfold_log_service::record;
use sixfold_log_service::segment::{Origin, Segment};
use sixfold_log_service::{Epoch, Lsn, PageId, PgId};

use crate::config::PageArgs;
use crate::error::StorageError;
use crate::materializer;
use crate::page::PageKind;
use crate::page_store::PageStore;
use crate::redo::PageRedo;

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Pages in the PG.
    pub pages: u64,
    /// Redo records to write and materialize.
    pub records: usize,
    /// GetPage calls per measurement (hit and miss each).
    pub reads: usize,
    /// Reader threads.
    pub readers: usize,
    /// Bytes per cell written.
    pub cell_bytes: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            pages: 2000,
            records: 200_000,
            reads: 200_000,
            readers: 4,
            cell_bytes: 100,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub ops: usize,
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub records: usize,
    pub materialize_secs: f64,
    pub materialize_records_per_s: f64,
    pub delta_layers: u32,
    pub image_layers: u32,
    pub hit: Latency,
    pub miss: Latency,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "materialize: {} records in {:.2} s = {:.0} records/s ({} delta, {} image layers)",
            self.records,
            self.materialize_secs,
            self.materialize_records_per_s,
            self.delta_layers,
            self.image_layers
        )?;
        for (name, l) in [("hit ", &self.hit), ("miss", &self.miss)] {
            writeln!(
                f,
                "GetPage {name}: {} ops, {:.0} ops/s, p50 {:.1} us, p99 {:.1} us",
                l.ops, l.ops_per_s, l.p50_us, l.p99_us
            )?;
        }
        write!(
            f,
            "cache: {} hits, {} misses",
            self.cache_hits, self.cache_misses
        )
    }
}

/// Deletes the benchmark's directory when done.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Valid redo for the benchmark's pages without a model: each page is initialized, then filled
/// with cells up to a bound, then its cells are replaced round-robin.
pub fn redo_stream(config: &BenchConfig) -> Vec<(PageId, PageRedo)> {
    let kind = PageKind::new(1).expect("non-zero");
    let max_cells = (4000 / (config.cell_bytes + 4)).max(1);
    let mut cells = vec![0usize; config.pages as usize];
    let mut out = Vec::with_capacity(config.records);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..config.records {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = (x % config.pages) as usize;
        let page = PageId(p as u64);
        let bytes = vec![i as u8; config.cell_bytes];
        let redo = match cells[p] {
            0 => {
                cells[p] = 1;
                out.push((
                    page,
                    PageRedo::InitPage {
                        page_id: page,
                        kind,
                    },
                ));
                continue;
            }
            n if n <= max_cells => {
                cells[p] += 1;
                PageRedo::InsertCell {
                    slot: (n - 1) as u16,
                    bytes,
                }
            }
            n => PageRedo::ReplaceCell {
                slot: (i % (n - 1)) as u16,
                bytes,
            },
        };
        out.push((page, redo));
    }
    out
}

fn measure(
    store: &Arc<PageStore>,
    segment: &Arc<Segment>,
    config: &BenchConfig,
    last: Lsn,
    old_versions: bool,
) -> Result<Latency, StorageError> {
    let per_thread = config.reads / config.readers.max(1);
    let start = Instant::now();
    let threads: Vec<_> = (0..config.readers.max(1))
        .map(|t| {
            let (store, segment, pages) = (store.clone(), segment.clone(), config.pages);
            std::thread::spawn(move || -> Result<Vec<u32>, StorageError> {
                let mut lat = Vec::with_capacity(per_thread);
                let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ (t as u64 + 1);
                for _ in 0..per_thread {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let page = PageId(x % pages);
                    let lsn = if old_versions {
                        Lsn(1 + (x >> 20) % last.get())
                    } else {
                        last
                    };
                    let t0 = Instant::now();
                    match store.get_page(&segment, page, lsn) {
                        Ok(_) | Err(StorageError::PageNotWritten { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    lat.push(t0.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(config.reads);
    for t in threads {
        all.extend(
            t.join()
                .map_err(|_| StorageError::Internal("reader thread panicked".into()))??,
        );
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |n| f64::from(*n) / 1000.0)
    };
    Ok(Latency {
        ops: all.len(),
        ops_per_s: all.len() as f64 / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

/// Opens a segment of `PgId(0)` owning `0..pages` under `dir`, establishes epoch 1 on it, and
/// appends `redo` as a writer would (LSNs 1, 2, ... with backlinks), telling it the VDL is the
/// last record. Returns the segment and the last LSN. Needs a tokio runtime.
pub async fn filled_segment(
    dir: &Path,
    pages: u64,
    redo: &[(PageId, PageRedo)],
) -> Result<(Arc<Segment>, Lsn), StorageError> {
    let (segment, _) = Segment::open(dir, PgId(0), 0..pages)?;
    let segment = Arc::new(segment);
    let epoch = Epoch(1);
    segment.seal(epoch)?;
    segment.truncate(
        epoch,
        Declaration {
            epoch,
            ranges: Vec::new(),
        },
    )?;
    let mut buf = Vec::new();
    let mut prev = Lsn::ZERO;
    for (i, (page, redo)) in redo.iter().enumerate() {
        let lsn = Lsn(i as u64 + 1);
        let (kind, payload) = redo.encode();
        record::encode(&mut buf, lsn, prev, *page, record::FLAG_CPL, kind, &payload);
        prev = lsn;
        if buf.len() >= BATCH_BYTES_MAX - record::RECORD_BYTES_MAX {
            let origin = Origin::Writer {
                epoch,
                vdl_hint: lsn,
                pg_tail: lsn,
            };
            segment.append(&std::mem::take(&mut buf), origin).await?;
        }
    }
    let origin = Origin::Writer {
        epoch,
        vdl_hint: prev,
        pg_tail: prev,
    };
    segment.append(&buf, origin).await?;
    // A heartbeat so the segment knows it is complete up to the last record.
    segment.append(&[], origin).await?;
    Ok((segment, prev))
}

/// Runs the materializer's step (and freezes) until M reaches `last`.
pub async fn materialize_all(
    store: &Arc<PageStore>,
    segment: &Arc<Segment>,
    last: Lsn,
) -> Result<(), StorageError> {
    while store.materialized() < last {
        let (s, seg) = (store.clone(), segment.clone());
        tokio::task::spawn_blocking(move || {
            let stepped = materializer::step(&s, &seg, Lsn::ZERO)?;
            s.freeze_if_due()?;
            if !stepped.progressed() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok::<_, StorageError>(())
        })
        .await
        .map_err(|e| StorageError::Internal(e.to_string()))??;
    }
    Ok(())
}

/// Runs the benchmark in a temporary directory. Needs a tokio runtime (the segment's appends
/// are async).
pub async fn run(config: &BenchConfig) -> Result<BenchReport, StorageError> {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "sixfold-page-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    )));
    let pg = PgId(0);
    // Fill the hot log first (as a writer would), then time materialization alone.
    let (segment, last) =
        filled_segment(&dir.0.join("segments"), config.pages, &redo_stream(config)).await?;
    let page_config = PageArgs::default().resolve(&dir.0)?.store_config(1);
    let (store, _) = PageStore::open(&dir.0.join("pages"), pg, 0..config.pages, page_config)?;
    let store = Arc::new(store);
    let start = Instant::now();
    materialize_all(&store, &segment, last).await?;
    let materialize_secs = start.elapsed().as_secs_f64();
    let (s, seg, c) = (store.clone(), segment.clone(), config.clone());
    let (hit, miss) = tokio::task::spawn_blocking(move || {
        let hit = measure(&s, &seg, &c, last, false)?;
        let miss = measure(&s, &seg, &c, last, true)?;
        Ok::<_, StorageError>((hit, miss))
    })
    .await
    .map_err(|e| StorageError::Internal(e.to_string()))??;
    let status = store.status();
    Ok(BenchReport {
        records: config.records,
        materialize_secs,
        materialize_records_per_s: config.records as f64 / materialize_secs,
        delta_layers: status.delta_layers,
        image_layers: status.image_layers,
        hit,
        miss,
        cache_hits: status.cache_hits,
        cache_misses: status.cache_misses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the benchmark runs end to end on a small configuration and every read succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_benchmark_runs() {
        let config = BenchConfig {
            pages: 50,
            records: 3000,
            reads: 2000,
            readers: 2,
            cell_bytes: 40,
        };
        let report = run(&config).await.unwrap();
        assert_eq!(report.hit.ops + report.miss.ops, 4000);
        assert!(report.materialize_records_per_s > 0.0);
        assert!(report.cache_hits > 0 && report.cache_misses > 0);
    }
}
