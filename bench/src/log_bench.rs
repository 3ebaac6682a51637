//! `sixfold-bench log`: commit throughput and latency of the log path against the physical limit
//! of the same disk, measured in the same run.
//!
//! For each committer count, that many tokio tasks commit mini-transactions in a closed loop
//! (each waits for its commit before sending the next) for a warm-up and then the measured
//! seconds, three times:
//! 1. through a [`QuorumWriter`] to six real `sixfold storage` processes: acked when 4 of 6 have
//!    fsync'd it and the VDL has reached it;
//! 2. through the six-copy floor ([`SixCopyFloor`]): six minimal replica processes, acked when
//!    4 of 6 have fsync'd it, with nothing a storage node could leave out left in;
//! 3. to one local file with group commit and `sync_data` ([`LocalLog`]): the same records, the
//!    same bytes, the same boxcar batching, one copy, no network.
//!
//! All three write under the same directory, so all pay for the same disk. `sixfold / local`
//! is what the replicated log path costs on this machine; `floor / local` is what six copies
//! with nothing but system calls keep of one copy's throughput here; `sixfold / floor` is what
//! sixfold's own software costs on top of the six copies.

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::json;
use sixfold_log_service::PageId;
use sixfold_log_service::limits::{MTR_RECORDS_MAX, RECORD_PAYLOAD_BYTES_MAX, VOLUME_PGS_MAX};
use sixfold_log_service::writer::{QuorumWriter, RecordSpec, WriterConfig};
use tokio::task::JoinSet;

use crate::local_log::LocalLog;
use crate::procs::StorageCluster;
use crate::six_copy_floor::SixCopyFloor;
use crate::sync_probe::{self, SyncProbe};

/// Commits before measuring starts: connections, page cache and file growth settle.
const WARMUP: Duration = Duration::from_secs(1);
/// Pages per PG of the benchmark volume; records spread over them.
const BENCH_PAGES_PER_PG: u64 = 1024;
/// Concurrent committers in one level.
const COMMITTERS_MAX: usize = 4096;
/// Seconds measured per level.
const SECONDS_MAX: u64 = 3600;
/// Longest commit latency the histograms hold exactly; longer ones are clamped to it.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Opening the writer against fresh storage nodes (recovery of empty segments).
const WRITER_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The record kind the benchmark writes; log-service never interprets it.
const BENCH_RECORD_KIND: u8 = 0xBE;
/// Kernel clock ticks per second for /proc CPU times (USER_HZ, 100 on every Linux we run on).
const CLOCK_TICKS_PER_S: f64 = 100.0;

#[derive(clap::Args)]
pub struct LogArgs {
    /// The `sixfold` binary to run storage nodes from [default: `sixfold` next to this binary].
    #[arg(long)]
    sixfold_bin: Option<PathBuf>,
    /// Seconds measured per committer count (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Committer counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    committers: Vec<usize>,
    /// Payload bytes of each redo record.
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Records in each commit (one mini-transaction; the last is its CPL).
    #[arg(long, default_value_t = 4)]
    records_per_commit: usize,
    /// Protection groups in the volume; 1 matches the one-file baseline most closely.
    #[arg(long, default_value_t = 1)]
    pgs: u32,
    /// Directory for the storage nodes' data and the baseline file (must be empty or absent;
    /// kept afterwards) [default: a temporary directory, removed afterwards].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// An extra argument for every `sixfold storage` process (repeatable), e.g.
    /// `--storage-arg=--page-upload-ms=3600000` to see what the uploader costs.
    #[arg(long, allow_hyphen_values = true)]
    storage_arg: Vec<String>,
}

/// One commit's records: the pages they change and the payload each carries.
pub struct Mtr {
    pub page_ids: Vec<u64>,
    pub kind: u8,
    pub payload: Bytes,
}

/// Something that makes a mini-transaction durable.
pub trait Target: Send + Sync + 'static {
    fn commit(&self, mtr: &Mtr) -> impl Future<Output = anyhow::Result<()>> + Send;
}

struct Sixfold {
    writer: QuorumWriter,
}

impl Target for Sixfold {
    async fn commit(&self, mtr: &Mtr) -> anyhow::Result<()> {
        let specs: Vec<RecordSpec> = mtr
            .page_ids
            .iter()
            .map(|p| RecordSpec {
                page_id: PageId(*p),
                kind: mtr.kind,
                payload: mtr.payload.clone(),
            })
            .collect();
        self.writer.commit(&specs).await?;
        Ok(())
    }
}

