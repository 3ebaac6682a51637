//! A real cluster for end-to-end tests: six `sixfold storage` processes on loopback TCP, each
//! with its own data directory, that tests can kill -9, stop, restart and inspect.

#![allow(dead_code)]

pub mod meta_cluster;
pub mod pages;
pub mod placement;

pub use placement::free_port;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use sixfold_log_service::client::SegmentClient;
use sixfold_log_service::limits::BATCH_BYTES_MAX;
use sixfold_log_service::placement::Placement;
use sixfold_log_service::record;
use sixfold_log_service::segment::SegmentState;
use sixfold_log_service::{Lsn, PgId};

pub const BIN: &str = env!("CARGO_BIN_EXE_sixfold");

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub placement: Placement,
    pub placement_path: PathBuf,
    nodes: Vec<Option<Child>>,
}

impl Cluster {
    /// Starts six storage nodes hosting `pgs` PGs of `pages_per_pg` pages each.
    pub async fn start(pgs: u32, pages_per_pg: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (placement, placement_path) = placement::six_nodes(dir.path(), pgs, pages_per_pg);
        let mut cluster = Cluster {
            dir,
            placement,
            placement_path,
            nodes: (0..6).map(|_| None).collect(),
        };
        for i in 0..6 {
            cluster.start_node(i).await;
        }
        cluster
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("storage-{}", i + 1))
    }

    pub fn segment_log(&self, i: usize, pg: u32) -> PathBuf {
        self.node_dir(i)
            .join("segments")
            .join(format!("pg-{pg}.log"))
    }

    /// Starts node `i` (0-based) and waits until it answers.
    pub async fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} already running");
        let child = placement::start_storage(
            self.dir.path(),
            &self.node_dir(i),
            &self.placement,
            &self.placement_path,
            i,
            &[],
            &[],
        )
        .await;
        self.nodes[i] = Some(child);
    }

    pub fn kill9(&mut self, i: usize) {
        let mut child = self.nodes[i].take().expect("node running");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    pub fn signal(&self, i: usize, sig: i32) {
        let pid = self.nodes[i].as_ref().expect("node running").id();
        // SAFETY: kill(2) on a child we own.
        assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
    }

    pub fn client(&self, i: usize) -> SegmentClient {
        let node = &self.placement.nodes[i];
        SegmentClient::with_timeout(node.id, &node.addr, Duration::from_secs(5)).unwrap()
    }

    pub async fn state(&self, i: usize, pg: u32) -> SegmentState {
        self.client(i).status(PgId(pg)).await.expect("status")
    }

    /// Every record node `i` holds for `pg`: lsn -> exact bytes.
    pub async fn records(&self, i: usize, pg: u32) -> BTreeMap<Lsn, Vec<u8>> {
        let client = self.client(i);
        let mut out = BTreeMap::new();
        let mut after = Lsn::ZERO;
        loop {
            let got = client
                .read(PgId(pg), after, Lsn::MAX, BATCH_BYTES_MAX)
                .await
                .expect("read records");
            for r in record::decode_all(&got.records).expect("served records verify") {
                after = r.header.lsn;
                out.insert(r.header.lsn, r.bytes.to_vec());
            }
            if !got.more {
                return out;
            }
        }
    }

    /// Waits until every running node in `nodes` has the same SCL for every PG, at least `min`.
    pub async fn wait_converged(&self, nodes: &[usize], min: Lsn, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut ok = true;
            let mut seen = Vec::new();
            for pg in 0..self.placement.pgs.len() as u32 {
                let mut scls = Vec::new();
                for &i in nodes {
                    scls.push(self.client(i).status(PgId(pg)).await.map(|s| s.scl).ok());
                }
                let first = scls[0];
                ok &= scls.iter().all(|s| s.is_some() && *s == first);
                seen.push(scls);
            }
            let top = seen
                .iter()
                .flatten()
                .flatten()
                .max()
                .copied()
                .unwrap_or(Lsn::ZERO);
            if ok && top >= min {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "segments did not converge: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
