//! `sixfold demo`: a whole local cluster as separate OS processes under one data directory.
//!
//! Three meta members (one Raft group) and six storage nodes in three AZ labels; compute joins
//! once it exists. On the first run it initializes the meta group and creates volume 1 once all
//! six storage nodes are Ready. `DIR/cluster.json` lists every process so operators and tests can
//! find them. Running it again on the same directory resumes with all state.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sixfold_log_service::VolumeId;
use sixfold_meta::client::{MetaClient, MetaClientError};
use sixfold_meta::{Command as MetaCommand, CommandError, NodeState};
use tokio::process::{Child, Command};

/// Pages per PG in the demo volume (8 KiB pages: 128 MiB per PG).
pub const DEMO_PAGES_PER_PG: u64 = 16 * 1024;
pub const DEMO_PGS: u32 = 4;
pub const DEMO_VOLUME: VolumeId = VolumeId(1);
const META_MEMBERS: u64 = 3;
const STORAGE_NODES: u64 = 6;
/// How long the first start waits for six Ready storage nodes before giving up on the volume.
const VOLUME_WAIT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where every process keeps its state.
    #[arg(long, default_value = "./sixfold-data")]
    pub data_dir: PathBuf,
    /// The Postgres port (used once the compute node exists).
    #[arg(long, default_value_t = 5432)]
    pub port: u16,
    /// First gRPC port: meta member i listens on base + i, storage node i on base + 100 + i.
    #[arg(long, default_value_t = 47000)]
    pub grpc_port_base: u16,
}

struct Proc {
    role: &'static str,
    id: u64,
    listen: String,
    az: Option<String>,
    child: Child,
    alive: bool,
}

/// The meta members' addresses for a given port base, as `sixfold ctl --meta` takes them.
pub fn meta_list(base: u16) -> String {
    (1..=META_MEMBERS)
        .map(|i| format!("127.0.0.1:{}", base + i as u16))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("while creating {}", args.data_dir.display()))?;
    let dir = args.data_dir.canonicalize()?;
    let fresh = !dir.join("meta-1").exists();
    let exe = std::env::current_exe().context("while locating the sixfold binary")?;
    let base = args.grpc_port_base;
    let members = (1..=META_MEMBERS)
        .map(|i| format!("{i}=127.0.0.1:{}", base + i as u16))
        .collect::<Vec<_>>()
        .join(",");
    let meta_addrs = meta_list(base);

    // The storage nodes share this machine's cores instead of each starting one thread per core.
    let storage_threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get() / STORAGE_NODES as usize)
        .max(1)
        .to_string();
    let mut procs = Vec::new();
    for i in 1..=META_MEMBERS {
        let mut cmd = Command::new(&exe);
        // A meta member's work is small; one async thread each leaves the cores to storage.
        cmd.args(["--worker-threads", "1"])
            .args(["meta", "--id", &i.to_string(), "--members", &members])
            .arg("--data-dir")
            .arg(dir.join(format!("meta-{i}")));
        if fresh && i == 1 {
            cmd.arg("--bootstrap");
        }
        let child = spawn(cmd, &dir.join(format!("meta-{i}.log")))?;
        procs.push(Proc {
            role: "meta",
            id: i,
            listen: format!("127.0.0.1:{}", base + i as u16),
            az: None,
            child,
            alive: true,
        });
    }
    for i in 1..=STORAGE_NODES {
        let listen = format!("127.0.0.1:{}", base + 100 + i as u16);
        let az = format!("az{}", i.div_ceil(2));
        let mut cmd = Command::new(&exe);
        cmd.args(["--worker-threads", &storage_threads])
            .args([
                "storage",
                "--node-id",
                &i.to_string(),
                "--meta",
                &meta_addrs,
                "--listen",
                &listen,
                "--az",
                &az,
            ])
            .arg("--data-dir")
            .arg(dir.join(format!("storage-{i}")));
        let child = spawn(cmd, &dir.join(format!("storage-{i}.log")))?;
        procs.push(Proc {
            role: "storage",
            id: i,
            listen,
            az: Some(az),
            child,
            alive: true,
        });
    }
    write_cluster_file(&dir, &procs, &meta_addrs, args.port)?;
    let meta = MetaClient::from_list(&meta_addrs)?;
    ensure_volume(&meta).await?;
    println!(
        "sixfold demo: {META_MEMBERS} meta members and {STORAGE_NODES} storage nodes running; state in {}",
        dir.display()
    );
    println!("cluster map: {}", dir.join("cluster.json").display());
    println!("try: sixfold ctl --meta {meta_addrs} status");
    println!("Press Ctrl-C to stop.");

    let shutdown = crate::storage_cmd::shutdown_signal();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                for p in procs.iter_mut().filter(|p| p.alive) {
                    if let Ok(Some(status)) = p.child.try_wait() {
                        p.alive = false;
                        eprintln!("sixfold demo: {} {} exited ({status}); the rest keep running", p.role, p.id);
                    }
                }
            }
        }
    }
    println!("sixfold demo: stopping");
    for p in procs.iter_mut().filter(|p| p.alive) {
        if let Some(pid) = p.child.id() {
            // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    for p in procs.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(10), p.child.wait()).await;
        let _ = p.child.start_kill();
    }
    Ok(())
}

/// Creates the demo volume once six storage nodes are Ready (no-op if it exists).
async fn ensure_volume(meta: &MetaClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + VOLUME_WAIT;
    loop {
        let map = meta
            .cluster_map()
            .await
            .context("while reading the cluster map")?;
        if map.volumes.contains_key(&DEMO_VOLUME) {
            return Ok(());
        }
        let ready = map
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Ready)
            .count();
        if ready >= STORAGE_NODES as usize {
            let create = MetaCommand::CreateVolume {
                id: DEMO_VOLUME,
                page_size: 8192,
                pages_per_pg: DEMO_PAGES_PER_PG,
                pg_count: DEMO_PGS,
            };
            match meta.propose(create).await {
                Ok(_) | Err(MetaClientError::Refused(CommandError::VolumeExists(_))) => {
                    println!(
                        "sixfold demo: created volume {DEMO_VOLUME} ({DEMO_PGS} PGs × 6 segments)"
                    );
                    return Ok(());
                }
                Err(e) => return Err(e).context("while creating the demo volume"),
            }
        }
        if Instant::now() > deadline {
            bail!(
                "only {ready} of {STORAGE_NODES} storage nodes became Ready; see the storage-*.log files"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    cmd.spawn().context("while starting a cluster process")
}

fn write_cluster_file(dir: &Path, procs: &[Proc], meta: &str, port: u16) -> anyhow::Result<()> {
    let list: Vec<_> = procs
        .iter()
        .map(|p| json!({"role": p.role, "id": p.id, "pid": p.child.id(), "listen": p.listen, "az": p.az}))
        .collect();
    let body = serde_json::to_vec_pretty(
        &json!({ "meta": meta, "postgres_port": port, "processes": list }),
    )?;
    let tmp = dir.join("cluster.json.tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(tmp, dir.join("cluster.json"))?;
    Ok(())
}
