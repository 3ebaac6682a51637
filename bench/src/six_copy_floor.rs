//! The six-copy floor: the least that six replicas on this machine can cost, measured in the
//! same run as sixfold and the one-file baseline.
//!
//! The one-file baseline says what one copy of the log costs; it cannot say how much of the gap
//! between it and sixfold is the price of six copies on one machine (six fsync streams on one
//! disk, twelve loopback messages a round, seven processes on the same cores) and how much is
//! sixfold's own software. The floor answers that: six `sixfold-bench replica` processes, each
//! a single blocking thread that reads whatever the writer sent, appends it with one `pwrite`
//! and one `fdatasync` through the segment's own [`LogFile`] (same preallocation, same page-cache
//! window) and acks the bytes it holds; and a writer that queues every commit's records, ships
//! everything queued as one frame to all six, and acknowledges a commit once four replicas hold
//! it. No gRPC, no async runtime in the replicas, no index, no CRC checks, no materializer, no
//! gossip, no recovery: only the work no replica can skip. It is a practical floor, not a proof:
//! a log that does all of that work on top will not do much better on the same machine, so
//! `floor / local file` says what six copies can keep here, and `sixfold / floor` is what
//! sixfold's own software costs.
//!
//! The wire format (replica side, trusted bench-only traffic, still checked): the writer sends
//! frames `len: u32 LE ‖ bytes`; the replica answers each group it made durable with the total
//! bytes it holds, `u64 LE`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use anyhow::{Context, anyhow, bail};
use sixfold_log_service::flusher::LogFile;
use sixfold_log_service::limits::{SEGMENTS_PER_PG, WRITE_QUORUM};
use tokio::sync::oneshot;

use crate::local_log::{QUEUE_FULL_BACKOFF, encode_mtr};
use crate::log_bench::{Mtr, Target};

/// Largest frame a replica accepts; the writer never sends more than is queued, and the
/// committers bound that.
const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bytes a replica asks the kernel for in one read.
const READ_BYTES: usize = 1024 * 1024;
/// Bytes queued at the writer before committers wait: a bound like the writer's LAL.
const QUEUE_BYTES_MAX: usize = 16 * 1024 * 1024;
const _: () = assert!(QUEUE_BYTES_MAX <= FRAME_BYTES_MAX);

#[derive(clap::Args)]
pub struct ReplicaArgs {
    /// The log file (created or truncated).
    #[arg(long)]
    file: PathBuf,
}

/// `sixfold-bench replica`: one replica of the floor. Prints its port, serves one writer
/// connection until it closes.
pub fn replica(args: ReplicaArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("while binding a loopback port")?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&args.file)
        .with_context(|| format!("while creating {}", args.file.display()))?;
    let mut log = LogFile::new(file, 0)?;
    while log.between_appends() {}
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let (mut conn, _) = listener.accept()?;
    conn.set_nodelay(true)?;
    let mut read_buf = vec![0u8; READ_BYTES];
    let mut input: Vec<u8> = Vec::with_capacity(READ_BYTES);
    let mut batch: Vec<u8> = Vec::new();
    loop {
        let n = conn.read(&mut read_buf)?;
        if n == 0 {
            return Ok(());
        }
        input.extend_from_slice(&read_buf[..n]);
        // Everything that arrived as whole frames goes to disk as one group.
        let mut at = 0;
        while let Some(len_bytes) = input.get(at..at + 4) {
            let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
            if len > FRAME_BYTES_MAX {
                bail!("frame of {len} bytes exceeds {FRAME_BYTES_MAX}");
            }
            let Some(frame) = input.get(at + 4..at + 4 + len) else {
                break;
            };
            batch.extend_from_slice(frame);
            at += 4 + len;
        }
        input.drain(..at);
        if batch.is_empty() {
            continue;
        }
        log.append_durable(&batch)?;
        batch.clear();
        conn.write_all(&log.end().to_le_bytes())?;
        log.between_appends();
    }
}

struct Queue {
    bytes: Vec<u8>,
    /// Total bytes ever queued: the stream offset after the last queued commit.
    end: u64,
    stop: bool,
}

struct Durable {
    /// Bytes held by a write quorum of replicas.
    through: u64,
    failed: Option<String>,
    /// Commits waiting for `through` to reach their end offset.
    waiters: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
}

struct Shared {
    queue: Mutex<Queue>,
    queued: Condvar,
    durable: Mutex<Durable>,
}

impl Shared {
    fn fail(&self, why: String) {
        let mut d = self.durable.lock().expect("floor lock");
        d.failed.get_or_insert(why);
        // Dropping the senders fails every waiting commit.
        d.waiters.clear();
    }
}

/// The floor's writer and its six replica processes; dropping it stops them.
pub struct SixCopyFloor {
    shared: Arc<Shared>,
    children: Vec<Child>,
    /// The next LSN to allocate; the replicas never look at records, only at their bytes.
    next_lsn: AtomicU64,
}

