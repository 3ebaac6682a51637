//! Six real `sixfold storage` processes on free loopback ports, for as long as a
//! [`StorageCluster`] lives.
//!
//! The cluster is a guard: dropping it kills and reaps every child, so a benchmark that fails
//! half-way (or panics) leaves no storage process behind.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sixfold_log_service::client::SegmentClient;
use sixfold_log_service::limits::SEGMENTS_PER_PG;
use sixfold_log_service::placement::{NodeInfo, Placement};
use sixfold_log_service::{NodeId, PgId};

/// How long six freshly started storage nodes may take to answer.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Between readiness probes of one node.
const STARTUP_PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// One readiness probe; short, so a node that is not listening yet is retried soon.
const STARTUP_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How much of a failed node's log to show.
const LOG_TAIL_BYTES_MAX: usize = 2000;

pub struct StorageCluster {
    placement: Placement,
    /// One per node, in placement order, with the file its output goes to.
    children: Vec<(NodeId, Child, PathBuf)>,
}

impl StorageCluster {
    /// Starts six storage nodes of `bin` with their data and logs under `dir`, holding a volume of
    /// `pg_count` PGs of `pages_per_pg` pages each; `extra_args` go to every `sixfold storage`.
    /// Returns once the processes are spawned; call [`StorageCluster::wait_ready`] before
    /// writing.
    pub fn start(
        bin: &Path,
        dir: &Path,
        pg_count: u32,
        pages_per_pg: u64,
        extra_args: &[String],
    ) -> anyhow::Result<StorageCluster> {
        if !bin.is_file() {
            bail!(
                "no sixfold binary at {} (build it with `cargo build --release --bin sixfold`, or pass --sixfold-bin)",
                bin.display()
            );
        }
        let ports = free_ports(SEGMENTS_PER_PG)?;
        let nodes: Vec<NodeInfo> = ports
            .iter()
            .enumerate()
            .map(|(i, port)| NodeInfo {
                id: NodeId(i as u64 + 1),
                addr: format!("127.0.0.1:{port}"),
                az: format!("az{}", i / 2 + 1),
            })
            .collect();
        let placement = Placement::uniform(nodes, pages_per_pg, pg_count);
        let placement_path = dir.join("placement.json");
        std::fs::write(&placement_path, serde_json::to_vec_pretty(&placement)?)
            .with_context(|| format!("while writing {}", placement_path.display()))?;

        let mut cluster = StorageCluster {
            placement: placement.clone(),
            children: Vec::new(),
        };
        // Six processes share this machine: each gets its share of the cores for async work
        // rather than one thread per core (12 runnable workers on 2 cores only add switches).
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get() / SEGMENTS_PER_PG)
            .max(1)
            .to_string();
        for node in &placement.nodes {
            let data = dir.join(format!("storage-{}", node.id));
            let log_path = dir.join(format!("storage-{}.log", node.id));
            let log = File::create(&log_path)
                .with_context(|| format!("while creating {}", log_path.display()))?;
            let child = Command::new(bin)
                .args(["--worker-threads", &threads])
                .arg("storage")
                .args(extra_args)
                .arg("--node-id")
                .arg(node.id.get().to_string())
                .arg("--data-dir")
                .arg(&data)
                .arg("--placement")
                .arg(&placement_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| {
                    format!(
                        "while starting storage node {} from {}",
                        node.id,
                        bin.display()
                    )
                })?;
            // Pushed at once so that the guard owns it even if a later spawn fails.
            cluster.children.push((node.id, child, log_path));
        }
        Ok(cluster)
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Waits until every node answers a status request, or fails early with the log of a node
    /// that exited.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for (id, child, log_path) in &mut self.children {
            let addr = &self
                .placement
                .node(*id)
                .expect("node from this placement")
                .addr;
            let client = SegmentClient::with_timeout(*id, addr, STARTUP_PROBE_TIMEOUT)
                .map_err(|s| anyhow::anyhow!("bad address {addr}: {}", s.message()))?;
            loop {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "storage node {id} exited during startup ({status}); its log:\n{}",
                        log_tail(log_path)
                    );
                }
                match client.status(PgId(0)).await {
                    Ok(_) => break,
                    Err(e) if Instant::now() >= deadline => {
                        bail!(
                            "storage node {id} at {addr} did not answer within {STARTUP_TIMEOUT:?}: {}; its log:\n{}",
                            e.message(),
                            log_tail(log_path)
                        )
                    }
                    Err(_) => tokio::time::sleep(STARTUP_PROBE_INTERVAL).await,
                }
            }
        }
        Ok(())
    }

    /// Fails if any node has exited: a benchmark whose storage died measured nothing.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (id, child, log_path) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "storage node {id} exited ({status}); its log:\n{}",
                    log_tail(log_path)
                );
            }
        }
        Ok(())
    }

    /// Process ids, for watching CPU use from outside.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c, _)| c.id()).collect()
    }
}

impl Drop for StorageCluster {
    fn drop(&mut self) {
        // SIGKILL is enough: every ack was fsync'd, and the data directory is thrown away or kept
        // only for inspection.
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
        }
        for (_, child, _) in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// `n` distinct free loopback ports: all are held bound at once so that none is handed out
/// twice, then released for the storage nodes to take.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("while looking for a free port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let from = bytes.len().saturating_sub(LOG_TAIL_BYTES_MAX);
            String::from_utf8_lossy(&bytes[from..]).into_owned()
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
