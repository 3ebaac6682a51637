//! `sixfold storage`: a storage node process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sixfold_log_service::NodeId;
use sixfold_log_service::placement::Placement;
use sixfold_log_service::server::StorageNode;

#[derive(clap::Args)]
pub struct StorageArgs {
    /// This node's id in the placement.
    #[arg(long)]
    pub node_id: u64,
    /// Address to serve gRPC on (defaults to the node's address in the placement).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where this node keeps its segments.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// JSON file with the nodes and the PG placement (until the meta service owns it).
    #[arg(long)]
    pub placement: PathBuf,
    /// Page materialization, GetPage and object storage.
    #[command(flatten)]
    pub pages: sixfold_storage::config::PageArgs,
}

pub async fn run(args: StorageArgs) -> anyhow::Result<()> {
    let placement = Placement::load(&args.placement)?;
    let node = NodeId(args.node_id);
    let info = placement
        .node(node)
        .with_context(|| format!("node {} is not in {}", node, args.placement.display()))?;
    let listen = match args.listen {
        Some(a) => a,
        None => info
            .addr
            .parse()
            .with_context(|| format!("node address {} is not ip:port", info.addr))?,
    };
    let storage = Arc::new(
        StorageNode::open(&args.data_dir, node, &placement)
            .with_context(|| format!("while opening segments in {}", args.data_dir.display()))?,
    );
    let _gossip = storage.spawn_gossip(&placement)?;
    let pages = sixfold_storage::node::PageNode::start(
        &storage,
        &placement,
        node,
        &args.data_dir,
        &args.pages,
    )
    .await
    .context("while starting the page service")?;
    // Nagle's algorithm with delayed ACKs stalls small request/ack exchanges by ~40 ms.
    let incoming = tonic::transport::server::TcpIncoming::bind(listen)
        .with_context(|| format!("while binding {listen}"))?
        .with_nodelay(Some(true));
    tracing::info!(node = node.get(), %listen, "storage node serving");
    tonic::transport::Server::builder()
        .add_service(storage.into_service())
        .add_service(pages.service())
        .serve_with_incoming_shutdown(incoming, shutdown_signal())
        .await
        .context("while serving")?;
    tracing::info!(node = node.get(), "storage node stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. Every ack was fsync'd first, so stopping needs no flush.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
