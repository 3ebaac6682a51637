//! End-to-end tests of the durable redo log: six real `sixfold storage` processes over TCP and a
//! quorum writer, with nodes killed (-9), restarted and their files damaged. Each test checks
//! that every acknowledged commit is on a write quorum with identical bytes.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::Cluster;
use sixfold_log_service::client::DurableHint;
use sixfold_log_service::error::{ErrorKind, classify};
use sixfold_log_service::record::{self, RECORD_HEADER_BYTES};
use sixfold_log_service::writer::{Commit, QuorumWriter, RecordSpec, WriterConfig, WriterError};
use sixfold_log_service::{Epoch, Lsn, PageId, PgId};
use tokio::sync::Mutex;

const PAGES_PER_PG: u64 = 1000;

type Acked = Arc<Mutex<BTreeMap<Lsn, RecordSpec>>>;

fn mtr(tag: &str, seq: u64, pgs: u64, len: usize) -> Vec<RecordSpec> {
    (0..len)
        .map(|j| {
            let page = (seq * 7 + j as u64 * 13) % (pgs * PAGES_PER_PG);
            RecordSpec {
                page_id: PageId(page),
                kind: 1 + (j as u8 % 3),
                payload: Bytes::from(format!("{tag}:{seq}:{j}")),
            }
        })
        .collect()
}

async fn remember(acked: &Acked, commit: Commit, specs: Vec<RecordSpec>) {
    let mut map = acked.lock().await;
    for (i, spec) in specs.into_iter().enumerate() {
        map.insert(Lsn(commit.first.get() + i as u64), spec);
    }
}

/// Fails the test with `what` if `fut` does not finish within a minute, instead of hanging.
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

async fn open_writer(cluster: &Cluster) -> QuorumWriter {
    tokio::time::timeout(
        Duration::from_secs(90),
        QuorumWriter::open(cluster.placement.clone(), None, WriterConfig::default()),
    )
    .await
    .expect("writer recovery timed out")
    .expect("writer opens")
}

/// Checks that every acknowledged record is on at least `quorum` of `nodes`, with identical
/// bytes everywhere, and that those bytes decode to exactly what was submitted.
async fn assert_acked_present(
    cluster: &Cluster,
    nodes: &[usize],
    acked: &BTreeMap<Lsn, RecordSpec>,
    quorum: usize,
) {
    let pgs = cluster.placement.pgs.len() as u32;
    let mut held: Vec<Vec<BTreeMap<Lsn, Vec<u8>>>> = Vec::new();
    for pg in 0..pgs {
        let mut per_node = Vec::new();
        for &i in nodes {
            per_node.push(cluster.records(i, pg).await);
        }
        held.push(per_node);
    }
    for (lsn, spec) in acked {
        let pg = cluster.placement.pg_of(spec.page_id).unwrap().get() as usize;
        let copies: Vec<&Vec<u8>> = held[pg].iter().filter_map(|m| m.get(lsn)).collect();
        assert!(
            copies.len() >= quorum,
            "{lsn:?} is on only {} segments",
            copies.len()
        );
        assert!(
            copies.iter().all(|c| *c == copies[0]),
            "{lsn:?} differs between segments"
        );
        let r = record::decode(copies[0]).unwrap();
        assert_eq!(
            (r.header.page_id, r.header.kind, r.payload),
            (spec.page_id, spec.kind, &spec.payload[..]),
            "{lsn:?}"
        );
    }
}

/// Proves: with two of six storage nodes killed -9 in the middle of a 50,000-record run, every
/// commit is still acknowledged; after restart the two catch up by gossip to the same SCL; and
/// every acknowledged record is then on all six segments with identical bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_killed_mid_run_lose_nothing_and_catch_up() {
    const RECORDS: u64 = 50_000;
    const COMMITTERS: u64 = 16;
    let mut cluster = Cluster::start(2, PAGES_PER_PG).await;
    let writer = Arc::new(open_writer(&cluster).await);
    let acked: Acked = Arc::default();
    let written = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..COMMITTERS {
        let (writer, acked, written) = (writer.clone(), acked.clone(), written.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = c;
            while written.load(Ordering::Relaxed) < RECORDS {
                let specs = mtr("run", seq, 2, 1 + (seq % 4) as usize);
                let commit = writer
                    .commit(&specs)
                    .await
                    .expect("commit acknowledged with four nodes up");
                written.fetch_add(specs.len() as u64, Ordering::Relaxed);
                remember(&acked, commit, specs).await;
                seq += COMMITTERS;
            }
        }));
    }
    while written.load(Ordering::Relaxed) < RECORDS / 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.kill9(0);
    cluster.kill9(1);
    let at_kill = written.load(Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() as u64 >= RECORDS && at_kill < RECORDS * 9 / 10,
        "kills must land mid-run ({at_kill})"
    );
    assert_acked_present(&cluster, &[2, 3, 4, 5], &acked, 4).await;

    cluster.start_node(0).await;
    cluster.start_node(1).await;
    let last = *acked.keys().next_back().unwrap();
    cluster
        .wait_converged(
            &[0, 1, 2, 3, 4, 5],
            Lsn(last.get() - 10),
            Duration::from_secs(120),
        )
        .await;
    assert_acked_present(&cluster, &[0, 1, 2, 3, 4, 5], &acked, 6).await;
}

