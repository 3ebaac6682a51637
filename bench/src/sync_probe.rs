//! How long one durable append takes on this disk when one log syncs alone, and when six logs
//! sync at once: the disk's side of what six copies on one machine cost.
//!
//! In a closed loop, commits/s = committers ÷ commit latency. A one-file commit waits for one
//! `fdatasync`; a six-copy commit waits until four of six logs, syncing at the same time on the
//! same disk, have synced it. The probe writes through the segment's own [`LogFile`] (same
//! preallocation and page-cache window), one `append_durable` of [`PROBE_APPEND_BYTES`] at a
//! time, from one thread and then from six threads on six files.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use sixfold_log_service::flusher::LogFile;
use sixfold_log_service::limits::SEGMENTS_PER_PG;

/// The bytes of one probe append: about one group of a 64-committer run (64 commits of 4
/// records of 140 bytes each would be 35 KiB; a round usually carries half of them).
const PROBE_APPEND_BYTES: usize = 16 * 1024;
/// How long each of the two measurements runs.
const PROBE_DURATION: Duration = Duration::from_secs(1);

/// Mean latency of one durable append, alone and with six logs at once.
#[derive(Debug, Clone, Copy)]
pub struct SyncProbe {
    pub one_stream_us: f64,
    pub six_streams_us: f64,
}

/// Runs the probe with its files in `dir` (removed afterwards). Blocking.
pub fn run(dir: &Path) -> anyhow::Result<SyncProbe> {
    let one_stream_us = streams(dir, 1)?;
    let six_streams_us = streams(dir, SEGMENTS_PER_PG)?;
    Ok(SyncProbe {
        one_stream_us,
        six_streams_us,
    })
}

/// `n` threads, each appending to its own file; the mean latency over all appends.
fn streams(dir: &Path, n: usize) -> anyhow::Result<f64> {
    let results: Vec<anyhow::Result<(u64, Duration)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| scope.spawn(move || one_stream(&dir.join(format!("sync-probe-{n}-{i}.log")))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("sync probe thread panicked")))
            })
            .collect()
    });
    let (mut appends, mut busy) = (0u64, Duration::ZERO);
    for r in results {
        let (a, b) = r?;
        appends += a;
        busy += b;
    }
    Ok(busy.as_secs_f64() * 1e6 / appends.max(1) as f64)
}

fn one_stream(path: &Path) -> anyhow::Result<(u64, Duration)> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("while creating {}", path.display()))?;
    let mut log = LogFile::new(file, 0)?;
    while log.between_appends() {}
    let bytes = vec![0x5Au8; PROBE_APPEND_BYTES];
    let (mut appends, mut busy) = (0u64, Duration::ZERO);
    let until = Instant::now() + PROBE_DURATION;
    while Instant::now() < until {
        let started = Instant::now();
        log.append_durable(&bytes)
            .with_context(|| format!("while appending to {}", path.display()))?;
        busy += started.elapsed();
        appends += 1;
        log.between_appends();
    }
    drop(log);
    std::fs::remove_file(path).with_context(|| format!("while removing {}", path.display()))?;
    Ok((appends, busy))
}
