//! Rebuilding a storage node that lost its disk, with the default local-directory object store.

mod common;

use common::pages;

use pages::{PagesCluster, SMALL_LAYERS, rebuild_scenario};

/// Proves: a storage node whose data directory is deleted comes back, rebuilds its segment's
/// layer files and log from object storage (the default local directory next to the data
/// directories), fills the rest of its log from its peers, and then serves byte-identical pages
/// for LSNs across the whole history, and keeps materializing new writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_node_is_rebuilt_from_object_storage_and_peers() {
    let mut cluster = PagesCluster::start(1, 32, SMALL_LAYERS, &[]).await;
    rebuild_scenario(&mut cluster, 11).await;
}
