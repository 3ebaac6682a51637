//! One copy of each PG in object storage: the lowest-numbered reachable segment uploads, and the
//! next one takes over when it dies.

mod common;

use std::time::Duration;

use common::pages;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sixfold_log_service::{Lsn, PageId};

use pages::{Model, PagesCluster, SMALL_LAYERS, wait_uploaded, write_random};

/// Node directories (`node-<id>`) with anything uploaded under the object store.
fn uploading_nodes(cluster: &PagesCluster) -> Vec<String> {
    let root = cluster.dir.path().join("object-store");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Proves: while all six segments reach each other only node 1 uploads (the others report
/// nothing uploaded and own no objects); once node 1 is killed, node 2 takes over and uploads
/// through the new writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_node_uploads_each_pg_and_the_next_takes_over() {
    let mut cluster = PagesCluster::start(1, 32, SMALL_LAYERS, &[]).await;
    let mut rng = StdRng::seed_from_u64(5);
    let pages: Vec<PageId> = (0..16).map(PageId).collect();
    let mut model = Model::default();
    {
        let writer = cluster.open_writer().await;
        let vdl = write_random(&writer, &mut model, &mut rng, &pages, 300).await;
        wait_uploaded(&cluster, 0, vdl, Duration::from_secs(30)).await;
    }
    assert_uploaded_nothing(&cluster, 1..6, "node 1").await;
    assert_eq!(uploading_nodes(&cluster), vec!["node-1".to_string()]);

    cluster.kill9(0);
    let writer = cluster.open_writer().await;
    let vdl = write_random(&writer, &mut model, &mut rng, &pages, 300).await;
    assert!(vdl > Lsn::ZERO);
    wait_uploaded(&cluster, 1, vdl, Duration::from_secs(30)).await;
    assert_eq!(
        uploading_nodes(&cluster),
        vec!["node-1".to_string(), "node-2".to_string()]
    );
    assert_uploaded_nothing(&cluster, 2..6, "node 2").await;
}

/// Asserts that the nodes at `indexes` report nothing uploaded for any PG.
async fn assert_uploaded_nothing(
    cluster: &PagesCluster,
    indexes: std::ops::Range<usize>,
    uploader: &str,
) {
    for i in indexes {
        for s in cluster.status(i).await {
            assert_eq!(
                s.uploaded_lsn,
                0,
                "node {} uploaded while {uploader} was reachable: {s:?}",
                i + 1
            );
        }
    }
}
