//! The page path's flags on `sixfold storage`, and the per-segment settings derived from them.
//!
//! # Object storage
//! `--object-store` takes a URL:
//! - `file:///absolute/dir`: a local directory. **Default**: `file://<data-dir>/../object-store`,
//!   a sibling of the data directory, so a node that loses its data directory still finds its
//!   snapshots (in a test cluster all nodes share it; each writes under its own `node-<id>/`).
//! - `s3://bucket/prefix` (or `s3a://`): any S3-compatible endpoint. The endpoint, region and
//!   "allow plain http" come from the flags below or the standard `AWS_ENDPOINT`,
//!   `AWS_DEFAULT_REGION`/`AWS_REGION`, `AWS_ALLOW_HTTP` variables; credentials only from
//!   the standard `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN` variables (or
//!   the instance's role), never from flags, so they do not show up in process listings.
//! - `memory://`: in this process only (tests and benchmarks).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::StorageError;
use crate::limits::{
    COALESCE_REDO_MAX, IMAGE_LAYER_DELTA_BYTES_DEFAULT, LAYER_BYTES_DEFAULT, LAYER_BYTES_MIN,
    LAYER_FREEZE_INTERVAL_DEFAULT, PAGE_MEMORY_BYTES_DEFAULT, PAGE_MEMORY_BYTES_MIN,
    READ_POINT_TTL_DEFAULT, UPLOAD_INTERVAL_DEFAULT,
};
use crate::page::PAGE_SIZE;
use crate::page_store::PageStoreConfig;

const fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Flags of the page path (flattened into `sixfold storage`'s arguments).
#[derive(clap::Args, Debug, Clone)]
pub struct PageArgs {
    /// Object storage for layer and log snapshots: file:///dir, s3://bucket/prefix or memory://
    /// [default: file://<data-dir>/../object-store].
    #[arg(long)]
    pub object_store: Option<String>,
    /// S3 endpoint URL (e.g. http://127.0.0.1:9000 for a local S3-compatible server).
    #[arg(long)]
    pub object_store_endpoint: Option<String>,
    /// S3 region.
    #[arg(long)]
    pub object_store_region: Option<String>,
    /// Allow plain-http S3 endpoints.
    #[arg(long)]
    pub object_store_allow_http: bool,
    /// Memory for unwritten page versions and the page cache, over all segments of the node.
    #[arg(long, default_value_t = PAGE_MEMORY_BYTES_DEFAULT)]
    pub page_memory_bytes: u64,
    /// Size at which an in-memory layer is written as a delta layer file.
    #[arg(long, default_value_t = LAYER_BYTES_DEFAULT)]
    pub page_layer_bytes: u64,
    /// Delta-layer bytes above the newest image layer that trigger a new image layer.
    #[arg(long, default_value_t = IMAGE_LAYER_DELTA_BYTES_DEFAULT)]
    pub page_image_layer_bytes: u64,
    /// An in-memory layer older than this is written even if small.
    #[arg(long, default_value_t = ms(LAYER_FREEZE_INTERVAL_DEFAULT))]
    pub page_freeze_ms: u64,
    /// How often new layers and log are uploaded to object storage.
    #[arg(long, default_value_t = ms(UPLOAD_INTERVAL_DEFAULT))]
    pub page_upload_ms: u64,
    /// How long a compute's read-point report pins page versions.
    #[arg(long, default_value_t = ms(READ_POINT_TTL_DEFAULT))]
    pub read_point_ttl_ms: u64,
}

impl Default for PageArgs {
    fn default() -> Self {
        PageArgs {
            object_store: None,
            object_store_endpoint: None,
            object_store_region: None,
            object_store_allow_http: false,
            page_memory_bytes: PAGE_MEMORY_BYTES_DEFAULT,
            page_layer_bytes: LAYER_BYTES_DEFAULT,
            page_image_layer_bytes: IMAGE_LAYER_DELTA_BYTES_DEFAULT,
            page_freeze_ms: ms(LAYER_FREEZE_INTERVAL_DEFAULT),
            page_upload_ms: ms(UPLOAD_INTERVAL_DEFAULT),
            read_point_ttl_ms: ms(READ_POINT_TTL_DEFAULT),
        }
    }
}

/// Where snapshots go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStoreConfig {
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: bool,
}

