//! `sixfold meta`: one member of the meta group.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use sixfold_meta::MetaNode;
use sixfold_meta::node::{MetaNodeConfig, run as run_node};

#[derive(clap::Args)]
pub struct MetaArgs {
    /// This member's id (one of those in --members).
    #[arg(long)]
    pub id: u64,
    /// Address to serve gRPC on (defaults to this member's address in --members).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where this member keeps its Raft log and snapshots.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Every member of the group, this one included: `1=host:port,2=host:port,3=host:port`.
    #[arg(long)]
    pub members: String,
    /// Initialize the group on first start (give it to one member of a brand-new cluster).
    #[arg(long)]
    pub bootstrap: bool,
    /// Raft log entries between snapshots.
    #[arg(long, default_value_t = sixfold_meta::limits::SNAPSHOT_EVERY_LOGS)]
    pub snapshot_every_logs: u64,
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_members(list: &str) -> anyhow::Result<BTreeMap<u64, MetaNode>> {
    let mut members = BTreeMap::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("member {part:?} is not id=host:port"))?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("member id {id:?} is not a number"))?;
        addr.parse::<SocketAddr>()
            .with_context(|| format!("member address {addr:?} is not ip:port"))?;
        if members.insert(id, MetaNode::new(addr)).is_some() {
            bail!("member {id} is listed twice");
        }
    }
    if members.is_empty() {
        bail!("--members lists no member");
    }
    Ok(members)
}

pub async fn run(args: MetaArgs) -> anyhow::Result<()> {
    let members = parse_members(&args.members)?;
    let me = members
        .get(&args.id)
        .with_context(|| format!("member {} is not in --members", args.id))?;
    let listen = match args.listen {
        Some(l) => l,
        None => me.rpc_addr.parse()?,
    };
    let mut config = MetaNodeConfig::new(args.id, listen, args.data_dir.clone(), members);
    config.bootstrap = args.bootstrap;
    config.snapshot_every_logs = args.snapshot_every_logs;
    run_node(config, crate::storage_cmd::shutdown_signal())
        .await
        .with_context(|| format!("meta member {} in {}", args.id, args.data_dir.display()))
}
