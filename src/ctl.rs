//! `sixfold ctl`: what the operator sees of a running cluster, and the commands that steer it.
//!
//! Every command talks to the meta group through the one [`MetaClient`] (and, for `status`, to
//! the storage nodes through the one [`SegmentClient`]); ctl holds no state of its own. It reads
//! the cluster map on the meta leader, so what it prints is linearizable with every command the
//! group has applied. The meta members come from `--meta`, else `$SIXFOLD_META`, else the
//! addresses `sixfold demo` uses by default.
//!
//! # Output
//!
//! Without `--json`: aligned tables for people. With `--json`: exactly one JSON document on
//! stdout, whose shape is stable (fields are only ever added). Errors go to stderr with a
//! non-zero exit code in both modes. Numbers that mean LSNs, epochs and ids are plain integers;
//! a field is `null` when it is unknown (a member or segment that did not answer).
//!
//! `status`:
//! ```text
//! { "meta":    [ { "id": 1|null, "address": "127.0.0.1:47001",
//!                  "role": "leader"|"follower"|"candidate"|"learner"|"shutdown"|"unreachable",
//!                  "term": 3|null, "last_applied": 42|null, "leader_id": 1|null,
//!                  "error": null|"why it did not answer" } ],
//!   "nodes":   [ NODE ],
//!   "volumes": [ { "id": 1, "page_size": 8192, "pages_per_pg": 16384,
//!                  "vdl": 120|null,            // highest VDL hint any segment reported
//!                  "pgs": [ { "id": 0, "membership_epoch": 1, "scl_max": 120|null,
//!                             "segments": [ { "node": 1, "address": "…", "az": "az1",
//!                                             "reachable": true, "scl": 118|null,
//!                                             "lag": 2|null,   // scl_max - scl
//!                                             "epoch": 3|null, "vdl_hint": 118|null,
//!                                             "complete_lsn": 118|null,
//!                                             "error": null|"…" } ] } ] } ],
//!   "lease":   null | { "holder": "w1", "epoch": 3, "expiry_ms": 1700000000000,
//!                       "expires_in_ms": 1200, "expired": false },
//!   "epoch_max": 3 }
//! ```
//! `NODE` (also in `node list` as `{"nodes": [NODE]}` and `node add` as `{"node": NODE}`):
//! ```text
//! { "id": 1, "address": "127.0.0.1:47101", "az": "az1",
//!   "state": "Provisioning"|"Ready"|"Running"|"Draining"|"Removed"|"Failed",
//!   "last_heartbeat_ms": 1700000000000, "heartbeat_age_ms": 212, "segments": 4 }
//! ```
//! `node remove`: `{"removed": 7}`. `volume create` and `volume show`:
//! ```text
//! { "volume": { "id": 1, "page_size": 8192, "pages_per_pg": 16384,
//!               "pgs": [ { "id": 0, "membership_epoch": 1,
//!                          "segments": [ { "node": 1, "address": "…", "az": "az1",
//!                                          "state": "Running" } ] } ] } }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use sixfold_log_service::client::SegmentClient;
use sixfold_log_service::segment::SegmentState;
use sixfold_log_service::{NodeId, PgId, VolumeId};
use sixfold_meta::client::{MetaClient, MetaClientError};
use sixfold_meta::service::now_ms;
use sixfold_meta::{ClusterMap, Command, CommandOutcome, NodeRecord, Volume};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::Code;

use crate::demo::{DEMO_PAGES_PER_PG, DEMO_PGS, meta_list};

/// Where the meta members come from when `--meta` is not given.
const META_ENV: &str = "SIXFOLD_META";
/// The port base of `sixfold demo`'s default addresses.
const DEMO_PORT_BASE: u16 = 47000;
/// How long ctl keeps trying the meta group before saying it is unreachable. Shorter than the
/// client's default: an operator at a prompt wants an answer, not a 15 s hang.
const META_RETRY: Duration = Duration::from_secs(3);
/// How long one segment's status may take before it is shown as unreachable.
const SEGMENT_STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Segment status requests in flight at once (a large cluster has thousands of segments).
const SEGMENT_STATUS_IN_FLIGHT_MAX: usize = 64;
/// The page size `volume create` uses unless told otherwise (the design's 8 KiB page).
const DEFAULT_PAGE_SIZE_BYTES: u32 = 8192;