impl SixCopyFloor {
    /// Starts six replicas of `bench` (this benchmark's own binary) with their logs in `dir`.
    pub fn start(bench: &Path, dir: &Path) -> anyhow::Result<SixCopyFloor> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                bytes: Vec::new(),
                end: 0,
                stop: false,
            }),
            queued: Condvar::new(),
            durable: Mutex::new(Durable {
                through: 0,
                failed: None,
                waiters: BTreeMap::new(),
            }),
        });
        let mut floor = SixCopyFloor {
            shared: shared.clone(),
            children: Vec::new(),
            next_lsn: AtomicU64::new(1),
        };
        let mut conns = Vec::new();
        for i in 0..SEGMENTS_PER_PG {
            let path = dir.join(format!("floor-{}.log", i + 1));
            let mut child = Command::new(bench)
                .arg("replica")
                .arg("--file")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("while starting floor replica {}", i + 1))?;
            let stdout = child.stdout.take().context("replica stdout")?;
            floor.children.push(child);
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            let port: u16 = line
                .trim()
                .parse()
                .with_context(|| format!("replica {} printed {line:?}, not a port", i + 1))?;
            let conn = TcpStream::connect(("127.0.0.1", port))
                .with_context(|| format!("while connecting to replica {}", i + 1))?;
            conn.set_nodelay(true)?;
            conns.push(conn);
        }
        let acked = Arc::new(Mutex::new([0u64; SEGMENTS_PER_PG]));
        for (i, conn) in conns.iter().enumerate() {
            let (conn, shared, acked) = (conn.try_clone()?, shared.clone(), acked.clone());
            thread::Builder::new()
                .name(format!("floor-ack-{}", i + 1))
                .spawn(move || receive_acks(i, conn, &shared, &acked))?;
        }
        thread::Builder::new()
            .name("floor-sender".into())
            .spawn(move || send_frames(conns, &shared))?;
        Ok(floor)
    }

    /// Process ids of the replicas, for CPU accounting.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }
}

impl Drop for SixCopyFloor {
    fn drop(&mut self) {
        self.shared.queue.lock().expect("floor lock").stop = true;
        self.shared.queued.notify_all();
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// Ships everything queued, as one frame, to every replica.
fn send_frames(conns: Vec<TcpStream>, shared: &Shared) {
    let mut batch = Vec::new();
    let mut frame = Vec::new();
    loop {
        {
            let mut q = shared.queue.lock().expect("floor lock");
            while q.bytes.is_empty() && !q.stop {
                q = shared.queued.wait(q).expect("floor lock");
            }
            if q.stop {
                return;
            }
            std::mem::swap(&mut batch, &mut q.bytes);
        }
        frame.clear();
        frame.extend_from_slice(&(batch.len() as u32).to_le_bytes());
        frame.extend_from_slice(&batch);
        batch.clear();
        for (i, mut conn) in conns.iter().enumerate() {
            if let Err(e) = conn.write_all(&frame) {
                shared.fail(format!("sending to replica {}: {e}", i + 1));
                return;
            }
        }
    }
}

/// Reads replica `i`'s acks and moves the quorum point.
fn receive_acks(
    i: usize,
    mut conn: TcpStream,
    shared: &Shared,
    acked: &Mutex<[u64; SEGMENTS_PER_PG]>,
) {
    let mut buf = [0u8; 8];
    loop {
        if let Err(e) = conn.read_exact(&mut buf) {
            shared.fail(format!("replica {} stopped acking: {e}", i + 1));
            return;
        }
        let mut sorted = {
            let mut a = acked.lock().expect("floor lock");
            a[i] = u64::from_le_bytes(buf);
            *a
        };
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = sorted[WRITE_QUORUM - 1];
        let reached = {
            let mut d = shared.durable.lock().expect("floor lock");
            if quorum <= d.through {
                continue;
            }
            d.through = quorum;
            let waiting = d.waiters.split_off(&(quorum + 1));
            std::mem::replace(&mut d.waiters, waiting)
        };
        for waiter in reached.into_values().flatten() {
            let _ = waiter.send(());
        }
    }
}

impl Target for SixCopyFloor {
    async fn commit(&self, mtr: &Mtr) -> anyhow::Result<()> {
        let bytes = encode_mtr(mtr, &self.next_lsn);
        let end = loop {
            {
                let mut q = self.shared.queue.lock().expect("floor lock");
                if q.bytes.is_empty() || q.bytes.len() + bytes.len() <= QUEUE_BYTES_MAX {
                    q.bytes.extend_from_slice(&bytes);
                    q.end += bytes.len() as u64;
                    break q.end;
                }
            }
            // The replicas are behind by the whole queue: wait as the writer's LAL would.
            tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
        };
        self.shared.queued.notify_one();
        let reached = {
            let mut d = self.shared.durable.lock().expect("floor lock");
            if let Some(why) = &d.failed {
                return Err(anyhow!("the six-copy floor failed: {why}"));
            }
            if d.through >= end {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            d.waiters.entry(end).or_default().push(tx);
            rx
        };
        reached
            .await
            .map_err(|_| anyhow!("the six-copy floor failed while a commit waited"))
    }
}
