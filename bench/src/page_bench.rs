//! `sixfold-bench pages`: GetPage@LSN and materialization on one storage segment, beside the
//! physical baseline of this machine: random 8 KiB `pread`s from one file of the same size
//! (what a page server that stored only the latest image in a flat file could do).
//!
//! The segment runs in-process (the page store, layer files and materializer a storage node
//! runs, without gRPC), so the numbers isolate the page path; the log benchmark covers the
//! network.

use std::os::unix::fs::FileExt;
use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;
use sixfold_storage::PAGE_SIZE;
use sixfold_storage::bench_support::{BenchConfig, run as run_pages};

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
    let baseline =
        tokio::task::spawn_blocking(move || pread_baseline(args.pages, args.reads, args.readers))
            .await??;
    println!("{report}");
    println!(
        "baseline pread 8 KiB (one file, page cache): {:.0} ops/s, p50 {:.1} us, p99 {:.1} us",
        baseline.0, baseline.1, baseline.2
    );
    println!(
        "ratio GetPage/pread: hit {:.2}, miss {:.2} (ops/s)",
        report.hit.ops_per_s / baseline.0,
        report.miss.ops_per_s / baseline.0
    );
    Ok(())
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
