//! The six-node loopback placement every log-level test cluster starts from, and starting one
//! of its storage nodes.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sixfold_log_service::client::SegmentClient;
use sixfold_log_service::placement::{NodeInfo, Placement};
use sixfold_log_service::{NodeId, PgId};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Six nodes on free loopback ports in three AZs, every PG on all six; written to
/// `dir/placement.json` for `sixfold storage --placement`.
pub fn six_nodes(dir: &Path, pgs: u32, pages_per_pg: u64) -> (Placement, PathBuf) {
    let nodes: Vec<NodeInfo> = (1..=6u64)
        .map(|i| NodeInfo {
            id: NodeId(i),
            addr: format!("127.0.0.1:{}", free_port()),
            az: format!("az{}", i.div_ceil(2)),
        })
        .collect();
    let placement = Placement::uniform(nodes, pages_per_pg, pgs);
    let path = dir.join("placement.json");
    std::fs::write(&path, serde_json::to_vec(&placement).unwrap()).unwrap();
    (placement, path)
}

/// Starts storage node `i` (0-based) of `placement` as a real `sixfold storage --placement`
/// process with `args` and `env`, its output in a fresh log file under `logs`, and waits until
/// it answers.
pub async fn start_storage(
    logs: &Path,
    data_dir: &Path,
    placement: &Placement,
    placement_path: &Path,
    i: usize,
    args: &[String],
    env: &[(String, String)],
) -> Child {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let log = std::fs::File::create(logs.join(format!("storage-{}.{stamp}.log", i + 1))).unwrap();
    let mut cmd = Command::new(super::BIN);
    cmd.args(["storage", "--node-id", &(i + 1).to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--placement")
        .arg(placement_path)
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let child = cmd.spawn().expect("spawn sixfold storage");
    let node = &placement.nodes[i];
    let client = SegmentClient::with_timeout(node.id, &node.addr, Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.status(PgId(0)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "storage node {i} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}
