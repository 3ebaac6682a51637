//! `sixfold demo` tried as a new user would: start it, follow what it prints, look at the
//! cluster with `sixfold ctl`, break a storage node, and stop it with Ctrl-C's signal. Real
//! processes on loopback; the demo and everything it started are killed if the test fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sixfold");

/// Ports the demo uses for a given base: meta members at base+1..=3, storage nodes at
/// base+101..=106, and the Postgres port we give it at base+200.
fn demo_ports(base: u16) -> Vec<u16> {
    (1..=3)
        .chain(101..=106)
        .chain(std::iter::once(200))
        .map(|o| base + o)
        .collect()
}

/// A port base whose ports are all free right now, below the ephemeral range so other tests'
/// free ports do not land on it.
fn free_base() -> u16 {
    for _ in 0..200 {
        let base: u16 = rand::random_range(20_000..32_000);
        let free = demo_ports(base)
            .into_iter()
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free port base for the demo");
}

/// Whether `pid` is a live process (a zombie has exited).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Whether `pid` is alive and is a sixfold process (guards against a reused pid).
fn is_sixfold(pid: u32) -> bool {
    alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("sixfold"))
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process this test started (directly or through the demo).
    unsafe { libc::kill(pid as i32, sig) };
}

/// The running demo. Dropping it (test passed or failed) stops the demo and kills anything it
/// started that is still alive.
struct Demo {
    child: Child,
    dir: tempfile::TempDir,
}

impl Demo {
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("demo.log")
    }

    fn cluster_file(&self) -> Option<Value> {
        let bytes = std::fs::read(self.data_dir().join("cluster.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every pid cluster.json lists.
    fn child_pids(&self) -> Vec<u32> {
        self.cluster_file()
            .and_then(|c| {
                c["processes"].as_array().map(|ps| {
                    ps.iter()
                        .filter_map(|p| p["pid"].as_u64().map(|p| p as u32))
                        .collect()
                })
            })
            .unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            eprintln!("---- demo output ----\n{log}---- end of demo output ----");
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            // Politely first: the demo stops its own children on SIGTERM.
            signal(self.child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for pid in self.child_pids() {
            if is_sixfold(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctl(meta: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["ctl", "--meta", meta])
        .args(args)
        .output()
        .expect("run sixfold ctl")
}

fn status(meta: &str) -> Option<Value> {
    let out = ctl(meta, &["status", "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn node_state(status: &Value, id: u64) -> Option<String> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == id)
        .and_then(|n| n["state"].as_str().map(String::from))
}

fn wait_for<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn start_demo(dir: tempfile::TempDir, base: u16) -> Demo {
    let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
    let child = Command::new(BIN)
        .arg("demo")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--grpc-port-base", &base.to_string()])
        .args(["--port", &(base + 200).to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn sixfold demo");
    Demo { child, dir }
}

/// The `sixfold ctl …` command line the demo suggests, once it printed it.
fn suggested_command(log: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("try: sixfold "))?;
    Some(line.split_whitespace().map(String::from).collect())
}

// Proves the demo works as its output promises: it writes cluster.json, the `sixfold ctl`
// command it prints works, and `ctl status` shows three meta members with exactly one leader
// and six Running storage nodes. Then a storage node killed with -9 is shown Failed within
// seconds (the failure detector marks it after 3 s of silence), and SIGTERM to the demo stops
// it and every process it started.
#[test]
fn demo_as_a_new_user_tries_it() {
    let base = free_base();
    let mut demo = start_demo(tempfile::tempdir().unwrap(), base);

    let cluster = wait_for("cluster.json appears", Duration::from_secs(60), || {
        demo.cluster_file()
    });
    let meta = cluster["meta"]
        .as_str()
        .expect("cluster.json names the meta members")
        .to_string();
    let processes = cluster["processes"].as_array().unwrap().clone();
    assert_eq!(processes.iter().filter(|p| p["role"] == "meta").count(), 3);
    assert_eq!(
        processes.iter().filter(|p| p["role"] == "storage").count(),
        6
    );

    let healthy = wait_for(
        "3 meta members with one leader and 6 Running storage nodes",
        Duration::from_secs(90),
        || {
            let s = status(&meta)?;
            let members = s["meta"].as_array()?;
            let leaders = members.iter().filter(|m| m["role"] == "leader").count();
            let running = s["nodes"]
                .as_array()?
                .iter()
                .filter(|n| n["state"] == "Running")
                .count();
            (members.len() == 3 && leaders == 1 && running == 6).then_some(s)
        },
    );
    assert_eq!(
        healthy["volumes"].as_array().unwrap().len(),
        1,
        "the demo creates volume 1"
    );

    // What a new user would type: the command the demo printed, human output.
    let suggested = wait_for(
        "the demo prints a ctl command to try",
        Duration::from_secs(30),
        || suggested_command(&demo.log()),
    );
    let out = Command::new(BIN).args(&suggested).output().unwrap();
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{suggested:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        human.contains("META GROUP") && human.contains("leader"),
        "{human}"
    );
    assert!(
        human.contains("STORAGE NODES") && human.contains("Running"),
        "{human}"
    );

    let victim = processes
        .iter()
        .find(|p| p["role"] == "storage" && p["id"] == 6)
        .expect("storage node 6 in cluster.json");
    let victim_pid = victim["pid"].as_u64().unwrap() as u32;
    assert!(is_sixfold(victim_pid));
    signal(victim_pid, libc::SIGKILL);
    let killed_at = Instant::now();
    let failed = wait_for("node 6 shown Failed", Duration::from_secs(20), || {
        let s = status(&meta)?;
        (node_state(&s, 6).as_deref() == Some("Failed")).then_some(s)
    });
    eprintln!(
        "node 6 shown Failed {:?} after kill -9",
        killed_at.elapsed()
    );
    for n in 1..=5 {
        assert_eq!(
            node_state(&failed, n).as_deref(),
            Some("Running"),
            "node {n}"
        );
    }
    let segments_on_6: Vec<&Value> = failed["volumes"][0]["pgs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|pg| pg["segments"].as_array().unwrap())
        .filter(|s| s["node"] == 6)
        .collect();
    assert!(!segments_on_6.is_empty());
    assert!(
        segments_on_6.iter().all(|s| s["reachable"] == false),
        "{segments_on_6:?}"
    );

    let pids: Vec<u32> = demo.child_pids();
    assert_eq!(pids.len(), 9);
    signal(demo.child.id(), libc::SIGTERM);
    let status = wait_for("the demo exits on SIGTERM", Duration::from_secs(30), || {
        demo.child.try_wait().unwrap()
    });
    assert!(status.success(), "demo exited with {status}");
    let left = wait_for("every demo process exits", Duration::from_secs(10), || {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        left.is_empty().then_some(left)
    });
    assert!(left.is_empty());
}