/// Proves: with three of six nodes down nothing is acknowledged (three copies are not durable),
/// the survivors still serve reads, and acks resume once a fourth node returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_down_stops_acks_until_a_node_returns() {
    let mut cluster = Cluster::start(1, PAGES_PER_PG).await;
    let writer = open_writer(&cluster).await;
    let acked: Acked = Arc::default();
    for seq in 0..20 {
        let specs = mtr("before", seq, 1, 2);
        let c = writer.commit(&specs).await.unwrap();
        remember(&acked, c, specs).await;
    }
    cluster.kill9(0);
    cluster.kill9(1);
    cluster.kill9(2);
    let specs = mtr("stalled", 0, 1, 3);
    let commit = writer.submit(&specs).await.unwrap();
    let waited =
        tokio::time::timeout(Duration::from_secs(3), writer.wait_durable(commit.cpl)).await;
    assert!(
        waited.is_err(),
        "a commit was acknowledged with only three copies"
    );
    assert!(writer.vdl() < commit.first);
    // Reads still work on the three survivors.
    assert_acked_present(&cluster, &[3, 4, 5], &acked.lock().await.clone(), 3).await;

    cluster.start_node(1).await;
    tokio::time::timeout(Duration::from_secs(60), writer.wait_durable(commit.cpl))
        .await
        .expect("acks resume")
        .unwrap();
    remember(&acked, commit, specs).await;
    assert_acked_present(&cluster, &[1, 3, 4, 5], &acked.lock().await.clone(), 4).await;
}

/// Proves: a segment log with a torn last record and one with a flipped bit both restart
/// cleanly: the torn tail is cut, and the corrupt record is not served but refetched from peers
/// (its good copy is appended to the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_cut_and_corrupt_record_is_refetched() {
    let mut cluster = Cluster::start(1, PAGES_PER_PG).await;
    let writer = open_writer(&cluster).await;
    let acked: Acked = Arc::default();
    for seq in 0..300 {
        let specs = mtr("disk", seq, 1, 2);
        let c = writer.commit(&specs).await.unwrap();
        remember(&acked, c, specs).await;
    }
    // Let all six catch up so both damaged nodes had a complete log.
    let last = *acked.lock().await.keys().next_back().unwrap();
    cluster
        .wait_converged(&[0, 1, 2, 3, 4, 5], last, Duration::from_secs(30))
        .await;
    cluster.kill9(4);
    cluster.kill9(5);

    // Node 5: a torn last record (30 bytes of a copy of the last one) where the records end,
    // over the zeros its flusher wrote ahead of them.
    let torn_path = cluster.segment_log(5, 0);
    let mut bytes = std::fs::read(&torn_path).unwrap();
    let good_len = record::log_end(&bytes);
    let tail = bytes[good_len - 60..good_len - 30].to_vec();
    bytes.truncate(good_len);
    bytes.extend_from_slice(&tail);
    std::fs::write(&torn_path, &bytes).unwrap();

    // Node 4: a flipped bit inside the payload of the 100th record.
    let rot_path = cluster.segment_log(4, 0);
    let mut bytes = std::fs::read(&rot_path).unwrap();
    let rot_len = record::log_end(&bytes);
    let mut at = 0;
    for _ in 0..100 {
        at += record::decode(&bytes[at..]).unwrap().bytes.len();
    }
    let victim = record::decode(&bytes[at..]).unwrap();
    let (victim_lsn, victim_len) = (victim.header.lsn, victim.bytes.len());
    bytes[at + RECORD_HEADER_BYTES] ^= 0x10;
    std::fs::write(&rot_path, &bytes).unwrap();

    cluster.start_node(5).await;
    cluster.start_node(4).await;
    cluster
        .wait_converged(&[0, 1, 2, 3, 4, 5], last, Duration::from_secs(30))
        .await;
    let torn_bytes = std::fs::read(&torn_path).unwrap();
    assert_eq!(record::log_end(&torn_bytes), good_len);
    assert!(
        torn_bytes[good_len..].iter().all(|b| *b == 0),
        "the torn tail must be cut"
    );
    // A good copy was appended (gossip and the page restore path may both fetch it; the
    // index keeps the first), and the bytes served are the peers' bytes (checked below).
    assert!(
        record::log_end(&std::fs::read(&rot_path).unwrap()) >= rot_len + victim_len,
        "the corrupt record must be refetched and appended"
    );
    let served = cluster.records(4, 0).await;
    assert!(served.contains_key(&victim_lsn));
    assert_acked_present(
        &cluster,
        &[0, 1, 2, 3, 4, 5],
        &acked.lock().await.clone(),
        6,
    )
    .await;

    // The repaired cluster keeps taking writes.
    let specs = mtr("after", 0, 1, 2);
    writer.commit(&specs).await.unwrap();
}

