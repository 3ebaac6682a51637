//! The meta node's Raft storage on disk: openraft's own storage test suite, plus crash and
//! corruption cases the suite does not cover (reopen after drop, torn tail, flipped bits,
//! compaction, snapshots across restarts).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    AnyError, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader,
    RaftSnapshotBuilder, StorageIOError, Vote,
};
use sixfold_meta::frame::scan_frames;
use sixfold_meta::{
    Command, CommandOutcome, LOG_FILE_NAME, LogStore, MetaEntry, MetaError, MetaLogId,
    MetaResponse, MetaStorageError, NodeId, NodeState, StateMachineStore, TypeConfig, VolumeId,
    open_storage,
};
use tempfile::TempDir;

/// Fresh stores in a fresh temporary directory, removed when the guard drops.
struct TempStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), MetaStorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log, sm) =
            open_storage(dir.path()).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

// Proves the log store and state machine meet openraft's storage contract, by running
// openraft's own suite (every test on fresh on-disk stores).
#[test]
fn openraft_storage_suite() {
    Suite::test_all(TempStores).expect("openraft storage suite");
}

fn log_id(term: u64, index: u64) -> MetaLogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn command_entry(term: u64, index: u64) -> MetaEntry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::Heartbeat {
            id: NodeId(index),
            now_ms: index * 10,
        }),
    }
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<MetaEntry> {
    indexes.map(|i| command_entry(term, i)).collect()
}

async fn all_entries(log: &mut LogStore) -> Vec<MetaEntry> {
    log.try_get_log_entries(..).await.unwrap()
}

fn log_path(dir: &Path) -> std::path::PathBuf {
    dir.join(LOG_FILE_NAME)
}

// Proves entries, the vote, the committed id and the purge point survive dropping the store and
// opening it again, and that the reopened store keeps appending after them.
#[tokio::test]
async fn reopen_keeps_entries_vote_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = entries(1, 1..=5);
    written.push(Entry {
        log_id: log_id(2, 6),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], ())),
    });
    written.push(Entry {
        log_id: log_id(2, 7),
        payload: EntryPayload::Blank,
    });
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append(written[..3].to_vec()).await.unwrap();
        log.blocking_append(written[3..].to_vec()).await.unwrap();
        log.save_vote(&Vote::new(2, 3)).await.unwrap();
        log.save_committed(Some(log_id(2, 6))).await.unwrap();
        log.purge(log_id(1, 2)).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(all_entries(&mut log).await, written[2..].to_vec());
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 3)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 6)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(2, 7)));

    log.blocking_append(entries(2, 8..=8)).await.unwrap();
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(all_entries(&mut log).await.len(), 6);
}

// Proves a torn last entry (the file cut at every byte of its frame) is cut at open, the entries
// before it are kept, and the log accepts new entries after the cut.
#[tokio::test]
async fn torn_last_entry_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append(entries(1, 1..=3)).await.unwrap();
    }
    let full = fs::read(log_path(dir.path())).unwrap();
    let third = scan_frames(&full).unwrap().frames[2].0 as usize;
    for cut in (third + 1)..full.len() {
        fs::write(log_path(dir.path()), &full[..cut]).unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(
            all_entries(&mut log).await,
            entries(1, 1..=2),
            "cut at {cut}"
        );
        assert_eq!(
            fs::metadata(log_path(dir.path())).unwrap().len(),
            third as u64,
            "the torn bytes are gone from the file"
        );
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    log.blocking_append(entries(2, 3..=4)).await.unwrap();
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(all_entries(&mut log).await.len(), 4);
}

// Proves a flipped bit in a middle entry is reported as corruption with its offset (never cut
// or served), and a flipped bit in the vote file is reported too.
#[tokio::test]
async fn flipped_bit_mid_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append(entries(1, 1..=3)).await.unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
    }
    let good = fs::read(log_path(dir.path())).unwrap();
    let second = scan_frames(&good).unwrap().frames[1].0;
    let mut bad = good.clone();
    bad[second as usize + 20] ^= 0x10;
    fs::write(log_path(dir.path()), &bad).unwrap();
    match LogStore::open(dir.path()) {
        Err(MetaError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, second);
            assert!(reason.contains("middle of the log"), "{reason}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("a corrupt log opened"),
    }
    // The file is left as it was, for an operator to inspect.
    assert_eq!(fs::read(log_path(dir.path())).unwrap(), bad);

    fs::write(log_path(dir.path()), &good).unwrap();
    let vote_path = dir.path().join(sixfold_meta::log_store::VOTE_FILE_NAME);
    let mut vote = fs::read(&vote_path).unwrap();
    let last = vote.len() - 1;
    vote[last] ^= 0x01;
    fs::write(&vote_path, &vote).unwrap();
    let err = LogStore::open(dir.path())
        .err()
        .expect("a corrupt vote opened");
    assert!(matches!(err, MetaError::Corrupt { .. }), "{err}");
}

