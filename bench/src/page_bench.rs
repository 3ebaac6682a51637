//! `sixfold-bench pages`: GetPage@LSN and materialization on one storage segment, beside the
//! physical baseline of this machine: random 8 KiB `pread`s from one file of the same size
//! (what a page server that stored only the latest image in a flat file could do).
//!
//! Two measurements: the page path in-process (the page store, layer files and materializer a
//! storage node runs, without gRPC), then GetPage over gRPC from one real `sixfold storage`
//! process after the same redo was written through a QuorumWriter to six of them.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use sixfold_log_service::writer::{QuorumWriter, RecordSpec, WriterConfig};
use sixfold_log_service::{Lsn, PageId};
use sixfold_storage::PAGE_SIZE;
use sixfold_storage::bench_support::{BenchConfig, redo_stream, run as run_pages};
use sixfold_storage::page_client::PageClient;

use crate::procs::StorageCluster;

/// Records per mini-transaction when loading the remote volume.
const LOAD_MTR_RECORDS: usize = 16;
/// How long the remote node may take to materialize everything written.
const MATERIALIZE_WAIT: Duration = Duration::from_secs(120);

#[derive(clap::Args)]
pub struct PagesArgs {
    /// Pages in the protection group.
    #[arg(long, default_value_t = 2000)]
    pub pages: u64,
    /// Redo records written and materialized.
    #[arg(long, default_value_t = 200_000)]
    pub records: usize,
    /// GetPage calls per measurement.
    #[arg(long, default_value_t = 200_000)]
    pub reads: usize,
    /// Reader threads.
    #[arg(long, default_value_t = 2)]
    pub readers: usize,
    /// The `sixfold` binary to run storage nodes from [next to this one].
    #[arg(long)]
    pub sixfold_bin: Option<PathBuf>,
}

pub async fn run(args: PagesArgs) -> anyhow::Result<()> {
    let config = BenchConfig {
        pages: args.pages,
        records: args.records,
        reads: args.reads,
        readers: args.readers,
        ..BenchConfig::default()
    };
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let report = run_pages(&config)
        .await
        .context("while running the page benchmark")?;
    let (pages, reads, readers) = (args.pages, args.reads, args.readers);
    let baseline =
        tokio::task::spawn_blocking(move || pread_baseline(pages, reads, readers)).await??;
    let remote = over_grpc(&args, &config)
        .await
        .context("while measuring GetPage over gRPC")?;
    println!("in-process page store (no gRPC):");
    println!("{report}");
    println!(
        "baseline pread 8 KiB (one file, page cache): {:.0} ops/s, p50 {:.1} us, p99 {:.1} us",
        baseline.0, baseline.1, baseline.2
    );
    println!(
        "ratio in-process GetPage/pread: hit {:.2}, miss {:.2} (ops/s)",
        report.hit.ops_per_s / baseline.0,
        report.miss.ops_per_s / baseline.0
    );
    println!(
        "over gRPC from one storage process ({} readers):",
        args.readers
    );
    for (name, (ops, p50, p99)) in [("hit ", remote.0), ("miss", remote.1)] {
        println!("GetPage {name}: {ops:.0} ops/s, p50 {p50:.1} us, p99 {p99:.1} us");
    }
    Ok(())
}