/// The page path's settings for one node.
#[derive(Debug, Clone)]
pub struct PageConfig {
    pub object_store: ObjectStoreConfig,
    pub memory_bytes: u64,
    pub layer_bytes: u64,
    pub image_layer_bytes: u64,
    pub freeze_interval: Duration,
    pub upload_interval: Duration,
    pub read_point_ttl: Duration,
}

/// The default object store: a sibling of the data directory.
pub fn default_object_store_dir(data_dir: &Path) -> Result<PathBuf, StorageError> {
    let abs = std::path::absolute(data_dir)?;
    Ok(match abs.parent() {
        Some(parent) => parent.join("object-store"),
        None => abs.join("object-store"),
    })
}

impl PageArgs {
    pub fn resolve(&self, data_dir: &Path) -> Result<PageConfig, StorageError> {
        let url = match &self.object_store {
            Some(url) => url.clone(),
            None => format!("file://{}", default_object_store_dir(data_dir)?.display()),
        };
        if self.page_memory_bytes < PAGE_MEMORY_BYTES_MIN {
            return Err(StorageError::Config(format!(
                "--page-memory-bytes must be at least {PAGE_MEMORY_BYTES_MIN}"
            )));
        }
        if self.page_layer_bytes < LAYER_BYTES_MIN {
            return Err(StorageError::Config(format!(
                "--page-layer-bytes must be at least {LAYER_BYTES_MIN}"
            )));
        }
        if self.page_upload_ms == 0 || self.read_point_ttl_ms == 0 || self.page_freeze_ms == 0 {
            return Err(StorageError::Config(
                "intervals must be at least 1 ms".into(),
            ));
        }
        Ok(PageConfig {
            object_store: ObjectStoreConfig {
                url,
                endpoint: self.object_store_endpoint.clone(),
                region: self.object_store_region.clone(),
                allow_http: self.object_store_allow_http,
            },
            memory_bytes: self.page_memory_bytes,
            layer_bytes: self.page_layer_bytes,
            image_layer_bytes: self.page_image_layer_bytes,
            freeze_interval: Duration::from_millis(self.page_freeze_ms),
            upload_interval: Duration::from_millis(self.page_upload_ms),
            read_point_ttl: Duration::from_millis(self.read_point_ttl_ms),
        })
    }
}

impl PageConfig {
    /// Splits the node's memory limit between its `segments`: per segment, half for the page
    /// cache and a quarter for the open layer (a frozen layer being written takes another
    /// quarter at most).
    pub fn store_config(&self, segments: usize) -> PageStoreConfig {
        let share = self.memory_bytes / segments.max(1) as u64;
        let layer_bytes = self.layer_bytes.min(share / 4).max(LAYER_BYTES_MIN);
        PageStoreConfig {
            layer_bytes: layer_bytes as usize,
            cache_pages: ((share / 2) as usize / PAGE_SIZE).max(16),
            image_layer_delta_bytes: self.image_layer_bytes,
            freeze_interval: self.freeze_interval,
            coalesce_redo_max: COALESCE_REDO_MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the default object store is a sibling of the data dir, and limits are enforced.
    #[test]
    fn defaults_and_limits() {
        let c = PageArgs::default()
            .resolve(Path::new("/tmp/cluster/storage-1"))
            .unwrap();
        assert_eq!(c.object_store.url, "file:///tmp/cluster/object-store");
        let s = c.store_config(4);
        assert!(s.layer_bytes as u64 <= PAGE_MEMORY_BYTES_DEFAULT / 16);
        let bad = PageArgs {
            page_memory_bytes: 1,
            ..PageArgs::default()
        };
        assert!(bad.resolve(Path::new("/x")).is_err());
    }
}
