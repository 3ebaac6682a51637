//! Damaged layer files are detected and rebuilt, never served.

mod common;

use common::pages;

use std::time::{Duration, Instant};

use pages::{
    Model, PagesCluster, ReadPointPin, SMALL_LAYERS, get_page, wait_uploaded, write_random,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sixfold_log_service::{Lsn, PageId};

/// Proves: when a byte of a stored version in every layer file of a node is flipped on disk
/// while the node is down, the node still never serves a wrong page: the damage is caught by
/// the entry CRCs (when a read or the scrub touches it), GetPage answers UNAVAILABLE until the
/// layer is rebuilt (from its object-storage copy, or from the log), and every answer equals
/// the model. The node then reports the repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_layer_files_are_rebuilt_not_served() {
    let mut cluster = PagesCluster::start(1, 24, SMALL_LAYERS, &[]).await;
    let writer = cluster.open_writer().await;
    let _pin = ReadPointPin::start(&cluster.placement, 1, Lsn::ZERO);
    let mut rng = StdRng::seed_from_u64(3);
    let pages: Vec<PageId> = (0..20).map(PageId).collect();
    let mut model = Model::default();
    let mut lsns = Vec::new();
    for _ in 0..3 {
        lsns.push(write_random(&writer, &mut model, &mut rng, &pages, 250).await);
    }
    wait_uploaded(&cluster, 0, *lsns.last().unwrap(), Duration::from_secs(30)).await;
    cluster.kill9(0);
    let dir = cluster.node_dir(0).join("pages").join("pg-0");
    let mut damaged = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "layer") {
            let mut bytes = std::fs::read(&path).unwrap();
            // Inside the payload of the first entry (header 64 bytes, entry header 32).
            bytes[64 + 32 + 4] ^= 0x40;
            std::fs::write(&path, &bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no layer files to damage");
    cluster.start_node(0).await;
    let client = cluster.page_client(0);
    for lsn in &lsns {
        for p in 0..24 {
            let got = get_page(&client, PageId(p), *lsn, Duration::from_secs(30))
                .await
                .unwrap_or_else(|s| panic!("{p} at {lsn:?}: {s:?}"));
            model.check(PageId(p), *lsn, &got, "after damage");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = cluster.status(0).await;
        if st.iter().all(|s| s.layers_repaired > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "damage never repaired: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // After the repair, everything still reads right.
    let vdl = *lsns.last().unwrap();
    for p in 0..24 {
        let got = get_page(&client, PageId(p), vdl, Duration::from_secs(30))
            .await
            .expect("read after repair");
        model.check(PageId(p), vdl, &got, "after repair");
    }
}
