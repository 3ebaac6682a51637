//! Model-based end-to-end test of page materialization and GetPage@LSN on six real
//! `sixfold storage` processes.

mod common;

use common::pages;

use std::time::Duration;

use pages::{Model, PagesCluster, ReadPointPin, SMALL_LAYERS, get_page, write_random};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sixfold_log_service::{Lsn, PageId};
use tonic::Code;

const PAGES_PER_PG: u64 = 40;

fn seed() -> u64 {
    match std::env::var("SIXFOLD_TEST_SEED") {
        Ok(s) => s.parse().expect("SIXFOLD_TEST_SEED is a u64"),
        Err(_) => rand::rng().random(),
    }
}

/// Proves: GetPage(page, lsn) answers exactly what a plain in-memory model of the pages says,
/// for random pages (written or not) at random LSNs between a pinned read point and the VDL,
/// from any of the six storage nodes, while random redo is written through a real quorum
/// writer, storage nodes are killed -9 and restarted, and materialization runs with tiny layers
/// so that chains are coalesced into images, delta and image layers are written and versions
/// below the pinned read point (PGMRPL) are garbage collected. At the end it checks that
/// coalescing, image layers and GC really happened, and that a read below the retained
/// versions is refused with OUT_OF_RANGE rather than answered wrongly.
/// How: a seeded RNG (printed; replay with SIXFOLD_TEST_SEED) drives writes, kills and reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn getpage_matches_the_model_across_restarts_with_coalescing_and_gc() {
    let seed = seed();
    eprintln!("pages_model seed: {seed} (replay with SIXFOLD_TEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = PagesCluster::start(2, PAGES_PER_PG, SMALL_LAYERS, &[]).await;
    let writer = cluster.open_writer().await;
    let pin = ReadPointPin::start(&cluster.placement, 7, Lsn::ZERO);
    // Pages 0..30 of each PG are written; 30..40 never are.
    let written: Vec<PageId> = (0..2 * PAGES_PER_PG)
        .filter(|p| p % PAGES_PER_PG < 30)
        .map(PageId)
        .collect();
    let mut model = Model::default();
    let mut read_point = Lsn::ZERO;
    let mut vdl = Lsn::ZERO;
    const ROUNDS: usize = 8;
    for round in 0..ROUNDS {
        // Kill a node in some rounds; it misses the writes below and catches up by gossip.
        let killed = (round % 3 == 1).then(|| rng.random_range(0..6));
        if let Some(k) = killed {
            cluster.kill9(k);
        }
        let round_start = vdl;
        vdl = write_random(&writer, &mut model, &mut rng, &written, 400).await;
        if let Some(k) = killed {
            cluster.start_node(k).await;
        }
        // Reads keep to the previous round's start: GC may drop anything older.
        pin.set(read_point);
        let nodes = cluster.running();
        for q in 0..120 {
            let lsn = Lsn(rng.random_range(read_point.get()..=vdl.get()));
            let page = PageId(rng.random_range(0..2 * PAGES_PER_PG));
            let node = nodes[rng.random_range(0..nodes.len())];
            let got = get_page(
                &cluster.page_client(node),
                page,
                lsn,
                Duration::from_secs(20),
            )
            .await
            .unwrap_or_else(|s| {
                cluster.dump_logs();
                panic!(
                    "round {round} query {q}: node {node} {page:?} at {lsn:?}: {s:?} (seed {seed})"
                )
            });
            model.check(
                page,
                lsn,
                &got,
                &format!("round {round} node {node} seed {seed}"),
            );
        }
        read_point = round_start;
    }
    // Let compaction and GC catch up with the final pin, then look at what happened.
    pin.set(read_point);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (coalesced, images, gc_node) = loop {
        let mut coalesced = 0;
        let mut images = 0;
        let mut gc_node = None;
        for i in 0..6 {
            for s in cluster.status(i).await {
                coalesced += s.images_coalesced;
                images += s.image_layers;
                if s.retained_from_lsn > 0 {
                    gc_node = Some((i, s.pg, Lsn(s.retained_from_lsn)));
                }
            }
        }
        if (coalesced > 0 && images > 0 && gc_node.is_some())
            || std::time::Instant::now() > deadline
        {
            break (coalesced, images, gc_node);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(coalesced > 0, "no chain was ever coalesced into an image");
    assert!(images > 0, "no image layer was written");
    let (node, pg, retained) = gc_node.expect("garbage collection never dropped a version");
    assert!(retained <= read_point, "GC passed the pinned read point");
    // A read below what is retained is refused, never answered from a wrong version.
    let page = PageId(u64::from(pg) * PAGES_PER_PG);
    let below = Lsn(retained.get() - 1);
    match cluster.page_client(node).get_page(page, below).await {
        Err(s) => assert_eq!(s.code(), Code::OutOfRange, "{s:?}"),
        Ok(p) => panic!("read below the retained versions answered {p:?}"),
    }
    // And every page still reads right at the VDL and at the pinned read point, everywhere.
    for node in 0..6 {
        let client = cluster.page_client(node);
        for p in 0..2 * PAGES_PER_PG {
            for lsn in [read_point, vdl] {
                let got = get_page(&client, PageId(p), lsn, Duration::from_secs(20))
                    .await
                    .expect("final read");
                model.check(
                    PageId(p),
                    lsn,
                    &got,
                    &format!("final node {node} seed {seed}"),
                );
            }
        }
    }
}