/// What every committer writes, and how it picks pages.
#[derive(Clone)]
struct Workload {
    records_per_commit: usize,
    payload: Bytes,
    pgs: u32,
}

impl Workload {
    /// The `seq`th commit of committer `c`. Records of one commit go to different PGs when there
    /// are several, as a B+tree split or a multi-row update would.
    fn mtr(&self, c: usize, seq: u64) -> Mtr {
        let page_ids = (0..self.records_per_commit)
            .map(|i| {
                let pg = (c as u64 + i as u64 + seq) % self.pgs as u64;
                let page = (c * self.records_per_commit + i) as u64 % BENCH_PAGES_PER_PG;
                pg * BENCH_PAGES_PER_PG + page
            })
            .collect();
        Mtr {
            page_ids,
            kind: BENCH_RECORD_KIND,
            payload: self.payload.clone(),
        }
    }
}

/// One target at one committer count.
#[derive(Debug, Clone, Copy)]
struct LevelResult {
    commits: u64,
    commits_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU cores busy on average: the processes that hold the copies (storage nodes or floor
    /// replicas; none for the local file), and this process.
    copies_cpu_cores: f64,
    bench_cpu_cores: f64,
}

impl LevelResult {
    fn to_json(self) -> serde_json::Value {
        json!({
            "commits": self.commits,
            "commits_per_s": self.commits_per_s,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "copies_cpu_cores": self.copies_cpu_cores,
            "bench_cpu_cores": self.bench_cpu_cores,
        })
    }
}

struct Level {
    committers: usize,
    sixfold: LevelResult,
    floor: LevelResult,
    local: LevelResult,
}

impl Level {
    /// sixfold / local file: what the replicated log path keeps of one copy's throughput.
    fn ratio(&self) -> f64 {
        self.sixfold.commits_per_s / self.local.commits_per_s
    }

    /// floor / local file: what six minimal replicas keep of it on this machine.
    fn floor_ratio(&self) -> f64 {
        self.floor.commits_per_s / self.local.commits_per_s
    }