// Proves truncation is durable: entries at and after the truncation point are gone after a
// reopen, and entries written in their place survive.
#[tokio::test]
async fn truncate_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append(entries(1, 1..=10)).await.unwrap();
        log.truncate(log_id(1, 6)).await.unwrap();
        log.blocking_append(entries(2, 6..=7)).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    let mut expected = entries(1, 1..=5);
    expected.extend(entries(2, 6..=7));
    assert_eq!(all_entries(&mut log).await, expected);
}

// Proves purged entries are compacted out of the file once enough pile up, that purging past
// the end empties the file, and that both survive a reopen.
#[tokio::test]
async fn purge_compacts_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    for start in (1..=2100).step_by(100) {
        log.blocking_append(entries(1, start..=start + 99))
            .await
            .unwrap();
    }
    let before = fs::metadata(log_path(dir.path())).unwrap().len();
    log.purge(log_id(1, 2000)).await.unwrap();
    let after = fs::metadata(log_path(dir.path())).unwrap().len();
    assert!(after * 10 < before, "file shrank from {before} to {after}");
    drop(log);

    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(all_entries(&mut log).await, entries(1, 2001..=2100));
    log.purge(log_id(1, 2500)).await.unwrap();
    assert_eq!(fs::metadata(log_path(dir.path())).unwrap().len(), 0);
    log.blocking_append(entries(1, 2501..=2502)).await.unwrap();
    drop(log);

    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(all_entries(&mut log).await, entries(1, 2501..=2502));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2500)));
}

// Proves a second store cannot open a directory a live store holds.
#[tokio::test]
async fn one_store_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _log = LogStore::open(dir.path()).unwrap();
    assert!(matches!(
        LogStore::open(dir.path()),
        Err(MetaError::Locked { .. })
    ));
}

fn normal(index: u64, command: Command) -> MetaEntry {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(command),
    }
}

fn cluster_commands() -> Vec<Command> {
    let mut commands = Vec::new();
    for (id, az) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")] {
        commands.push(Command::RegisterNode {
            id: NodeId(id),
            address: format!("10.0.0.{id}:7000"),
            az: az.into(),
            now_ms: 5,
        });
        commands.push(Command::SetNodeState {
            id: NodeId(id),
            state: NodeState::Ready,
        });
    }
    commands.push(Command::CreateVolume {
        id: VolumeId(1),
        page_size: 8192,
        pages_per_pg: 128,
        pg_count: 3,
    });
    commands
}

// Proves the state machine comes back from its snapshot after a restart (state and last
// applied as of the snapshot; later entries are openraft's to re-apply from the log), and that
// another node rebuilt from the snapshot data holds the same map while damaged snapshot data
// is refused.
#[tokio::test]
async fn state_machine_restarts_from_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, map_at_snapshot) = {
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let commands = cluster_commands();
        let last = commands.len() as u64;
        let responses = sm
            .apply(
                commands
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| normal(i as u64 + 1, c)),
            )
            .await
            .unwrap();
        assert!(matches!(
            responses.last(),
            Some(MetaResponse::Command(Ok(CommandOutcome::VolumeCreated(_))))
        ));
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, last)));
        let map = sm.cluster_map().unwrap();
        // Applied after the snapshot: lost from the state machine at restart.
        sm.apply([normal(
            last + 1,
            Command::AcquireLease {
                holder: "writer-1".into(),
                now_ms: 100,
                lease_ms: 1000,
            },
        )])
        .await
        .unwrap();
        (snapshot, map)
    };

    let mut sm = StateMachineStore::open(dir.path()).unwrap();
    assert_eq!(sm.cluster_map().unwrap(), map_at_snapshot);
    assert_eq!(
        sm.applied_state().await.unwrap().0,
        snapshot.meta.last_log_id
    );
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);

    let other_dir = tempfile::tempdir().unwrap();
    let mut follower = StateMachineStore::open(other_dir.path()).unwrap();
    let data = current.snapshot.into_inner();
    let mut damaged = data.clone();
    let last = damaged.len() - 2;
    damaged[last] ^= 0x40;
    let refused = follower
        .install_snapshot(&current.meta, Box::new(std::io::Cursor::new(damaged)))
        .await;
    assert!(refused.is_err(), "damaged snapshot installed");
    follower
        .install_snapshot(&current.meta, Box::new(std::io::Cursor::new(data)))
        .await
        .unwrap();
    assert_eq!(follower.cluster_map().unwrap(), map_at_snapshot);
    drop(follower);
    let follower = StateMachineStore::open(other_dir.path()).unwrap();
    assert_eq!(follower.cluster_map().unwrap(), map_at_snapshot);
}
