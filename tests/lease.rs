//! End-to-end test of the writer lease and epoch fencing: two real `sixfold log-writer`
//! processes, three meta members and six storage nodes.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::meta_cluster::{MetaCluster, PAGES_PER_PG, PGS};
use sixfold_log_service::client::SegmentClient;
use sixfold_log_service::limits::BATCH_BYTES_MAX;
use sixfold_log_service::record;
use sixfold_log_service::{Lsn, NodeId, PgId};

const EXIT_FENCED: i32 = 3;

/// Every record each storage node holds: (node, lsn) -> (page, payload).
async fn all_records(cluster: &MetaCluster) -> Vec<BTreeMap<Lsn, (u64, Vec<u8>)>> {
    let mut out = Vec::new();
    for (i, port) in cluster.storage_ports.iter().enumerate() {
        let client = SegmentClient::with_timeout(
            NodeId(i as u64 + 1),
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(5),
        )
        .unwrap();
        let mut held = BTreeMap::new();
        for pg in 0..PGS {
            let mut after = Lsn::ZERO;
            loop {
                let got = client
                    .read(PgId(pg), after, Lsn::MAX, BATCH_BYTES_MAX)
                    .await
                    .unwrap();
                for r in record::decode_all(&got.records).unwrap() {
                    after = r.header.lsn;
                    held.insert(r.header.lsn, (r.header.page_id.get(), r.payload.to_vec()));
                }
                if !got.more {
                    break;
                }
            }
        }
        out.push(held);
    }
    out
}

/// Checks every acked MTR of `holder` is on at least four nodes with the payloads it wrote.
fn assert_acked_on_quorum(
    held: &[BTreeMap<Lsn, (u64, Vec<u8>)>],
    holder: &str,
    acks: &[serde_json::Value],
) {
    for ack in acks {
        let (seq, first, cpl) = (
            ack["seq"].as_u64().unwrap(),
            ack["first"].as_u64().unwrap(),
            ack["cpl"].as_u64().unwrap(),
        );
        for (j, lsn) in (first..=cpl).enumerate() {
            let j = j as u64;
            let want = (
                (seq * 31 + j * 7) % (PAGES_PER_PG * PGS as u64),
                format!("{holder}:{seq}:{j}").into_bytes(),
            );
            let copies = held
                .iter()
                .filter(|m| m.get(&Lsn(lsn)) == Some(&want))
                .count();
            assert!(
                copies >= 4,
                "{holder}'s acked record {lsn} is on {copies} nodes"
            );
        }
    }
}

/// Proves: writer A holds the lease and commits; A is stopped (SIGSTOP); after the lease
/// expires writer B takes it with a higher epoch, recovers and commits; when A resumes it is
/// refused everywhere and exits; no record A wrote after B took over was ever acknowledged
/// (every A ack is at or below B's recovered VDL); every acknowledged commit of both is on a
/// write quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_writer_is_fenced_after_takeover() {
    let cluster = MetaCluster::start(6, true).await;
    let a = cluster.writer("A", &["--lease-ms", "1500"]);
    let a_opened = a
        .wait_events("opened", 1, Duration::from_secs(60))
        .await
        .remove(0);
    a.wait_events("acked", 30, Duration::from_secs(60)).await;
    a.signal(libc::SIGSTOP);
    // Whatever A printed before the stop is in; give the pipe a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let b = cluster.writer("B", &["--lease-ms", "1500"]);
    let b_opened = b
        .wait_events("opened", 1, Duration::from_secs(60))
        .await
        .remove(0);
    assert!(
        b_opened["epoch"].as_u64() > a_opened["epoch"].as_u64(),
        "{b_opened} vs {a_opened}"
    );
    let b_vdl = b_opened["recovered_vdl"].as_u64().unwrap();
    b.wait_events("acked", 30, Duration::from_secs(60)).await;

    a.signal(libc::SIGCONT);
    let mut a = a;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = a.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "writer A kept running after being fenced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(EXIT_FENCED), "A must stop as fenced");
    let a_acks = a.events("acked");
    for ack in &a_acks {
        assert!(
            ack["cpl"].as_u64().unwrap() <= b_vdl,
            "A acked {ack} after B took over at VDL {b_vdl}"
        );
    }
    let end = a
        .events("fenced")
        .into_iter()
        .chain(a.events("lease-lost"))
        .count();
    assert_eq!(end, 1, "A must say why it stopped");

    b.wait_events("acked", 60, Duration::from_secs(60)).await;
    // B is killed mid-stream: every ack it printed must still be durable.
    let b_acks = b.events("acked");
    drop(b);
    let held = all_records(&cluster).await;
    assert_acked_on_quorum(&held, "A", &a_acks);
    assert_acked_on_quorum(&held, "B", &b_acks);
}