    /// sixfold / floor: what sixfold's own software keeps of the six-copy floor.
    fn software_ratio(&self) -> f64 {
        self.sixfold.commits_per_s / self.floor.commits_per_s
    }
}

pub async fn run(args: LogArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let command = command_line();
    let bin = match &args.sixfold_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .context("while locating this binary")?
            .with_file_name("sixfold"),
    };
    // Held until the end: dropping it removes the temporary directory.
    let (_temp, dir) = match &args.dir {
        Some(d) => (None, prepare_dir(d)?),
        None => {
            let t = tempfile::Builder::new()
                .prefix("sixfold-bench-")
                .tempdir()
                .context("while creating a temporary directory")?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let fs = filesystem_of(&dir).unwrap_or_else(|| "unknown filesystem".into());
    progress(format!(
        "data in {} ({fs}); storage binary {}",
        dir.display(),
        bin.display()
    ));

    let mut cluster =
        StorageCluster::start(&bin, &dir, args.pgs, BENCH_PAGES_PER_PG, &args.storage_arg)?;
    cluster.wait_ready().await?;
    let storage_pids = cluster.pids();
    let writer = tokio::time::timeout(
        WRITER_OPEN_TIMEOUT,
        QuorumWriter::open(cluster.placement().clone(), None, WriterConfig::default()),
    )
    .await
    .context("while opening the quorum writer: timed out")?
    .context("while opening the quorum writer")?;
    let sixfold = Arc::new(Sixfold { writer });
    let bench = std::env::current_exe().context("while locating this binary")?;
    let floor = Arc::new(SixCopyFloor::start(&bench, &dir)?);
    let floor_pids = floor.pids();
    let local = Arc::new(LocalLog::create(&dir.join("local-file.log"))?);
    let workload = Workload {
        records_per_commit: args.records_per_commit,
        payload: Bytes::from(vec![0x5A; args.record_bytes]),
        pgs: args.pgs,
    };
    let measure = Duration::from_secs(args.seconds);
    let probe_dir = dir.clone();
    let probe = tokio::task::spawn_blocking(move || sync_probe::run(&probe_dir))
        .await
        .context("the sync probe panicked")??;
    progress(format!(
        "a 16 KiB append + fdatasync: {:.0} us with one log syncing, {:.0} us each with six at once",
        probe.one_stream_us, probe.six_streams_us
    ));

    let mut levels = Vec::new();
    for &committers in &args.committers {
        let s = measured(
            &storage_pids,
            measure,
            closed_loop(sixfold.clone(), &workload, committers, measure),
        )
        .await?;
        cluster.check_alive()?;
        report_level(committers, "sixfold", &s);
        let f = measured(
            &floor_pids,
            measure,
            closed_loop(floor.clone(), &workload, committers, measure),
        )
        .await?;
        report_level(committers, "six-copy floor", &f);
        let l = measured(
            &[],
            measure,
            closed_loop(local.clone(), &workload, committers, measure),
        )
        .await?;
        report_level(committers, "local file", &l);
        levels.push(Level {
            committers,
            sixfold: s,
            floor: f,
            local: l,
        });
    }
    drop(sixfold);
    drop(floor);
    drop(local);
    // Kills the storage processes; an early return above does the same through Drop.
    drop(cluster);

    if args.json {
        let out = json!({
            "command": command,
            "records_per_commit": args.records_per_commit,
            "record_bytes": args.record_bytes,
            "pgs": args.pgs,
            "seconds_per_level": args.seconds,
            "warmup_seconds": WARMUP.as_secs(),
            "dir": dir.display().to_string(),
            "filesystem": fs,
            "sync_probe": {
                "one_stream_us": probe.one_stream_us,
                "six_streams_us": probe.six_streams_us,
            },
            "levels": levels.iter().map(|l| json!({
                "committers": l.committers,
                "sixfold": l.sixfold.to_json(),
                "six_copy_floor": l.floor.to_json(),
                "local_file": l.local.to_json(),
                "ratio": l.ratio(),
                "floor_ratio": l.floor_ratio(),
                "sixfold_to_floor": l.software_ratio(),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", table(&command, &args, &dir, &fs, &probe, &levels));
    }
    Ok(())
}

fn validate(args: &LogArgs) -> anyhow::Result<()> {
    if args.seconds == 0 || args.seconds > SECONDS_MAX {
        bail!("--seconds must be in 1..={SECONDS_MAX}");
    }
    if args.committers.is_empty()
        || args
            .committers
            .iter()
            .any(|c| *c == 0 || *c > COMMITTERS_MAX)
    {
        bail!("--committers needs counts in 1..={COMMITTERS_MAX}");
    }
    if args.record_bytes > RECORD_PAYLOAD_BYTES_MAX {
        bail!("--record-bytes must be at most {RECORD_PAYLOAD_BYTES_MAX}");
    }
    if args.records_per_commit == 0 || args.records_per_commit > MTR_RECORDS_MAX {
        bail!("--records-per-commit must be in 1..={MTR_RECORDS_MAX}");
    }
    if args.pgs == 0 || args.pgs as usize > VOLUME_PGS_MAX {
        bail!("--pgs must be in 1..={VOLUME_PGS_MAX}");
    }
    Ok(())
}

/// Creates `dir` if needed and refuses one with content: old segments would be recovered and
/// change what is measured.
fn prepare_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
    if std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "--dir {} is not empty; give an empty or new directory",
            dir.display()
        );
    }
    Ok(dir.canonicalize()?)
}

/// Runs `committers` closed-loop committers against `target` for the warm-up plus `measure`, and
/// returns the latencies of the commits that completed inside the measured window.
async fn closed_loop<T: Target>(
    target: Arc<T>,
    workload: &Workload,
    committers: usize,
    measure: Duration,
) -> anyhow::Result<Histogram<u64>> {
    let measure_from = Instant::now() + WARMUP;
    let until = measure_from + measure;
    let mut tasks = JoinSet::new();
    for c in 0..committers {
        let target = target.clone();
        let workload = workload.clone();
        tasks.spawn(async move {
            let mut hist = new_histogram();
            let mut seq = 0u64;
            loop {
                let mtr = workload.mtr(c, seq);
                let started = Instant::now();
                if started >= until {
                    return Ok::<_, anyhow::Error>(hist);
                }
                target.commit(&mtr).await?;
                seq += 1;
                let done = Instant::now();
                if done >= measure_from && done < until {
                    hist.saturating_record((done - started).as_micros() as u64);
                }
            }
        });
    }
    let mut all = new_histogram();
    // An error drops `tasks`, which aborts the other committers.
    while let Some(joined) = tasks.join_next().await {
        let hist = joined.context("a committer task panicked")??;
        all.add(&hist).context("while merging latency histograms")?;
    }
    Ok(all)
}

fn report_level(committers: usize, target: &str, r: &LevelResult) {
    progress(format!(
        "{committers:>4} committers: {target:<14} {:>9.0} commits/s, p50 {:.2} ms, p99 {:.2} ms; CPU cores busy: copies {:.2}, bench {:.2}",
        r.commits_per_s, r.p50_ms, r.p99_ms, r.copies_cpu_cores, r.bench_cpu_cores
    ));
}

/// Runs one level and adds its rates and the CPU that `copies_pids` and the bench used.
async fn measured(
    copies_pids: &[u32],
    measure: Duration,
    level: impl Future<Output = anyhow::Result<Histogram<u64>>>,
) -> anyhow::Result<LevelResult> {
    let started = Instant::now();
    let copies_before = copies_pids
        .iter()
        .filter_map(|p| cpu_ticks(&p.to_string()))
        .sum::<u64>();
    let bench_before = cpu_ticks("self");
    let hist = level.await?;
    let commits = hist.len();
    let wall_s = started.elapsed().as_secs_f64();
    let copies_after = copies_pids
        .iter()
        .filter_map(|p| cpu_ticks(&p.to_string()))
        .sum::<u64>();
    let bench_after = cpu_ticks("self");
    let cores =
        |before: u64, after: u64| after.saturating_sub(before) as f64 / CLOCK_TICKS_PER_S / wall_s;
    Ok(LevelResult {
        commits,
        // Only commits that completed inside the measured window are counted.
        commits_per_s: commits as f64 / measure.as_secs_f64(),
        p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        copies_cpu_cores: cores(copies_before, copies_after),
        bench_cpu_cores: match (bench_before, bench_after) {
            (Some(b), Some(a)) => cores(b, a),
            _ => f64::NAN,
        },
    })
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

fn table(
    command: &str,
    args: &LogArgs,
    dir: &Path,
    fs: &str,
    probe: &SyncProbe,
    levels: &[Level],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "$ {command}");
    let _ = writeln!(
        out,
        "log path: 6 storage processes vs 6 minimal replicas vs one local file (all fsync), {} records x {} B per commit",
        args.records_per_commit, args.record_bytes
    );
    let _ = writeln!(
        out,
        "           |          sixfold          |       six-copy floor      |         local file        | ratios"
    );
    let _ = writeln!(
        out,
        "committers | commits/s  p50 ms  p99 ms | commits/s  p50 ms  p99 ms | commits/s  p50 ms  p99 ms | sixfold/local  floor/local  sixfold/floor"
    );
    for l in levels {
        let _ = write!(out, "{:>10} |", l.committers);
        for r in [&l.sixfold, &l.floor, &l.local] {
            let _ = write!(
                out,
                " {:>9.0}  {:>6.2}  {:>6.2} |",
                r.commits_per_s, r.p50_ms, r.p99_ms
            );
        }
        let _ = writeln!(
            out,
            " {:>13.2}  {:>11.2}  {:>13.2}",
            l.ratio(),
            l.floor_ratio(),
            l.software_ratio()
        );
    }
    let _ = writeln!(
        out,
        "disk: a 16 KiB append + fdatasync takes {:.0} us with one log syncing, {:.0} us each with six logs syncing at once",
        probe.one_stream_us, probe.six_streams_us
    );
    let _ = writeln!(
        out,
        "({} s per level after {} s warm-up; {} PG(s); all logs under {} ({fs}))",
        args.seconds,
        WARMUP.as_secs(),
        args.pgs,
        dir.display()
    );
    out
}

/// This process's command line, quoted so that it can be pasted back into a shell.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn progress(line: String) {
    eprintln!("sixfold-bench: {line}");
}

/// User + system CPU ticks of `/proc/<pid>` ("self" for this process), if readable (Linux).
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is the first, utime the 12th, stime
    // the 13th (fields 14 and 15 of proc(5)).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The filesystem type holding `dir` (from /proc/self/mountinfo): a tmpfs would make every
/// fsync free and the comparison meaningless, so the report names it.
fn filesystem_of(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let mut parts = line.split(" - ");
        let left: Vec<&str> = parts.next()?.split_whitespace().collect();
        let right: Vec<&str> = parts.next()?.split_whitespace().collect();
        let mount_point = Path::new(left.get(4)?);
        if dir.starts_with(mount_point) {
            let depth = mount_point.components().count();
            if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, right.first()?.to_string()));
            }
        }
    }
    best.map(|(_, fs)| fs)
}
