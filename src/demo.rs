//! `sixfold demo`: a whole local cluster as separate OS processes under one data directory.
//!
//! Today that is six storage nodes in three AZ labels; the meta group and compute join as they
//! are built. `DIR/cluster.json` lists every process so operators and tests can find them.
//! Running it again on the same directory resumes with all state.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use sixfold_log_service::NodeId;
use sixfold_log_service::placement::{NodeInfo, Placement};
use tokio::process::{Child, Command};

/// Pages per PG in the demo volume (8 KiB pages: 128 MiB per PG).
const DEMO_PAGES_PER_PG: u64 = 16 * 1024;
const DEMO_PGS: u32 = 4;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where every process keeps its state.
    #[arg(long, default_value = "./sixfold-data")]
    pub data_dir: PathBuf,
    /// The Postgres port (used once the compute node exists).
    #[arg(long, default_value_t = 5432)]
    pub port: u16,
    /// First gRPC port; storage node i listens on base + i.
    #[arg(long, default_value_t = 47100)]
    pub grpc_port_base: u16,
}

struct Proc {
    role: &'static str,
    id: u64,
    listen: String,
    child: Child,
    alive: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("while creating {}", args.data_dir.display()))?;
    let dir = args.data_dir.canonicalize()?;
    let placement_path = dir.join("placement.json");
    let placement = if placement_path.exists() {
        Placement::load(&placement_path)?
    } else {
        let nodes = (1..=6u64)
            .map(|i| NodeInfo {
                id: NodeId(i),
                addr: format!("127.0.0.1:{}", args.grpc_port_base + i as u16),
                az: format!("az{}", i.div_ceil(2)),
            })
            .collect();
        let placement = Placement::uniform(nodes, DEMO_PAGES_PER_PG, DEMO_PGS);
        std::fs::write(&placement_path, serde_json::to_vec_pretty(&placement)?)?;
        placement
    };
    let exe = std::env::current_exe().context("while locating the sixfold binary")?;
    let mut procs = Vec::new();
    for node in &placement.nodes {
        let data = dir.join(format!("storage-{}", node.id));
        let child = spawn(&exe, &dir, node, &data, &placement_path)?;
        procs.push(Proc {
            role: "storage",
            id: node.id.get(),
            listen: node.addr.clone(),
            child,
            alive: true,
        });
    }
    write_cluster_file(&dir, &procs)?;
    println!(
        "sixfold demo: {} storage nodes running; state in {}",
        procs.len(),
        dir.display()
    );
    println!("cluster map: {}", dir.join("cluster.json").display());
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

fn spawn(
    exe: &Path,
    dir: &Path,
    node: &NodeInfo,
    data: &Path,
    placement: &Path,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("storage-{}.log", node.id)))?;
    Command::new(exe)
        .arg("storage")
        .arg("--node-id")
        .arg(node.id.get().to_string())
        .arg("--data-dir")
        .arg(data)
        .arg("--placement")
        .arg(placement)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("while starting storage node {}", node.id))
}

fn write_cluster_file(dir: &Path, procs: &[Proc]) -> anyhow::Result<()> {
    let list: Vec<_> = procs
        .iter()
        .map(|p| json!({"role": p.role, "id": p.id, "pid": p.child.id(), "listen": p.listen}))
        .collect();
    let body = serde_json::to_vec_pretty(&json!({ "processes": list }))?;
    let tmp = dir.join("cluster.json.tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(tmp, dir.join("cluster.json"))?;
    Ok(())
}
