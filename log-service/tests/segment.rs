//! In-process tests of one segment's rules: epochs, truncation, and what reopening finds on a
//! damaged disk. The end-to-end versions over real processes live in the root `tests/`.

use sixfold_log_service::declaration::{Declaration, TruncatedRange};
use sixfold_log_service::error::{ErrorKind, SegmentError};
use sixfold_log_service::limits::PREALLOCATE_AHEAD_BYTES;
use sixfold_log_service::record::{self, FLAG_CPL};
use sixfold_log_service::segment::{Origin, Segment};
use sixfold_log_service::{Epoch, Lsn, PageId, PgId};
use std::os::unix::fs::FileExt;

const PAGES: std::ops::Range<u64> = 0..100;

/// Records 1..=n of one PG, chained, each on page (lsn % 100).
fn chain(from: u64, to: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    for lsn in from..=to {
        let prev = if lsn == 1 { 0 } else { lsn - 1 };
        record::encode(
            &mut buf,
            Lsn(lsn),
            Lsn(prev),
            PageId(lsn % 100),
            FLAG_CPL,
            1,
            format!("r{lsn}").as_bytes(),
        );
    }
    buf
}

fn writer(epoch: u64) -> Origin {
    Origin::Writer {
        epoch: Epoch(epoch),
        vdl_hint: Lsn::ZERO,
        pg_tail: Lsn::ZERO,
    }
}

fn established(dir: &std::path::Path, epoch: u64) -> Segment {
    let (seg, _) = Segment::open(dir, PgId(0), PAGES).unwrap();
    let decl = Declaration {
        epoch: Epoch(epoch),
        ranges: vec![],
    };
    seg.truncate(Epoch(epoch), decl).unwrap();
    seg
}

/// Proves: appends are refused until the writer's epoch is established by its truncation,
/// refused for good once a newer epoch sealed the segment, and accepted only from the current one.
#[tokio::test]
async fn epochs_fence_and_must_be_established() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, _) = Segment::open(dir.path(), PgId(0), PAGES).unwrap();
    let err = seg.append(&chain(1, 3), writer(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::EpochNotEstablished);
    seg.truncate(
        Epoch(1),
        Declaration {
            epoch: Epoch(1),
            ranges: vec![],
        },
    )
    .unwrap();
    assert_eq!(seg.append(&chain(1, 3), writer(1)).await.unwrap(), Lsn(3));
    seg.seal(Epoch(2)).unwrap();
    let err = seg.append(&chain(4, 5), writer(1)).await.unwrap_err();
    assert!(matches!(err, SegmentError::Fenced { .. }), "{err}");
    assert!(matches!(
        seg.seal(Epoch(1)),
        Err(SegmentError::Fenced { .. })
    ));
    // Sealed but not yet truncated by epoch 2: its writer must establish first.
    assert_eq!(
        seg.append(&chain(4, 5), writer(2))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::EpochNotEstablished
    );
    // Epoch survives a restart.
    drop(seg);
    let (seg, _) = Segment::open(dir.path(), PgId(0), PAGES).unwrap();
    assert_eq!(seg.state().epoch, Epoch(2));
    assert!(matches!(
        seg.append(&chain(4, 5), writer(1)).await,
        Err(SegmentError::Fenced { .. })
    ));
}

/// Proves: a record for a page outside the PG, or with a bad CRC, is refused whole and nothing
/// of the message is stored.
#[tokio::test]
async fn bad_records_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let seg = established(dir.path(), 1);
    let mut bad = chain(1, 3);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        seg.append(&bad, writer(1)).await.unwrap_err().kind(),
        ErrorKind::Rejected
    );
    let mut foreign = Vec::new();
    record::encode(&mut foreign, Lsn(1), Lsn(0), PageId(500), 0, 1, b"x");
    assert!(matches!(
        seg.append(&foreign, writer(1)).await,
        Err(SegmentError::WrongPg { .. })
    ));
    assert_eq!(seg.state().record_count, 0);
}