/// Proves: a writer that restarts truncates records that never reached a write quorum, fences
/// them on segments that were down during the takeover, and continues above the truncated range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_restart_truncates_records_that_were_not_durable() {
    let mut cluster = Cluster::start(2, PAGES_PER_PG).await;
    let acked: Acked = Arc::default();
    let first = open_writer(&cluster).await;
    for seq in 0..100 {
        let specs = mtr("durable", seq, 2, 3);
        let c = first.commit(&specs).await.unwrap();
        remember(&acked, c, specs).await;
    }
    for i in 2..6 {
        cluster.kill9(i);
    }
    // These reach only nodes 0 and 1: never durable, never acknowledged.
    let mut doomed = Vec::new();
    for seq in 0..20 {
        let c = first.submit(&mtr("doomed", seq, 2, 2)).await.unwrap();
        doomed.extend([c.first, c.cpl]);
    }
    let last_doomed = *doomed.iter().max().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let held = cluster
            .state(0, 0)
            .await
            .max_lsn
            .max(cluster.state(0, 1).await.max_lsn);
        if held >= last_doomed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "doomed records never reached node 0"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(first.vdl() < doomed[0]);
    let first_epoch = first.epoch();
    drop(first);
    cluster.kill9(0);
    cluster.kill9(1);
    for i in 2..6 {
        cluster.start_node(i).await;
    }

    let second = open_writer(&cluster).await;
    assert!(second.epoch() > first_epoch);
    let rec = second.recovery();
    assert!(
        rec.recovered_vdl < doomed[0],
        "recovered {:?} includes records that were never durable",
        rec.recovered_vdl
    );
    assert!(rec.truncated_through >= last_doomed);
    for seq in 0..50 {
        let specs = mtr("second", seq, 2, 2);
        let c = second.commit(&specs).await.unwrap();
        assert!(
            c.first > rec.truncated_through,
            "allocation must continue above the truncated range"
        );
        remember(&acked, c, specs).await;
    }
    // The two nodes holding the doomed records come back and must drop them.
    cluster.start_node(0).await;
    cluster.start_node(1).await;
    let last = *acked.lock().await.keys().next_back().unwrap();
    cluster
        .wait_converged(
            &[0, 1, 2, 3, 4, 5],
            Lsn(last.get() - 10),
            Duration::from_secs(60),
        )
        .await;
    for i in 0..6 {
        for pg in 0..2 {
            let held = cluster.records(i, pg).await;
            for lsn in &doomed {
                assert!(
                    !held.contains_key(lsn),
                    "node {i} still serves truncated {lsn:?}"
                );
            }
        }
    }
    assert_acked_present(
        &cluster,
        &[0, 1, 2, 3, 4, 5],
        &acked.lock().await.clone(),
        6,
    )
    .await;
}

/// Proves: once a newer writer took over, every segment refuses the older writer's epoch, the
/// old writer learns it is fenced, and none of its later records is stored anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_epoch_writer_is_refused_everywhere() {
    let cluster = Cluster::start(1, PAGES_PER_PG).await;
    let old = open_writer(&cluster).await;
    bounded("old commit", old.commit(&mtr("old", 0, 1, 2)))
        .await
        .unwrap();
    let new = open_writer(&cluster).await;
    assert!(new.epoch() > old.epoch());
    bounded("new commit", new.commit(&mtr("new", 0, 1, 2)))
        .await
        .unwrap();

    let late = mtr("late", 0, 1, 1);
    match tokio::time::timeout(Duration::from_secs(30), old.commit(&late))
        .await
        .expect("old writer must fail, not hang")
    {
        Err(WriterError::Fenced(_)) => {}
        other => panic!("old writer was not fenced: {other:?}"),
    }
    let mut raw = Vec::new();
    record::encode(
        &mut raw,
        Lsn(1_000_000_000),
        Lsn::ZERO,
        PageId(1),
        record::FLAG_CPL,
        1,
        b"raw",
    );
    for i in 0..6 {
        let status = cluster
            .client(i)
            .append(
                PgId(0),
                old.epoch(),
                Bytes::from(raw.clone()),
                DurableHint::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(classify(&status), ErrorKind::Fenced, "node {i}: {status:?}");
        let status = cluster
            .client(i)
            .append(
                PgId(0),
                Epoch(0),
                Bytes::from(raw.clone()),
                DurableHint::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(classify(&status), ErrorKind::Fenced, "node {i}: {status:?}");
    }
    for i in 0..6 {
        for bytes in cluster.records(i, 0).await.values() {
            let r = record::decode(bytes).unwrap();
            assert!(
                r.payload != &late[0].payload[..] && r.payload != b"raw",
                "node {i} stored a fenced write"
            );
        }
    }
    bounded("last commit", new.commit(&mtr("new", 1, 1, 2)))
        .await
        .unwrap();
}
