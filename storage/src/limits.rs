//! Every limit of the page path, in one place. Defaults that an operator may change have a flag
//! in [`crate::config`]; the rest are fixed. Relationships are checked at compile time.

use std::time::Duration;

use crate::page::PAGE_SIZE;

/// Memory one storage node spends on page versions that are not yet in layer files and on its
/// page cache, over all its segments (flag `--page-memory-bytes`).
pub const PAGE_MEMORY_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Below this a node cannot hold one open layer and a useful cache per segment.
pub const PAGE_MEMORY_BYTES_MIN: u64 = 4 * 1024 * 1024;
/// An open (in-memory) layer is frozen into a delta layer file at this size
/// (flag `--page-layer-bytes`; capped by the segment's share of the memory limit).
pub const LAYER_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
pub const LAYER_BYTES_MIN: u64 = 16 * 1024;
/// A new image layer is written once the delta layers above the newest one hold this many bytes
/// (and at least as many as that image layer: write amplification stays below 2x)
/// (flag `--page-image-layer-bytes`).
pub const IMAGE_LAYER_DELTA_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// An open layer older than this is frozen even if small, so versions reach disk and object
/// storage in bounded time (flag `--page-freeze-ms`).
pub const LAYER_FREEZE_INTERVAL_DEFAULT: Duration = Duration::from_secs(10);
/// How often a segment uploads new layers and log to object storage (flag `--page-upload-ms`).
pub const UPLOAD_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// A compute's read-point report holds versions this long unless renewed
/// (flag `--read-point-ttl-ms`). Computes that never report are covered too: versions are kept
/// back to the materialized point of this long ago.
pub const READ_POINT_TTL_DEFAULT: Duration = Duration::from_secs(30);
/// Computes whose read points one node tracks; reports beyond it are refused (transient).
pub const READ_POINTS_MAX: usize = 4096;

/// Redo records a page's version chain may hold above its last image before the materializer
/// stores a full image instead (coalescing): bounds the redo one GetPage replays.
pub const COALESCE_REDO_MAX: u32 = 16;
/// Pages whose chain length the materializer tracks; beyond it the map is cleared, which only
/// makes the next change of each page store an image a little early.
pub const COALESCE_PAGES_TRACKED_MAX: usize = 1024 * 1024;

/// Bytes of hot log the materializer reads and applies in one step (one write-lock hold).
pub const MATERIALIZE_BATCH_BYTES: usize = 256 * 1024;
/// How often the materializer looks at the segment when SCL did not move (the VDL hint and
/// complete LSN move without waking anyone).
pub const MATERIALIZE_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Least time between two materialization steps of a segment that is keeping up: the records
/// of many appends are read and applied in one step instead of one step per append.
pub const MATERIALIZE_PACE: Duration = Duration::from_millis(10);
/// How often a segment checks whether to write an image layer and drop old versions.
pub const COMPACT_INTERVAL: Duration = Duration::from_millis(500);
/// How often every layer file is re-read and its CRCs checked (scrub).
pub const SCRUB_INTERVAL: Duration = Duration::from_secs(600);

/// How long GetPage waits for a segment to become complete up to the requested LSN (gossip
/// catching up) before it answers UNAVAILABLE so the caller tries another segment.
pub const GETPAGE_CATCH_UP_WAIT: Duration = Duration::from_secs(1);
/// Hot-log bytes one GetPage reads above the materialized point before it waits for the
/// materializer instead.
pub const HOT_SCAN_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Records of one layer file (a sanity bound checked when a file is opened).
pub const LAYER_ENTRIES_MAX: u64 = 1 << 32;
/// A gossip view of the PG's peers older than this is not trusted to decide who uploads: the
/// node uploads its copy itself rather than risk that nobody does.
pub const UPLOADER_VIEW_STALE: Duration = Duration::from_secs(10);
/// Bytes of hot log in one object uploaded as log.
pub const UPLOAD_LOG_CHUNK_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Log objects uploaded in one upload pass, so one pass is bounded.
pub const UPLOAD_LOG_CHUNKS_PER_PASS_MAX: usize = 16;
/// Bytes of a manifest object (it lists layers and log chunks).
pub const MANIFEST_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Attempts to rebuild a segment from object storage before starting from the log alone.
pub const RESTORE_ATTEMPTS_MAX: u32 = 3;
/// One object-store request.
pub const OBJECT_STORE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bookkeeping bytes counted per stored version on top of its payload.
pub const VERSION_OVERHEAD_BYTES: usize = 64;

const _: () = assert!(PAGE_MEMORY_BYTES_MIN >= 4 * LAYER_BYTES_MIN);
const _: () = assert!(LAYER_BYTES_MIN as usize >= PAGE_SIZE);
const _: () = assert!(COALESCE_REDO_MAX >= 1);
const _: () = assert!(MATERIALIZE_BATCH_BYTES <= HOT_SCAN_BYTES_MAX);
const _: () = assert!(UPLOAD_LOG_CHUNK_BYTES_MAX >= sixfold_log_service::record::RECORD_BYTES_MAX);