/// Writes the benchmark's redo to six storage processes, waits until node 1 has materialized it,
/// then reads pages from node 1 at the newest LSN (hits: the newest version is cached) and at the
/// LSN halfway through (misses: an older version rebuilt from layers). Returns
/// ((ops/s, p50 µs, p99 µs) for hits, same for misses).
async fn over_grpc(args: &PagesArgs, config: &BenchConfig) -> anyhow::Result<(Stats, Stats)> {
    let bin = match &args.sixfold_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("sixfold"),
    };
    let dir = tempfile::Builder::new()
        .prefix("sixfold-bench-pages-")
        .tempdir()?;
    let mut cluster = StorageCluster::start(&bin, dir.path(), 1, config.pages, &[])?;
    cluster.wait_ready().await?;
    let writer =
        QuorumWriter::open(cluster.placement().clone(), None, WriterConfig::default()).await?;
    let stream = redo_stream(config);
    let half = stream.len() / 2;
    let (mut mid, mut last) = (Lsn::ZERO, Lsn::ZERO);
    for (i, chunk) in stream.chunks(LOAD_MTR_RECORDS).enumerate() {
        let specs: Vec<RecordSpec> = chunk
            .iter()
            .map(|(page, redo)| {
                let (kind, payload) = redo.encode();
                RecordSpec {
                    page_id: *page,
                    kind,
                    payload: Bytes::from(payload),
                }
            })
            .collect();
        last = writer.submit(&specs).await?.cpl;
        if (i + 1) * LOAD_MTR_RECORDS <= half {
            mid = last;
        }
    }
    writer.wait_durable(last).await?;
    let node = cluster.placement().nodes[0].addr.clone();
    let client = PageClient::with_timeout(&node, Duration::from_secs(10))?;
    let deadline = Instant::now() + MATERIALIZE_WAIT;
    loop {
        let status = client.status().await?;
        if status.iter().all(|s| s.materialized_lsn >= last.get()) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "node 1 did not materialize up to {last:?} within {MATERIALIZE_WAIT:?}: {status:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hits = read_many(&client, config.pages, last, args.reads, args.readers).await?;
    let misses = read_many(&client, config.pages, mid, args.reads, args.readers).await?;
    drop(writer);
    cluster.check_alive()?;
    Ok((hits, misses))
}

/// (ops/s, p50 µs, p99 µs).
type Stats = (f64, f64, f64);

/// `reads` GetPage calls at `lsn` on random pages from `readers` concurrent tasks.
async fn read_many(
    client: &PageClient,
    pages: u64,
    lsn: Lsn,
    reads: usize,
    readers: usize,
) -> anyhow::Result<Stats> {
    let readers = readers.max(1);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..readers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3)?;
            let mut x = 0x2545_f491_4f6c_dd1du64 ^ (r as u64 + 1);
            for _ in 0..reads / readers {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let t = Instant::now();
                client.get_page(PageId(x % pages), lsn).await?;
                h.record(t.elapsed().as_nanos() as u64)?;
            }
            Ok::<_, anyhow::Error>(h)
        }));
    }
    let mut all = Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((
        all.len() as f64 / secs,
        all.value_at_quantile(0.5) as f64 / 1e3,
        all.value_at_quantile(0.99) as f64 / 1e3,
    ))
}

/// Random 8 KiB reads from a file of `pages` pages: (ops/s, p50 µs, p99 µs).
fn pread_baseline(pages: u64, reads: usize, readers: usize) -> anyhow::Result<(f64, f64, f64)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pages");
    let file = std::fs::File::create(&path)?;
    file.set_len(pages * PAGE_SIZE as u64)?;
    let block = vec![7u8; PAGE_SIZE];
    for p in 0..pages {
        file.write_all_at(&block, p * PAGE_SIZE as u64)?;
    }
    file.sync_all()?;
    let readers = readers.max(1);
    let start = Instant::now();
    let hists: Vec<Histogram<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..readers)
            .map(|r| {
                let path = path.clone();
                s.spawn(move || -> anyhow::Result<Histogram<u64>> {
                    let f = std::fs::File::open(&path)?;
                    let mut buf = vec![0u8; PAGE_SIZE];
                    let mut h = Histogram::<u64>::new(3)?;
                    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ r as u64;
                    for _ in 0..reads / readers {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let t = Instant::now();
                        f.read_exact_at(&mut buf, (x % pages) * PAGE_SIZE as u64)?;
                        h.record(t.elapsed().as_nanos() as u64)?;
                    }
                    Ok(h)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader thread"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let secs = start.elapsed().as_secs_f64();
    let mut all = Histogram::<u64>::new(3)?;
    for h in &hists {
        all.add(h)?;
    }
    Ok((
        all.len() as f64 / secs,
        all.value_at_quantile(0.5) as f64 / 1e3,
        all.value_at_quantile(0.99) as f64 / 1e3,
    ))
}
