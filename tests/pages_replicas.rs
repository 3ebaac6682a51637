//! GetPage agrees across the six segments of a PG (DESIGN.md invariant 4).

mod common;

use common::pages;

use std::time::Duration;

use common::Cluster;
use pages::{Model, get_page, open_writer, page_client_for, write_random};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sixfold_log_service::{Lsn, PageId};

/// Proves: once every segment's SCL has passed an LSN, GetPage for the same (page, lsn)
/// returns byte-identical pages from each of the six segments of the PG, equal to the model,
/// both below the materialized point (stored versions) and at the newest LSN (which may still
/// be applied from the hot log on the fly). Runs with the default flags, as `sixfold storage`
/// starts without any page options.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_segments_serve_identical_bytes() {
    let cluster = Cluster::start(2, 50).await;
    let writer = open_writer(&cluster.placement).await;
    let mut rng = StdRng::seed_from_u64(5);
    let pages: Vec<PageId> = (0..100).filter(|p| p % 50 < 40).map(PageId).collect();
    let mut model = Model::default();
    let mut lsns = Vec::new();
    for _ in 0..3 {
        lsns.push(write_random(&writer, &mut model, &mut rng, &pages, 300).await);
    }
    let vdl = *lsns.last().unwrap();
    cluster
        .wait_converged(&[0, 1, 2, 3, 4, 5], vdl, Duration::from_secs(30))
        .await;
    let clients: Vec<_> = (0..6)
        .map(|i| page_client_for(&cluster.placement, i))
        .collect();
    for q in 0..80 {
        let lsn = if q % 4 == 0 {
            vdl
        } else {
            Lsn(rng.random_range(1..=vdl.get()))
        };
        let page = PageId(rng.random_range(0..100));
        let mut copies = Vec::new();
        for c in &clients {
            let got = get_page(c, page, lsn, Duration::from_secs(10))
                .await
                .expect("GetPage");
            model.check(page, lsn, &got, "replicas");
            copies.push(got.map(|g| g.as_bytes().to_vec()));
        }
        assert!(
            copies.iter().all(|c| *c == copies[0]),
            "segments disagree on {page:?} at {lsn:?}"
        );
    }
}
