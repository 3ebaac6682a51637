//! End-to-end tests of `sixfold ctl` against real processes: three `sixfold meta` members and
//! real `sixfold storage` nodes (the MetaCluster harness). Every command is checked through its
//! `--json` output, and every failure through its exit code and its message on stderr.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::BIN;
use common::meta_cluster::MetaCluster;
use serde_json::Value;

/// Runs `ctl --json ARGS`, asserts it succeeded, and parses its one JSON document.
fn ctl_json(c: &MetaCluster, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = c.ctl(&all);
    assert!(ok, "ctl {args:?} failed: {stderr}");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("ctl {args:?} printed no JSON document ({e}): {stdout}"))
}

/// Runs `ctl ARGS` expecting a refusal: non-zero exit, nothing on stdout, the reason on stderr.
fn ctl_refused(c: &MetaCluster, args: &[&str]) -> String {
    let (ok, stdout, stderr) = c.ctl(args);
    assert!(!ok, "ctl {args:?} should have failed; it printed {stdout}");
    assert!(
        stdout.is_empty(),
        "a failed ctl printed on stdout: {stdout}"
    );
    stderr
}

fn node_azs(list: &Value) -> BTreeMap<u64, String> {
    list["nodes"]
        .as_array()
        .expect("nodes is a list")
        .iter()
        .map(|n| {
            (
                n["id"].as_u64().unwrap(),
                n["az"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Asserts every PG of a `volume` document has six distinct nodes, exactly two in each of three
/// AZs, and that the AZs the document shows are the nodes' own.
fn assert_two_per_az(volume: &Value, azs: &BTreeMap<u64, String>) {
    for pg in volume["pgs"].as_array().expect("pgs is a list") {
        let segments = pg["segments"].as_array().unwrap();
        assert_eq!(
            segments.len(),
            6,
            "PG {} has {} segments",
            pg["id"],
            segments.len()
        );
        let mut per_az: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for s in segments {
            let node = s["node"].as_u64().unwrap();
            let az = azs[&node].as_str();
            assert_eq!(s["az"], az, "segment on node {node} shows the wrong AZ");
            per_az.entry(az).or_default().push(node);
        }
        let mut nodes: Vec<u64> = per_az.values().flatten().copied().collect();
        nodes.sort();
        nodes.dedup();
        assert_eq!(nodes.len(), 6, "PG {} reuses a node: {per_az:?}", pg["id"]);
        assert_eq!(per_az.len(), 3, "PG {} spans {per_az:?}", pg["id"]);
        assert!(
            per_az.values().all(|n| n.len() == 2),
            "PG {} is not two per AZ: {per_az:?}",
            pg["id"]
        );
    }
}

// Proves every ctl command works end to end and reads back through --json: `node list` shows
// the six registered storage nodes; `node add` (default id = highest + 1), `node list` and
// `node remove` round-trip a node; `volume create` places every PG on six nodes, two in each of
// three AZs, and `volume show` returns that same placement; `status` then shows three meta
// members with exactly one leader, six storage nodes Running, and every PG's six segments
// answering with an SCL. It also proves refusals (removing a node that holds segments, creating
// an existing volume, showing a missing one) exit non-zero with the reason on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_manages_nodes_and_volumes() {
    let c = MetaCluster::start(6, false).await;

    let list = ctl_json(&c, &["node", "list"]);
    let azs = node_azs(&list);
    assert_eq!(
        azs.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    for n in list["nodes"].as_array().unwrap() {
        assert_eq!(n["state"], "Ready", "{n}");
        assert_eq!(n["segments"], 0);
    }

    let added = ctl_json(&c, &["node", "add", "--addr", "127.0.0.1:1", "--az", "az9"]);
    assert_eq!(
        added["node"]["id"], 7,
        "default id is the highest + 1: {added}"
    );
    assert_eq!(added["node"]["state"], "Provisioning");
    assert_eq!(added["node"]["az"], "az9");
    let list = ctl_json(&c, &["node", "list"]);
    assert_eq!(node_azs(&list).get(&7).map(String::as_str), Some("az9"));
    let removed = ctl_json(&c, &["node", "remove", "--id", "7"]);
    assert_eq!(removed["removed"], 7);
    assert_eq!(node_azs(&ctl_json(&c, &["node", "list"])), azs);
    let err = ctl_refused(&c, &["node", "remove", "--id", "7"]);
    assert!(err.contains("unknown node 7"), "{err}");
    let err = ctl_refused(&c, &["node", "add", "--addr", "nowhere", "--az", "az1"]);
    assert!(err.contains("host:port"), "{err}");

    let created = ctl_json(
        &c,
        &["volume", "create", "--pgs", "3", "--pages-per-pg", "1000"],
    );
    let volume = &created["volume"];
    assert_eq!(volume["id"], 1);
    assert_eq!(volume["page_size"], 8192);
    assert_eq!(volume["pages_per_pg"], 1000);
    assert_eq!(volume["pgs"].as_array().unwrap().len(), 3);
    assert_two_per_az(volume, &azs);
    let shown = ctl_json(&c, &["volume", "show", "--id", "1"]);
    assert_eq!(
        shown["volume"]["pgs"], volume["pgs"],
        "show differs from create"
    );
    assert_two_per_az(&shown["volume"], &azs);
    let map = c.map().await;
    assert_eq!(map.volumes.len(), 1);

    let err = ctl_refused(&c, &["node", "remove", "--id", "1"]);
    assert!(err.contains("still holds 3 segments"), "{err}");
    let err = ctl_refused(&c, &["volume", "create"]);
    assert!(err.contains("volume 1 already exists"), "{err}");
    let err = ctl_refused(&c, &["volume", "show", "--id", "9"]);
    assert!(err.contains("no volume 9"), "{err}");

    // Storage nodes start serving the volume's segments shortly after it exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = ctl_json(&c, &["status"]);
        let members = status["meta"].as_array().unwrap();
        let leaders = members.iter().filter(|m| m["role"] == "leader").count();
        let answering = status["volumes"][0]["pgs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|pg| pg["segments"].as_array().unwrap())
            .all(|s| s["reachable"] == true && s["scl"].is_u64());
        if leaders == 1 && members.iter().all(|m| m["error"].is_null()) && answering {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "status never settled: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let members = status["meta"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    let ids: Vec<u64> = members.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let leader = members.iter().find(|m| m["role"] == "leader").unwrap();
    assert!(
        members
            .iter()
            .all(|m| m["role"] == "leader" || m["role"] == "follower")
    );
    assert!(
        members.iter().all(|m| m["leader_id"] == leader["id"]),
        "{members:?}"
    );
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    for n in nodes {
        assert_eq!(n["state"], "Running", "{n}");
        assert_eq!(n["segments"], 3);
        assert!(n["heartbeat_age_ms"].as_u64().unwrap() < 3_000, "{n}");
    }
    let volumes = status["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1);
    let pgs = volumes[0]["pgs"].as_array().unwrap();
    assert_eq!(pgs.len(), 3);
    for pg in pgs {
        let segments = pg["segments"].as_array().unwrap();
        assert_eq!(segments.len(), 6);
        for s in segments {
            assert_eq!(
                s["lag"].as_u64().unwrap(),
                pg["scl_max"].as_u64().unwrap() - s["scl"].as_u64().unwrap()
            );
        }
    }
    assert!(
        volumes[0]["vdl"].is_u64(),
        "segments answered, so a VDL hint is known"
    );
    assert!(
        status["lease"].is_null(),
        "no writer ran: {}",
        status["lease"]
    );

    // The human form of the same command shows the same sections.
    let (ok, human, stderr) = c.ctl(&["status"]);
    assert!(ok, "{stderr}");
    for section in [
        "META GROUP",
        "STORAGE NODES",
        "VOLUME 1",
        "WRITER LEASE",
        "leader",
    ] {
        assert!(human.contains(section), "no {section:?} in:\n{human}");
    }
}

// Proves placement refuses a volume when fewer than six storage nodes are Ready: with five,
// `ctl volume create` exits non-zero, says why on stderr (with --json too), and the cluster map
// holds no volume afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_create_with_five_nodes_is_refused() {
    let c = MetaCluster::start(5, false).await;
    for args in [
        &["volume", "create"][..],
        &["--json", "volume", "create"][..],
    ] {
        let err = ctl_refused(&c, args);
        assert!(
            err.contains(
                "placement needs at least 6 usable (Ready or Running) nodes, the cluster has 5"
            ),
            "{err}"
        );
    }
    assert!(c.map().await.volumes.is_empty());
    let status = ctl_json(&c, &["status"]);
    assert_eq!(status["volumes"].as_array().unwrap().len(), 0);
    assert_eq!(status["nodes"].as_array().unwrap().len(), 5);
    let err = ctl_refused(&c, &["volume", "show"]);
    assert!(
        err.contains("no volume 1") && err.contains("volumes: none"),
        "{err}"
    );
}

// Proves ctl fails fast and clearly without a meta group: pointed at a closed port it exits
// non-zero within a few seconds naming the address it tried; a malformed --meta (or
// $SIXFOLD_META) is rejected before any connection; bad arguments are refused by the parser.
#[test]
fn unreachable_or_malformed_meta_fails_fast() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{closed}");
    for command in [
        &["status"][..],
        &["--json", "node", "list"][..],
        &["volume", "create"][..],
    ] {
        let start = Instant::now();
        let out = Command::new(BIN)
            .args(["ctl", "--meta", &addr])
            .args(command)
            .output()
            .unwrap();
        let took = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{command:?} succeeded against a closed port"
        );
        assert!(out.stdout.is_empty());
        assert!(
            stderr.contains("cannot reach the meta group") && stderr.contains(&addr),
            "{command:?}: {stderr}"
        );
        assert!(took < Duration::from_secs(10), "{command:?} took {took:?}");
    }

    for bad in ["nonsense", "127.0.0.1:notaport", "127.0.0.1:70000", ","] {
        let out = Command::new(BIN)
            .args(["ctl", "--meta", bad, "status"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--meta {bad:?}: {stderr}");
        assert!(stderr.contains("--meta"), "--meta {bad:?}: {stderr}");
    }
    let out = Command::new(BIN)
        .args(["ctl", "status"])
        .env("SIXFOLD_META", "nonsense")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"nonsense\" in $SIXFOLD_META"), "{stderr}");

    let out = Command::new(BIN)
        .args(["ctl", "--meta", &addr, "volume", "create", "--pgs", "many"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap rejects bad arguments");
}
