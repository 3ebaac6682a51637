//! A whole cluster for end-to-end tests: three `sixfold meta` members and six `sixfold storage`
//! nodes in meta mode, as real processes on loopback, plus helpers to run `sixfold ctl` and
//! `sixfold log-writer` against it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sixfold_log_service::{NodeId, VolumeId};
use sixfold_meta::client::MetaClient;
use sixfold_meta::{ClusterMap, Command as MetaCommand, NodeState};

use super::{BIN, free_port};

pub const META: usize = 3;
pub const STORAGE: usize = 6;
pub const PAGES_PER_PG: u64 = 1000;
pub const PGS: u32 = 2;

pub struct MetaCluster {
    pub dir: tempfile::TempDir,
    pub meta_ports: Vec<u16>,
    pub storage_ports: Vec<u16>,
    meta: Vec<Option<Child>>,
    storage: Vec<Option<Child>>,
    /// Extra flags every meta member starts with.
    meta_extra: Vec<String>,
}

impl MetaCluster {
    /// Three meta members and `storage` storage nodes; creates volume 1 when `volume` is set
    /// (then `storage` must be six).
    pub async fn start(storage: usize, volume: bool) -> MetaCluster {
        Self::start_with(storage, volume, &[]).await
    }

    /// Like `start`, with extra flags for every meta member.
    pub async fn start_with(storage: usize, volume: bool, meta_extra: &[&str]) -> MetaCluster {
        let mut c = MetaCluster {
            meta_extra: meta_extra.iter().map(|s| s.to_string()).collect(),
            dir: tempfile::tempdir().unwrap(),
            meta_ports: (0..META).map(|_| free_port()).collect(),
            storage_ports: (0..STORAGE).map(|_| free_port()).collect(),
            meta: (0..META).map(|_| None).collect(),
            storage: (0..STORAGE).map(|_| None).collect(),
        };
        for i in 0..META {
            c.start_meta_with(i, i == 0);
        }
        for i in 0..storage {
            c.start_storage(i);
        }
        c.wait_ready(storage).await;
        if volume {
            c.create_volume().await;
        }
        c
    }

    pub fn meta_list(&self) -> String {
        self.meta_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn members(&self) -> String {
        self.meta_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn client(&self) -> MetaClient {
        MetaClient::from_list(&self.meta_list()).unwrap()
    }

    pub fn meta_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("meta-{}", i + 1))
    }

    pub fn storage_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("storage-{}", i + 1))
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::fs::File::create(self.dir.path().join(format!("{name}.{nanos}.log"))).unwrap()
    }

    /// Starts meta member `i` (0-based).
    pub fn start_meta(&mut self, i: usize) {
        self.start_meta_with(i, false);
    }

    fn start_meta_with(&mut self, i: usize, bootstrap: bool) {
        assert!(self.meta[i].is_none());
        let log = self.log_file(&format!("meta-{}", i + 1));
        let mut cmd = Command::new(BIN);
        cmd.args([
            "meta",
            "--id",
            &(i + 1).to_string(),
            "--members",
            &self.members(),
        ])
        .arg("--data-dir")
        .arg(self.meta_dir(i))
        .args(&self.meta_extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        if bootstrap {
            cmd.arg("--bootstrap");
        }
        self.meta[i] = Some(cmd.spawn().expect("spawn sixfold meta"));
    }

    pub fn start_storage(&mut self, i: usize) {
        assert!(self.storage[i].is_none());
        let log = self.log_file(&format!("storage-{}", i + 1));
        let az = format!("az{}", (i + 2) / 2);
        let child = Command::new(BIN)
            .args([
                "storage",
                "--node-id",
                &(i + 1).to_string(),
                "--meta",
                &self.meta_list(),
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.storage_ports[i]),
                "--az",
                &az,
            ])
            .arg("--data-dir")
            .arg(self.storage_dir(i))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn sixfold storage");
        self.storage[i] = Some(child);
    }

    pub fn kill9_meta(&mut self, i: usize) {
        let mut c = self.meta[i].take().expect("meta member running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    pub fn kill9_storage(&mut self, i: usize) {
        let mut c = self.storage[i].take().expect("storage node running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    pub fn meta_running(&self, i: usize) -> bool {
        self.meta[i].is_some()
    }

    /// The member every live member agrees leads, as (index, term), once there is one.
    pub async fn wait_leader(&self, within: Duration) -> (usize, u64) {
        let deadline = Instant::now() + within;
        loop {
            let views = self.client().group_status().await;
            let live: Vec<_> = views.iter().filter_map(|(_, v)| v.as_ref().ok()).collect();
            let leaders: Vec<_> = live.iter().filter(|v| v.role == "leader").collect();
            if leaders.len() == 1 && live.iter().all(|v| v.leader_id == leaders[0].id) {
                return (leaders[0].id as usize - 1, leaders[0].term);
            }
            assert!(
                Instant::now() < deadline,
                "no agreed meta leader: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn storage_pid(&self, i: usize) -> u32 {
        self.storage[i].as_ref().unwrap().id()
    }

    pub async fn map(&self) -> ClusterMap {
        self.client().cluster_map().await.expect("cluster map")
    }

    /// Waits until `n` storage nodes are Ready or Running.
    pub async fn wait_ready(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(map) = self.client().cluster_map().await {
                let ready = map
                    .nodes
                    .values()
                    .filter(|n| matches!(n.state, NodeState::Ready | NodeState::Running))
                    .count();
                if ready >= n {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "storage nodes did not become Ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn create_volume(&self) {
        let create = MetaCommand::CreateVolume {
            id: VolumeId(1),
            page_size: 8192,
            pages_per_pg: PAGES_PER_PG,
            pg_count: PGS,
        };
        self.client().propose(create).await.expect("create volume");
    }

    /// Waits until `pred` holds for storage node `id`'s state.
    pub async fn wait_node_state(&self, id: u64, state: NodeState, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if let Ok(map) = self.client().cluster_map().await
                && map.nodes.get(&NodeId(id)).map(|n| n.state) == Some(state)
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "node {id} did not become {state} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `sixfold ctl --meta … ARGS`; returns (exit success, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(BIN)
            .args(["ctl", "--meta", &self.meta_list()])
            .args(args)
            .output()
            .expect("run sixfold ctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// Starts `sixfold log-writer` as `holder`; its JSON lines are collected as they come.
    pub fn writer(&self, holder: &str, extra: &[&str]) -> WriterProc {
        let log = self.log_file(&format!("writer-{holder}"));
        let mut child = Command::new(BIN)
            .args([
                "log-writer",
                "--meta",
                &self.meta_list(),
                "--holder",
                holder,
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn sixfold log-writer");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        WriterProc { child, lines }
    }
}

impl Drop for MetaCluster {
    fn drop(&mut self) {
        for c in self
            .meta
            .iter_mut()
            .chain(self.storage.iter_mut())
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct WriterProc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl WriterProc {
    pub fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["event"] == kind)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` events of `kind` arrived.
    pub async fn wait_events(
        &self,
        kind: &str,
        n: usize,
        within: Duration,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.events(kind);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "writer printed {} {kind} events, wanted {n}: {:?}",
                got.len(),
                self.lines.lock().unwrap().last()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child we own.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }
}

impl Drop for WriterProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
