//! The six-node loopback placement every log-level test cluster starts from.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use sixfold_log_service::NodeId;
use sixfold_log_service::placement::{NodeInfo, Placement};

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
