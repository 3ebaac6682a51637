//! Every limit of the meta crate, in one place. Anything that grows with input has a `*_MAX`.

/// Segments (copies) of every protection group.
pub const SEGMENTS_PER_PG: usize = 6;
/// Availability zones a PG's segments are spread over.
pub const AZS_PER_PG: usize = 3;
/// Segments of one PG placed in one AZ.
pub const SEGMENTS_PER_AZ: usize = 2;
const _: () = assert!(SEGMENTS_PER_AZ * AZS_PER_PG == SEGMENTS_PER_PG);

/// Storage nodes the cluster map may hold.
pub const NODES_MAX: usize = 4096;
/// Volumes in the cluster map. Storage nodes serve one volume per cluster in this version
/// (segment files and the LogService are not yet keyed by volume), so the map refuses a second.
pub const VOLUMES_MAX: usize = 1;
/// Protection groups in one volume (a 64 TiB volume of 10 GiB PGs needs 6,554).
pub const PGS_PER_VOLUME_MAX: u32 = 16_384;
/// Bytes of a node's gRPC address.
pub const ADDRESS_BYTES_MAX: usize = 256;
/// Bytes of an availability-zone label.
pub const AZ_BYTES_MAX: usize = 64;
/// Bytes of a lease holder's name.
pub const HOLDER_BYTES_MAX: usize = 256;

/// Smallest and largest page size a volume may use (the design's page is 8 KiB).
pub const PAGE_SIZE_BYTES_MIN: u32 = 512;
pub const PAGE_SIZE_BYTES_MAX: u32 = 64 * 1024;
/// Pages in one protection group.
pub const PAGES_PER_PG_MAX: u64 = 1 << 32;

/// Longest writer lease one acquire or renew may grant.
pub const LEASE_MS_MAX: u64 = 60_000;

/// Largest payload of one frame on disk: one log entry, the vote, the log state or a snapshot.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Largest single log entry (after encoding).
pub const LOG_ENTRY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest snapshot (the encoded cluster map).
pub const SNAPSHOT_BYTES_MAX: usize = FRAME_PAYLOAD_BYTES_MAX;
/// Largest small metadata file (vote, log state).
pub const SMALL_FILE_BYTES_MAX: usize = 64 * 1024;
/// Largest log file read at open. The log is compacted after purges, so a larger file means
/// snapshots stopped happening.
pub const LOG_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// Purged frames left in the log file before it is rewritten without them.
pub const LOG_COMPACT_PURGED_FRAMES_MIN: usize = 1024;

const _: () = assert!(LOG_ENTRY_BYTES_MAX <= FRAME_PAYLOAD_BYTES_MAX);
const _: () = assert!(SMALL_FILE_BYTES_MAX <= FRAME_PAYLOAD_BYTES_MAX);
const _: () = assert!(FRAME_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () =
    assert!(PAGE_SIZE_BYTES_MIN.is_power_of_two() && PAGE_SIZE_BYTES_MAX.is_power_of_two());

/// One Raft RPC between members (snapshots are sent in chunks well below this).
pub const RAFT_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// One MetaService message (a command, a result, the cluster map).
pub const META_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// A storage node that has not heartbeated for this long is marked Failed.
pub const NODE_FAILED_AFTER_MS: u64 = 3_000;
/// How often the leader looks for nodes that stopped heartbeating.
pub const FAILURE_CHECK_INTERVAL_MS: u64 = 500;
/// How often storage nodes heartbeat.
pub const HEARTBEAT_INTERVAL_MS: u64 = 500;
const _: () = assert!(HEARTBEAT_INTERVAL_MS * 3 <= NODE_FAILED_AFTER_MS);
/// Log entries between snapshots (by default).
pub const SNAPSHOT_EVERY_LOGS: u64 = 1_000;
/// How long a client keeps retrying a meta call across members and elections.
pub const CLIENT_RETRY_MS: u64 = 15_000;