#[derive(clap::Args)]
pub struct CtlArgs {
    /// Meta group members, comma-separated `host:port` [default: $SIXFOLD_META, else the
    /// demo's 127.0.0.1:47001,127.0.0.1:47002,127.0.0.1:47003].
    #[arg(long, global = true)]
    pub meta: Option<String>,
    /// Print one JSON document on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(clap::Subcommand)]
pub enum CtlCommand {
    /// The meta group, the storage nodes, every PG's segments with SCL and lag, the VDL and the
    /// writer lease.
    Status,
    /// Register, list or remove storage nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Create or show volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
}

#[derive(clap::Subcommand)]
pub enum NodeCommand {
    /// Register a storage node (state Provisioning until it heartbeats).
    Add {
        /// The node's gRPC address, `host:port`.
        #[arg(long)]
        addr: String,
        /// Its availability-zone label.
        #[arg(long)]
        az: String,
        /// Its id [default: the highest registered id + 1].
        #[arg(long)]
        id: Option<u64>,
    },
    /// List the storage nodes with their lifecycle state.
    List,
    /// Forget a storage node (refused while it holds segments).
    Remove {
        #[arg(long)]
        id: u64,
    },
}

#[derive(clap::Subcommand)]
pub enum VolumeCommand {
    /// Create a volume, placing every PG's six segments two per AZ on Ready or Running nodes.
    Create {
        #[arg(long, default_value_t = 1)]
        id: u64,
        /// Protection groups.
        #[arg(long, default_value_t = DEMO_PGS)]
        pgs: u32,
        #[arg(long, default_value_t = DEMO_PAGES_PER_PG)]
        pages_per_pg: u64,
        /// Bytes per page (a power of two).
        #[arg(long, default_value_t = DEFAULT_PAGE_SIZE_BYTES)]
        page_size: u32,
    },
    /// Show a volume's PGs with their six segments and AZs.
    Show {
        #[arg(long, default_value_t = 1)]
        id: u64,
    },
}

/// Runs one ctl command. Errors are printed here as one line (outer context first) and end the
/// process with exit code 1: an operator needs the message, not a backtrace.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    if let Err(e) = execute(args).await {
        eprintln!("sixfold ctl: error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// The meta members to talk to: `--meta`, else `$SIXFOLD_META`, else the demo's members; and
/// where the list came from, for error messages.
pub fn meta_members(flag: Option<String>) -> (String, &'static str) {
    match (flag, std::env::var(META_ENV).ok()) {
        (Some(list), _) => (list, "--meta"),
        (None, Some(list)) => (list, "$SIXFOLD_META"),
        (None, None) => (meta_list(DEMO_PORT_BASE), "the default members"),
    }
}

async fn execute(args: CtlArgs) -> anyhow::Result<()> {
    let (list, source) = meta_members(args.meta.clone());
    let meta = Meta::connect(&list, source)?;
    let (json, human) = match args.command {
        CtlCommand::Status => {
            let doc = status(&meta).await?;
            (to_json(&doc)?, doc.human())
        }
        CtlCommand::Node(NodeCommand::List) => {
            let map = meta.map().await?;
            let doc = NodeListDoc {
                nodes: node_rows(&map, now_ms()),
            };
            let human = nodes_table(&doc.nodes);
            (to_json(&doc)?, human)
        }
        CtlCommand::Node(NodeCommand::Add { addr, az, id }) => {
            let (doc, human) = node_add(&meta, addr, az, id).await?;
            (to_json(&doc)?, human)
        }
        CtlCommand::Node(NodeCommand::Remove { id }) => {
            let id = NodeId(id);
            match meta
                .propose(Command::RemoveNode { id }, "remove the node")
                .await?
            {
                CommandOutcome::NodeRemoved(removed) => (
                    to_json(&RemovedDoc {
                        removed: removed.get(),
                    })?,
                    format!("removed node {removed}\n"),
                ),
                other => bail!("unexpected answer from the meta group: {other:?}"),
            }
        }
        CtlCommand::Volume(VolumeCommand::Create {
            id,
            pgs,
            pages_per_pg,
            page_size,
        }) => {
            let create = Command::CreateVolume {
                id: VolumeId(id),
                page_size,
                pages_per_pg,
                pg_count: pgs,
            };
            match meta.propose(create, "create the volume").await? {
                CommandOutcome::VolumeCreated(volume) => {
                    // Read the map back for the nodes' addresses and zones.
                    let map = meta.map().await?;
                    let doc = VolumeDoc {
                        volume: volume_view(&map, &volume),
                    };
                    let human = format!("created {}", doc.volume.human());
                    (to_json(&doc)?, human)
                }
                other => bail!("unexpected answer from the meta group: {other:?}"),
            }
        }
        CtlCommand::Volume(VolumeCommand::Show { id }) => {
            let map = meta.map().await?;
            let volume = map.volumes.get(&VolumeId(id)).with_context(|| {
                let have: Vec<String> = map.volumes.keys().map(|v| v.to_string()).collect();
                format!(
                    "no volume {id} in the cluster map (volumes: {})",
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                )
            })?;
            let doc = VolumeDoc {
                volume: volume_view(&map, volume),
            };
            let human = doc.volume.human();
            (to_json(&doc)?, human)
        }
    };
    if args.json {
        println!("{json}");
    } else {
        print!("{human}");
    }
    Ok(())
}

fn to_json<T: Serialize>(doc: &T) -> anyhow::Result<String> {
    serde_json::to_string_pretty(doc).context("while encoding the JSON output")
}

/// The meta group as ctl talks to it: the client plus the addresses, for error messages.
struct Meta {
    client: MetaClient,
    addrs: String,
}

impl Meta {
    /// A client for the members in `list`, which came from `source` (named in errors).
    fn connect(list: &str, source: &str) -> anyhow::Result<Meta> {
        let addrs: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if addrs.is_empty() {
            bail!("{source} lists no address; give host:port,host:port,host:port");
        }
        for addr in &addrs {
            check_host_port(addr)
                .with_context(|| format!("invalid meta address {addr:?} in {source}"))?;
        }
        let client = MetaClient::from_list(list)
            .with_context(|| format!("invalid meta member list {list:?} in {source}"))?
            .with_retry(META_RETRY);
        Ok(Meta {
            client,
            addrs: addrs.join(", "),
        })
    }

    /// Turns a client error into a message that says what was tried.
    fn explain(&self, e: MetaClientError, doing: &str) -> anyhow::Error {
        match e {
            MetaClientError::Unavailable(last) => anyhow!(
                "cannot reach the meta group to {doing}: no member answered within {} s \
                 (tried {}); last error: {last}",
                META_RETRY.as_secs(),
                self.addrs
            ),
            MetaClientError::Refused(why) => anyhow!("the meta group refused to {doing}: {why}"),
            other => anyhow!("could not {doing}: {other} (meta members: {})", self.addrs),
        }
    }

    async fn map(&self) -> anyhow::Result<ClusterMap> {
        self.client
            .cluster_map()
            .await
            .map_err(|e| self.explain(e, "read the cluster map"))
    }

    async fn propose(&self, command: Command, doing: &str) -> anyhow::Result<CommandOutcome> {
        self.client
            .propose(command)
            .await
            .map_err(|e| self.explain(e, doing))
    }
}

/// Accepts `host:port` with a non-empty host and a port in 1..=65535.
fn check_host_port(addr: &str) -> anyhow::Result<()> {
    let (host, port) = addr
        .rsplit_once(':')
        .context("expected host:port (no port given)")?;
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        bail!("expected host:port (bad host {host:?})");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bail!("expected host:port (bad port {port:?})"),
    }
}

async fn node_add(
    meta: &Meta,
    addr: String,
    az: String,
    id: Option<u64>,
) -> anyhow::Result<(NodeDoc, String)> {
    check_host_port(&addr).with_context(|| format!("invalid --addr {addr:?}"))?;
    let id = match id {
        Some(id) => NodeId(id),
        None => {
            let map = meta.map().await?;
            NodeId(map.nodes.keys().max().map_or(1, |n| n.get() + 1))
        }
    };
    let register = Command::RegisterNode {
        id,
        address: addr,
        az,
        now_ms: 0,
    };
    match meta.propose(register, "register the node").await? {
        CommandOutcome::NodeRegistered(record) => {
            let row = node_row(&record, 0, now_ms());
            let human = format!(
                "registered node {} at {} in {} ({}); it becomes Ready once it heartbeats\n",
                row.id, row.address, row.az, row.state
            );
            Ok((NodeDoc { node: row }, human))
        }
        other => bail!("unexpected answer from the meta group: {other:?}"),
    }
}

// ---- documents (the JSON shapes described in the module docs) ----

#[derive(Serialize)]
struct StatusDoc {
    meta: Vec<MemberRow>,
    nodes: Vec<NodeRow>,
    volumes: Vec<VolumeStatus>,
    lease: Option<LeaseRow>,
    epoch_max: u64,
}

#[derive(Serialize)]
struct MemberRow {
    id: Option<u64>,
    address: String,
    role: String,
    term: Option<u64>,
    last_applied: Option<u64>,
    leader_id: Option<u64>,
    error: Option<String>,
}

#[derive(Serialize)]
struct NodeRow {
    id: u64,
    address: String,
    az: String,
    state: String,
    last_heartbeat_ms: u64,
    heartbeat_age_ms: u64,
    segments: u64,
}

#[derive(Serialize)]
struct NodeListDoc {
    nodes: Vec<NodeRow>,
}

#[derive(Serialize)]
struct NodeDoc {
    node: NodeRow,
}

#[derive(Serialize)]
struct RemovedDoc {
    removed: u64,
}

#[derive(Serialize)]
struct VolumeStatus {
    id: u64,
    page_size: u32,
    pages_per_pg: u64,
    vdl: Option<u64>,
    pgs: Vec<PgStatus>,
}

#[derive(Serialize)]
struct PgStatus {
    id: u32,
    membership_epoch: u64,
    scl_max: Option<u64>,
    segments: Vec<SegmentStatus>,
}

#[derive(Serialize)]
struct SegmentStatus {
    node: u64,
    address: String,
    az: String,
    reachable: bool,
    scl: Option<u64>,
    lag: Option<u64>,
    epoch: Option<u64>,
    vdl_hint: Option<u64>,
    complete_lsn: Option<u64>,
    error: Option<String>,
}

#[derive(Serialize)]
struct LeaseRow {
    holder: String,
    epoch: u64,
    expiry_ms: u64,
    expires_in_ms: u64,
    expired: bool,
}

#[derive(Serialize)]
struct VolumeDoc {
    volume: VolumeView,
}

#[derive(Serialize)]
struct VolumeView {
    id: u64,
    page_size: u32,
    pages_per_pg: u64,
    pgs: Vec<PgView>,
}

#[derive(Serialize)]
struct PgView {
    id: u32,
    membership_epoch: u64,
    segments: Vec<SegmentView>,
}

#[derive(Serialize)]
struct SegmentView {
    node: u64,
    address: String,
    az: String,
    state: String,
}

// ---- building the documents ----

fn node_row(n: &NodeRecord, segments: u64, now_ms: u64) -> NodeRow {
    NodeRow {
        id: n.id.get(),
        address: n.address.clone(),
        az: n.az.clone(),
        state: n.state.to_string(),
        last_heartbeat_ms: n.last_heartbeat_ms,
        heartbeat_age_ms: now_ms.saturating_sub(n.last_heartbeat_ms),
        segments,
    }
}

fn node_rows(map: &ClusterMap, now_ms: u64) -> Vec<NodeRow> {
    let load = map.segment_load();
    map.nodes
        .values()
        .map(|n| node_row(n, load.get(&n.id).copied().unwrap_or(0), now_ms))
        .collect()
}

/// A node's address, zone and state as the map knows them (a placed node is always in the map;
/// "?" only if the map broke that invariant).
fn node_facts(map: &ClusterMap, id: NodeId) -> (String, String, String) {
    map.nodes.get(&id).map_or_else(
        || ("?".into(), "?".into(), "Unknown".into()),
        |n| (n.address.clone(), n.az.clone(), n.state.to_string()),
    )
}

fn volume_view(map: &ClusterMap, volume: &Volume) -> VolumeView {
    VolumeView {
        id: volume.id.get(),
        page_size: volume.page_size,
        pages_per_pg: volume.pages_per_pg,
        pgs: volume
            .pgs
            .iter()
            .map(|pg| PgView {
                id: pg.id.get(),
                membership_epoch: pg.membership_epoch.get(),
                segments: pg
                    .segments
                    .iter()
                    .map(|&node| {
                        let (address, az, state) = node_facts(map, node);
                        SegmentView {
                            node: node.get(),
                            address,
                            az,
                            state,
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

async fn status(meta: &Meta) -> anyhow::Result<StatusDoc> {
    let group = meta.client.group_status().await;
    // An unreachable member's id is known from any member that answered.
    let ids: BTreeMap<String, u64> = group
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flat_map(|r| r.members.iter().map(|m| (m.addr.clone(), m.id)))
        .collect();
    let members: Vec<MemberRow> = group
        .into_iter()
        .map(|(address, reply)| match reply {
            Ok(r) => MemberRow {
                id: Some(r.id),
                address,
                role: r.role,
                term: Some(r.term),
                last_applied: Some(r.last_applied),
                leader_id: (r.leader_id != 0).then_some(r.leader_id),
                error: None,
            },
            Err(why) => MemberRow {
                id: ids.get(&address).copied(),
                address,
                role: "unreachable".into(),
                term: None,
                last_applied: None,
                leader_id: None,
                error: Some(why),
            },
        })
        .collect();
    let map = match meta.map().await {
        Ok(map) => map,
        Err(e) => {
            let seen: Vec<String> = members
                .iter()
                .map(|m| match &m.error {
                    Some(why) => format!("{} unreachable ({why})", m.address),
                    None => format!("{} {} in term {}", m.address, m.role, m.term.unwrap_or(0)),
                })
                .collect();
            return Err(anyhow!("{e:#}; member replies: {}", seen.join("; ")));
        }
    };
    let now = now_ms();
    let volumes = volume_statuses(&map).await;
    let lease = map.lease.as_ref().map(|l| LeaseRow {
        holder: l.holder.clone(),
        epoch: l.epoch.get(),
        expiry_ms: l.expiry_ms,
        expires_in_ms: l.expiry_ms.saturating_sub(now),
        expired: l.is_expired_at(now),
    });
    Ok(StatusDoc {
        meta: members,
        nodes: node_rows(&map, now),
        volumes,
        lease,
        epoch_max: map.epoch_max.get(),
    })
}

/// Why a segment's status is missing: `reachable` is false when the node did not answer at
/// all (down, refused, timed out), true when it answered with an error.
struct SegmentFailure {
    reachable: bool,
    message: String,
}

impl SegmentFailure {
    fn unreachable(message: impl Into<String>) -> SegmentFailure {
        SegmentFailure {
            reachable: false,
            message: message.into(),
        }
    }
}

/// One segment's answer to a status request.
type SegmentAnswer = Result<SegmentState, SegmentFailure>;
/// A segment: which volume, which PG, on which node.
type SegmentKey = (VolumeId, PgId, NodeId);

/// Asks every segment of every volume for its state, at most
/// [`SEGMENT_STATUS_IN_FLIGHT_MAX`] at a time. A segment that does not answer is shown as such.
async fn volume_statuses(map: &ClusterMap) -> Vec<VolumeStatus> {
    let permits = Arc::new(Semaphore::new(SEGMENT_STATUS_IN_FLIGHT_MAX));
    let mut clients: BTreeMap<NodeId, Result<SegmentClient, String>> = BTreeMap::new();
    for node in map.nodes.values() {
        let client = SegmentClient::with_timeout(node.id, &node.address, SEGMENT_STATUS_TIMEOUT)
            .map_err(|s| s.message().to_string());
        clients.insert(node.id, client);
    }
    let mut calls: JoinSet<(SegmentKey, SegmentAnswer)> = JoinSet::new();
    for volume in map.volumes.values() {
        for pg in &volume.pgs {
            for &node in &pg.segments {
                let key = (volume.id, pg.id, node);
                let client = clients
                    .get(&node)
                    .cloned()
                    .unwrap_or_else(|| Err(format!("node {node} is not in the cluster map")));
                let permits = permits.clone();
                calls.spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return (
                            key,
                            Err(SegmentFailure::unreachable("status limiter closed")),
                        );
                    };
                    let result = match client {
                        Ok(c) => c.status(key.1).await.map_err(|s| {
                            let transport = matches!(
                                s.code(),
                                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                            );
                            SegmentFailure {
                                reachable: !transport,
                                message: s.message().to_string(),
                            }
                        }),
                        Err(why) => Err(SegmentFailure::unreachable(why)),
                    };
                    (key, result)
                });
            }
        }
    }
    let mut answers: BTreeMap<SegmentKey, SegmentAnswer> = BTreeMap::new();
    while let Some(joined) = calls.join_next().await {
        if let Ok((key, result)) = joined {
            answers.insert(key, result);
        }
    }

    map.volumes
        .values()
        .map(|volume| {
            let mut vdl: Option<u64> = None;
            let pgs = volume
                .pgs
                .iter()
                .map(|pg| {
                    let states: Vec<_> = pg
                        .segments
                        .iter()
                        .map(|&node| {
                            answers
                                .remove(&(volume.id, pg.id, node))
                                .unwrap_or_else(|| {
                                    Err(SegmentFailure::unreachable("status task failed"))
                                })
                        })
                        .collect();
                    let scl_max = states
                        .iter()
                        .filter_map(|s| s.as_ref().ok().map(|s| s.scl.get()))
                        .max();
                    let segments = pg
                        .segments
                        .iter()
                        .zip(states)
                        .map(|(&node, state)| {
                            let (address, az, _) = node_facts(map, node);
                            match state {
                                Ok(s) => {
                                    vdl = vdl.max(Some(s.vdl_hint.get()));
                                    SegmentStatus {
                                        node: node.get(),
                                        address,
                                        az,
                                        reachable: true,
                                        scl: Some(s.scl.get()),
                                        lag: scl_max.map(|m| m.saturating_sub(s.scl.get())),
                                        epoch: Some(s.epoch.get()),
                                        vdl_hint: Some(s.vdl_hint.get()),
                                        complete_lsn: Some(s.complete_lsn.get()),
                                        error: None,
                                    }
                                }
                                Err(failure) => SegmentStatus {
                                    node: node.get(),
                                    address,
                                    az,
                                    reachable: failure.reachable,
                                    scl: None,
                                    lag: None,
                                    epoch: None,
                                    vdl_hint: None,
                                    complete_lsn: None,
                                    error: Some(failure.message),
                                },
                            }
                        })
                        .collect();
                    PgStatus {
                        id: pg.id.get(),
                        membership_epoch: pg.membership_epoch.get(),
                        scl_max,
                        segments,
                    }
                })
                .collect();
            VolumeStatus {
                id: volume.id.get(),
                page_size: volume.page_size,
                pages_per_pg: volume.pages_per_pg,
                vdl,
                pgs,
            }
        })
        .collect()
}

// ---- human output ----

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Left-aligned columns two spaces apart, with a header row.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(
                ' ',
                widths[i].saturating_sub(cell.chars().count()),
            ));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn nodes_table(nodes: &[NodeRow]) -> String {
    if nodes.is_empty() {
        return "no storage nodes registered\n".into();
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.address.clone(),
                n.az.clone(),
                n.state.clone(),
                format!("{} ms ago", n.heartbeat_age_ms),
                n.segments.to_string(),
            ]
        })
        .collect();
    table(
        &["ID", "ADDRESS", "AZ", "STATE", "LAST HEARTBEAT", "SEGMENTS"],
        &rows,
    )
}

impl StatusDoc {
    fn human(&self) -> String {
        let mut out = String::from("META GROUP\n");
        let rows: Vec<Vec<String>> = self
            .meta
            .iter()
            .map(|m| {
                vec![
                    opt(m.id),
                    m.address.clone(),
                    m.role.clone(),
                    opt(m.term),
                    opt(m.last_applied),
                ]
            })
            .collect();
        out += &table(&["ID", "ADDRESS", "ROLE", "TERM", "LAST APPLIED"], &rows);

        out += "\nSTORAGE NODES\n";
        out += &nodes_table(&self.nodes);

        for v in &self.volumes {
            out += &format!(
                "\nVOLUME {}: {} PGs of {} pages × {} bytes; VDL {} (highest reported by segments)\n",
                v.id,
                v.pgs.len(),
                v.pages_per_pg,
                v.page_size,
                opt(v.vdl)
            );
            let mut rows = Vec::new();
            for pg in &v.pgs {
                for s in &pg.segments {
                    let (scl, lag) = match (&s.error, s.reachable) {
                        (None, _) => (opt(s.scl), opt(s.lag)),
                        (Some(_), false) => ("unreachable".into(), "-".into()),
                        (Some(why), true) => (format!("error: {why}"), "-".into()),
                    };
                    rows.push(vec![
                        pg.id.to_string(),
                        s.node.to_string(),
                        s.az.clone(),
                        s.address.clone(),
                        scl,
                        lag,
                        opt(s.epoch),
                    ]);
                }
            }
            out += &table(
                &["PG", "NODE", "AZ", "ADDRESS", "SCL", "LAG", "EPOCH"],
                &rows,
            );
        }
        if self.volumes.is_empty() {
            out += "\nno volumes (create one with `sixfold ctl volume create`)\n";
        }

        out += "\nWRITER LEASE\n";
        match &self.lease {
            None => out += &format!("none (highest epoch granted: {})\n", self.epoch_max),
            Some(l) if l.expired => out += &format!("{} (epoch {}): expired\n", l.holder, l.epoch),
            Some(l) => {
                out += &format!(
                    "{} (epoch {}): expires in {} ms\n",
                    l.holder, l.epoch, l.expires_in_ms
                )
            }
        }
        out
    }
}

impl VolumeView {
    fn human(&self) -> String {
        let mut out = format!(
            "volume {}: {} PGs of {} pages × {} bytes\n",
            self.id,
            self.pgs.len(),
            self.pages_per_pg,
            self.page_size
        );
        let rows: Vec<Vec<String>> = self
            .pgs
            .iter()
            .map(|pg| {
                let segments: Vec<String> = pg
                    .segments
                    .iter()
                    .map(|s| format!("{}@{}", s.node, s.az))
                    .collect();
                vec![
                    pg.id.to_string(),
                    pg.membership_epoch.to_string(),
                    segments.join(" "),
                ]
            })
            .collect();
        out += &table(&["PG", "MEMBERSHIP EPOCH", "SEGMENTS (node@az)"], &rows);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the address check accepts host:port and names what is wrong otherwise.
    #[test]
    fn host_port_check() {
        assert!(check_host_port("127.0.0.1:47001").is_ok());
        assert!(check_host_port("meta-1.example:7000").is_ok());
        assert!(check_host_port("127.0.0.1").is_err());
        assert!(check_host_port("127.0.0.1:0").is_err());
        assert!(check_host_port("127.0.0.1:99999").is_err());
        assert!(check_host_port(":47001").is_err());
        assert!(check_host_port("not a host:1").is_err());
    }

    // Proves tables align every column to its widest cell and drop trailing blanks.
    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["ID", "STATE"],
            &[
                vec!["1".into(), "Running".into()],
                vec!["10".into(), "-".into()],
            ],
        );
        assert_eq!(t, "ID  STATE\n1   Running\n10  -\n");
    }
}
