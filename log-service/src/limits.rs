//! Every limit of the log path, in one place. Relationships between them are checked at
//! compile time.

use std::time::Duration;

pub use crate::record::{RECORD_BYTES_MAX, RECORD_PAYLOAD_BYTES_MAX};

/// Copies of every protection group.
pub const SEGMENTS_PER_PG: usize = 6;
/// Acks that make a record durable.
pub const WRITE_QUORUM: usize = 4;
/// Segments a recovering writer must hear from to see every durable record.
pub const READ_QUORUM: usize = 3;
const _: () = assert!(WRITE_QUORUM + READ_QUORUM > SEGMENTS_PER_PG);
const _: () = assert!(2 * WRITE_QUORUM > SEGMENTS_PER_PG);

/// Protection groups in one volume.
pub const VOLUME_PGS_MAX: usize = 4096;

/// One `Append` or `ReadRecords` body.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;
const _: () = assert!(BATCH_BYTES_MAX >= RECORD_BYTES_MAX);
/// gRPC message limit: a batch plus framing.
pub const GRPC_MESSAGE_BYTES_MAX: usize = BATCH_BYTES_MAX + 64 * 1024;

/// Appends a writer keeps in flight to one segment: while one batch waits for its fsync, the
/// next is already on its way and joins the following fsync.
pub const APPENDS_IN_FLIGHT_MAX: usize = 4;

/// LSN allocation limit: the writer never allocates beyond VDL + LAL.
pub const LAL_LSNS: u64 = 64 * 1024;
/// Records in one mini-transaction.
pub const MTR_RECORDS_MAX: usize = 1024;
const _: () = assert!((MTR_RECORDS_MAX as u64) < LAL_LSNS);
/// Durable records the writer keeps for segments that fell behind before leaving them to gossip.
pub const WRITER_RETAIN_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Records indexed by one segment's hot log.
pub const SEGMENT_RECORDS_MAX: usize = 16 * 1024 * 1024;
/// Bytes queued for one segment's log file that the disk has not taken yet; appends beyond it
/// are refused (transient) until the flusher catches up.
pub const FLUSH_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
const _: () = assert!(FLUSH_QUEUE_BYTES_MAX >= 4 * BATCH_BYTES_MAX);
/// Zeros a segment's flusher keeps written past the end of its records (see `flusher`).
pub const PREALLOCATE_AHEAD_BYTES: u64 = 4 * 1024 * 1024;
/// Zeros written in one go; a batch that arrives meanwhile waits for at most this.
pub const PREALLOCATE_PIECE_BYTES: usize = 512 * 1024;
const _: () = assert!(PREALLOCATE_PIECE_BYTES as u64 <= PREALLOCATE_AHEAD_BYTES);
/// Durable records of one segment log kept in the page cache behind its end (see `flusher`).
pub const LOG_CACHED_BYTES: u64 = 32 * 1024 * 1024;
/// How much further the end moves before the next drop from the page cache.
pub const LOG_UNCACHE_STEP_BYTES: u64 = 8 * 1024 * 1024;
/// Truncation ranges a declaration carries (one is added per writer takeover).
pub const DECLARATION_RANGES_MAX: usize = 256;

/// How often a segment polls its peers for holes.
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// Bytes a segment pulls from a peer in one request.
pub const GOSSIP_BATCH_BYTES: usize = BATCH_BYTES_MAX;
/// How often the remembered VDL hint is made durable.
pub const VDL_HINT_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// One RPC to a storage node.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting to a storage node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait between reconnection attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How often a writer refreshes the SCL of a segment it is waiting on.
pub const SCL_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Records a segment's hot log may hold above what the page materializer has applied before
/// writer appends wait: the back-pressure that reaches the writer through its LAL.
pub const UNMATERIALIZED_RECORDS_MAX: usize = 1024 * 1024;
/// How long a writer append waits for materialization before it is refused (transient).
pub const MATERIALIZE_WAIT_MAX: Duration = Duration::from_secs(2);
