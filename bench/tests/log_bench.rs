//! `sixfold-bench log` end to end, briefly: six real storage processes, the six-copy floor's
//! six replica processes and the local file all commit, and the report holds every number the
//! README quotes. Proves the benchmark still runs (nothing else in CI does) and that its three
//! targets and ratios are wired to what they claim; it asserts nothing about speed.

use std::process::Command;

#[test]
fn log_bench_reports_all_three_targets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_sixfold-bench"))
        .args([
            "log",
            "--seconds",
            "1",
            "--committers",
            "2",
            "--json",
            "--dir",
        ])
        .arg(dir.path().join("run"))
        .output()
        .expect("run sixfold-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sixfold-bench failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");

    let probe = &report["sync_probe"];
    for key in ["one_stream_us", "six_streams_us"] {
        assert!(
            probe[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {probe}"
        );
    }
    let levels = report["levels"].as_array().expect("levels");
    assert_eq!(levels.len(), 1);
    let level = &levels[0];
    assert_eq!(level["committers"], 2);
    let rate = |target: &str| {
        let r = &level[target];
        assert!(
            r["commits"].as_u64().is_some_and(|c| c > 0),
            "{target}: {r}"
        );
        r["commits_per_s"].as_f64().expect("commits_per_s")
    };
    let (sixfold, floor, local) = (rate("sixfold"), rate("six_copy_floor"), rate("local_file"));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(close(level["ratio"].as_f64().unwrap(), sixfold / local));
    assert!(close(level["floor_ratio"].as_f64().unwrap(), floor / local));
    assert!(close(
        level["sixfold_to_floor"].as_f64().unwrap(),
        sixfold / floor
    ));
    // The copies' processes did the work of their targets: the floor's six replicas are
    // separate processes that burned CPU, the local file has none.
    assert!(
        level["six_copy_floor"]["copies_cpu_cores"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(
        level["local_file"]["copies_cpu_cores"].as_f64().unwrap(),
        0.0
    );
    // Every floor replica wrote records at the start of its log (the rest is preallocated
    // zeros): the writer ships every frame to all six, not only to a quorum.
    for i in 1..=6 {
        let path = dir.path().join("run").join(format!("floor-{i}.log"));
        let bytes = std::fs::read(&path).expect("floor log");
        assert!(
            bytes.iter().take(4096).any(|b| *b != 0),
            "{} holds no records",
            path.display()
        );
    }
}