/// Proves: SCL follows the backlink chain: it stops at a hole and jumps when the hole is filled,
/// and duplicates are ignored.
#[tokio::test]
async fn scl_follows_backlinks_across_holes() {
    let dir = tempfile::tempdir().unwrap();
    let seg = established(dir.path(), 1);
    assert_eq!(seg.append(&chain(1, 2), writer(1)).await.unwrap(), Lsn(2));
    assert_eq!(seg.append(&chain(5, 7), writer(1)).await.unwrap(), Lsn(2));
    assert_eq!(seg.first_held_above_scl(), Some(Lsn(5)));
    assert_eq!(
        seg.append(&chain(3, 4), Origin::Gossip).await.unwrap(),
        Lsn(7)
    );
    assert_eq!(
        seg.append(&chain(1, 7), Origin::Gossip).await.unwrap(),
        Lsn(7)
    );
    assert_eq!(seg.state().record_count, 7);
}

/// Proves: the flusher writes zeros ahead of the records; reopening treats them as the clean end
/// of the log (nothing cut, nothing skipped), and later appends land right after the records,
/// over the zeros, so a second reopen finds every record.
#[tokio::test]
async fn preallocated_zeros_are_the_clean_end_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pg-0.log");
    let seg = established(dir.path(), 1);
    seg.append(&chain(1, 10), writer(1)).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&log).unwrap().len() < PREALLOCATE_AHEAD_BYTES {
        assert!(
            std::time::Instant::now() < deadline,
            "no zeros written ahead"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(seg);
    let bytes = std::fs::read(&log).unwrap();
    let end = record::log_end(&bytes);
    assert_eq!(end, chain(1, 10).len());
    assert!(bytes[end..].iter().all(|b| *b == 0));

    let (seg, report) = Segment::open(dir.path(), PgId(0), PAGES).unwrap();
    assert_eq!(
        (
            report.records,
            report.corrupt_skipped,
            report.torn_bytes_cut
        ),
        (10, 0, 0)
    );
    seg.append(&chain(11, 20), writer(1)).await.unwrap();
    drop(seg);
    let bytes = std::fs::read(&log).unwrap();
    assert_eq!(record::log_end(&bytes), chain(1, 20).len());
    assert_eq!(&bytes[..chain(1, 20).len()], &chain(1, 20)[..]);

    let (seg, report) = Segment::open(dir.path(), PgId(0), PAGES).unwrap();
    assert_eq!(
        (
            report.records,
            report.corrupt_skipped,
            report.torn_bytes_cut
        ),
        (20, 0, 0)
    );
    assert_eq!(seg.state().scl, Lsn(20));
    assert_eq!(served_lsns(&seg), (1..=20).collect::<Vec<_>>());
}

/// Proves: on reopen a torn tail is cut, a corrupt record in the middle is skipped (SCL stops
/// before it), and everything else survives.
#[tokio::test]
async fn reopen_cuts_torn_tail_and_skips_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let seg = established(dir.path(), 1);
    seg.append(&chain(1, 10), writer(1)).await.unwrap();
    drop(seg);
    let log = dir.path().join("pg-0.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let good = record::log_end(&bytes);
    assert!(
        bytes[good..].iter().all(|b| *b == 0),
        "only zeros follow the records"
    );
    // Flip a payload bit of record 4, and tear a partial record onto the end of the records
    // (over the preallocated zeros).
    let mut at = 0;
    for _ in 0..3 {
        at += record::decode(&bytes[at..]).unwrap().bytes.len();
    }
    bytes[at + record::RECORD_HEADER_BYTES] ^= 0x01;
    let torn = chain(11, 11);
    let torn = &torn[..torn.len() - 3];
    bytes.resize(bytes.len().max(good + torn.len()), 0);
    bytes[good..good + torn.len()].copy_from_slice(torn);
    std::fs::write(&log, &bytes).unwrap();

    let (seg, report) = Segment::open(dir.path(), PgId(0), PAGES).unwrap();
    assert_eq!(report.corrupt_skipped, 1);
    // Counted to its last non-zero byte: zeros after it look like the preallocated rest.
    let torn_nonzero = torn.iter().rposition(|b| *b != 0).unwrap() + 1;
    assert_eq!(report.torn_bytes_cut, torn_nonzero as u64);
    assert_eq!(std::fs::metadata(&log).unwrap().len(), good as u64);
    let state = seg.state();
    assert_eq!((state.scl, state.record_count), (Lsn(3), 9));
    let lsns = served_lsns(&seg);
    assert_eq!(lsns, vec![1, 2, 3, 5, 6, 7, 8, 9, 10]);
    // A peer's good copy fills the hole.
    assert_eq!(
        seg.append(&chain(4, 4), Origin::Gossip).await.unwrap(),
        Lsn(10)
    );
}

/// Proves: a truncation declaration drops its range at once and after a restart, a newer
/// declaration replaces an older one wholesale, and the writer of the new epoch can write again
/// above the range.
#[tokio::test]
async fn truncation_is_durable_and_replaced_by_newer_declarations() {
    let dir = tempfile::tempdir().unwrap();
    let seg = established(dir.path(), 1);
    seg.append(&chain(1, 10), writer(1)).await.unwrap();
    let first = Declaration {
        epoch: Epoch(2),
        ranges: vec![TruncatedRange {
            after: Lsn(6),
            through: Lsn(100),
        }],
    };
    let state = seg.truncate(Epoch(2), first.clone()).unwrap();
    assert_eq!((state.scl, state.record_count), (Lsn(6), 6));
    drop(seg);
    let (seg, report) = Segment::open(dir.path(), PgId(0), PAGES).unwrap();
    assert_eq!(report.truncated_dropped, 4);
    assert_eq!(seg.state().scl, Lsn(6));
    // Gossip from a stale peer cannot bring a truncated record back.
    assert_eq!(
        seg.append(&chain(7, 8), Origin::Gossip).await.unwrap(),
        Lsn(6)
    );
    // The new writer continues above the range, linking to the last surviving record.
    let mut next = Vec::new();
    record::encode(&mut next, Lsn(101), Lsn(6), PageId(1), FLAG_CPL, 1, b"new");
    assert_eq!(seg.append(&next, writer(2)).await.unwrap(), Lsn(101));
    // An older declaration is ignored; a newer one wins wholesale.
    let older = Declaration {
        epoch: Epoch(1),
        ranges: vec![TruncatedRange {
            after: Lsn(0),
            through: Lsn(200),
        }],
    };
    seg.truncate(Epoch(2), older).unwrap();
    assert_eq!(seg.state().record_count, 7);
    assert!(seg.adopt_declaration(first).is_ok_and(|changed| !changed));
}

/// Proves: a segment learns it is complete past its last record only when the writer says the
/// PG's tail is one it holds.
#[tokio::test]
async fn complete_lsn_needs_the_pg_tail() {
    let dir = tempfile::tempdir().unwrap();
    let seg = established(dir.path(), 1);
    seg.append(&chain(1, 3), writer(1)).await.unwrap();
    let hint = |tail: u64, vdl: u64| Origin::Writer {
        epoch: Epoch(1),
        vdl_hint: Lsn(vdl),
        pg_tail: Lsn(tail),
    };
    seg.append(&[], hint(5, 50)).await.unwrap();
    assert_eq!(
        seg.state().complete_lsn,
        Lsn(3),
        "the PG has records this segment lacks"
    );
    seg.append(&[], hint(3, 50)).await.unwrap();
    assert_eq!(seg.state().complete_lsn, Lsn(50));
}

/// Proves: a record that rots on disk while the segment runs is caught by the CRC check on
/// read, not served, dropped from the index (SCL falls back before it), and a peer's copy
/// fills the hole again. Its neighbours in the same contiguous read are still served.
#[tokio::test]
async fn rot_found_on_read_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let seg = established(dir.path(), 1);
    seg.append(&chain(1, 8), writer(1)).await.unwrap();
    let log = dir.path().join("pg-0.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let mut at = 0;
    for _ in 0..4 {
        at += record::decode(&bytes[at..]).unwrap().bytes.len();
    }
    // One byte rewritten in place: the segment's flusher may be writing zeros past the end.
    let victim = at + record::RECORD_HEADER_BYTES;
    bytes[victim] ^= 0x40;
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.write_all_at(&bytes[victim..victim + 1], victim as u64)
        .unwrap();

    let lsns = served_lsns(&seg);
    assert_eq!(lsns, vec![1, 2, 3, 4, 6, 7, 8]);
    assert_eq!(seg.state().scl, Lsn(4));
    assert_eq!(
        seg.append(&chain(5, 5), Origin::Gossip).await.unwrap(),
        Lsn(8)
    );
}

/// The LSNs `seg` serves for everything it holds, in order.
fn served_lsns(seg: &Segment) -> Vec<u64> {
    let served = seg.read(Lsn::ZERO, Lsn::MAX, 1 << 20).unwrap();
    record::decode_all(&served.records)
        .unwrap()
        .iter()
        .map(|r| r.header.lsn.get())
        .collect()
}
