//! `sixfold storage`: a storage node process.
//!
//! With `--meta`, the node registers itself with the meta group, heartbeats, waits for a
//! volume that places segments on it, and adopts every volume epoch the meta group grants.
//! With `--placement FILE` it reads a fixed placement instead (tests of the log path alone).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sixfold_log_service::placement::Placement;
use sixfold_log_service::server::StorageNode;
use sixfold_log_service::{NodeId, VolumeId};
use sixfold_meta::client::{MetaClient, MetaClientError, placement_of};
use sixfold_meta::limits::HEARTBEAT_INTERVAL_MS;
use sixfold_meta::{Command, CommandError};
use tokio::sync::watch;

#[derive(clap::Args)]
pub struct StorageArgs {
    /// This node's id.
    #[arg(long)]
    pub node_id: u64,
    /// Address to serve gRPC on (file mode: defaults to the node's address in the placement).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Availability-zone label (meta mode).
    #[arg(long, default_value = "az1")]
    pub az: String,
    /// Where this node keeps its segments.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Meta group members, comma-separated `host:port`.
    #[arg(
        long,
        conflicts_with = "placement",
        required_unless_present = "placement"
    )]
    pub meta: Option<String>,
    /// JSON file with the nodes and the PG placement, instead of the meta group.
    #[arg(long)]
    pub placement: Option<PathBuf>,
    /// Page materialization, GetPage and object storage.
    #[command(flatten)]
    pub pages: sixfold_storage::config::PageArgs,
}

pub async fn run(args: StorageArgs) -> anyhow::Result<()> {
    let node = NodeId(args.node_id);
    let (placement, listen, epochs) = match (&args.meta, &args.placement) {
        (Some(list), _) => {
            let listen = args.listen.context("--listen is required with --meta")?;
            let meta = MetaClient::from_list(list)?;
            let (placement, epochs) = join_cluster(&meta, node, listen, &args.az).await?;
            (placement, listen, Some(epochs))
        }
        (None, Some(path)) => {
            let placement = Placement::load(path)?;
            let info = placement
                .node(node)
                .with_context(|| format!("node {} is not in {}", node, path.display()))?;
            let listen = match args.listen {
                Some(a) => a,
                None => info
                    .addr
                    .parse()
                    .with_context(|| format!("node address {} is not ip:port", info.addr))?,
            };
            (placement, listen, None)
        }
        (None, None) => bail!("give --meta or --placement"),
    };
    let storage = Arc::new(
        StorageNode::open(&args.data_dir, node, &placement)
            .with_context(|| format!("while opening segments in {}", args.data_dir.display()))?,
    );
    let _gossip = storage.spawn_gossip(&placement)?;
    if let Some(mut epochs) = epochs {
        let storage = storage.clone();
        tokio::spawn(async move {
            loop {
                let epoch = *epochs.borrow_and_update();
                let s = storage.clone();
                match tokio::task::spawn_blocking(move || s.seal_all(epoch)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not adopt the volume epoch"),
                    Err(e) => tracing::warn!(error = %e, "epoch task failed"),
                }
                if epochs.changed().await.is_err() {
                    return;
                }
            }
        });
    }
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

/// Registers with the meta group, starts heartbeating, and waits until a volume exists. Returns
/// the volume's placement and a watch of the highest volume epoch granted.
async fn join_cluster(
    meta: &MetaClient,
    node: NodeId,
    listen: SocketAddr,
    az: &str,
) -> anyhow::Result<(Placement, watch::Receiver<sixfold_log_service::Epoch>)> {
    let register = Command::RegisterNode {
        id: node,
        address: listen.to_string(),
        az: az.to_string(),
        now_ms: 0,
    };
    match meta.propose(register).await {
        Ok(_) => {}
        Err(MetaClientError::Refused(CommandError::NodeConflict { address, az, .. })) => bail!(
            "node {node} is already registered at {address} in {az}; \
             start it with that address and zone, or remove it with `sixfold ctl node remove`"
        ),
        Err(e) => return Err(e).context("while registering with the meta group"),
    }
    tracing::info!(node = node.get(), %listen, az, "registered with the meta group");
    let (epoch_tx, epoch_rx) = watch::channel(sixfold_log_service::Epoch::ZERO);
    let heartbeats = meta.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
        loop {
            tick.tick().await;
            match heartbeats.heartbeat(node).await {
                Ok(epoch) => {
                    epoch_tx.send_if_modified(|e| {
                        let newer = epoch > *e;
                        if newer {
                            *e = epoch;
                        }
                        newer
                    });
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat to the meta group failed"),
            }
        }
    });
    loop {
        let map = meta
            .cluster_map()
            .await
            .context("while reading the cluster map")?;
        let volume = map.volumes.keys().next().copied().unwrap_or(VolumeId(0));
        if let Some(placement) = placement_of(&map, volume) {
            return Ok((placement, epoch_rx));
        }
        tokio::time::sleep(Duration::from_millis(HEARTBEAT_INTERVAL_MS)).await;
    }
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
