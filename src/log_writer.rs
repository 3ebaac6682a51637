//! `sixfold log-writer`: a writer of the redo log alone, holding the meta lease. It commits
//! synthetic mini-transactions and prints one JSON line per event, so tests and operators can
//! drive and watch the log path before compute exists. Compute will use the same pieces.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;
use sixfold_log_service::writer::{QuorumWriter, RecordSpec, WriterConfig};
use sixfold_log_service::{PageId, VolumeId};
use sixfold_meta::client::{MetaClient, MetaClientError};
use sixfold_meta::{CommandError, LeaseError};

/// Exit status when the writer lost its lease or was fenced.
pub const EXIT_FENCED: i32 = 3;

#[derive(clap::Args)]
pub struct LogWriterArgs {
    /// Meta group members, comma-separated `host:port` [default: $SIXFOLD_META, else the
    /// demo's members].
    #[arg(long)]
    pub meta: Option<String>,
    /// Name this writer holds the lease under.
    #[arg(long)]
    pub holder: String,
    /// Lease duration; renewed every third of it.
    #[arg(long, default_value_t = 2_000)]
    pub lease_ms: u64,
    /// Mini-transactions to commit (0: until stopped).
    #[arg(long, default_value_t = 0)]
    pub mtrs: u64,
    /// Records per mini-transaction.
    #[arg(long, default_value_t = 2)]
    pub records_per_mtr: u64,
}

/// The payload of record `j` of mini-transaction `seq` by `holder`: tests recompute it.
pub fn payload(holder: &str, seq: u64, j: u64) -> String {
    format!("{holder}:{seq}:{j}")
}

fn emit(line: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub async fn run(args: LogWriterArgs) -> anyhow::Result<()> {
    let (list, source) = crate::ctl::meta_members(args.meta.clone());
    let meta =
        MetaClient::from_list(&list).with_context(|| format!("meta members from {source}"))?;
    let lease = loop {
        match meta.acquire_lease(&args.holder, args.lease_ms).await {
            Ok(lease) => break lease,
            Err(MetaClientError::Refused(CommandError::Lease(LeaseError::Held {
                holder, ..
            }))) => {
                emit(json!({"event": "waiting", "holder": holder}));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("while acquiring the writer lease"),
        }
    };
    let placement = meta
        .placement(VolumeId(1))
        .await
        .context("while reading placement")?;
    let writer = QuorumWriter::open(
        placement.clone(),
        Some(lease.epoch),
        WriterConfig::default(),
    )
    .await
    .context("while recovering the volume")?;
    let rec = writer.recovery();
    emit(json!({
        "event": "opened",
        "epoch": lease.epoch.get(),
        "recovered_vdl": rec.recovered_vdl.get(),
        "truncated_through": rec.truncated_through.get(),
    }));
    let writer = Arc::new(writer);
    let mut renew = {
        let (meta, holder, lease_ms, epoch) = (
            meta.clone(),
            args.holder.clone(),
            args.lease_ms,
            lease.epoch,
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(lease_ms / 3)).await;
                if let Err(e) = meta.renew_lease(&holder, epoch, lease_ms).await {
                    return e;
                }
            }
        })
    };
    let pages = placement.pages_per_pg * placement.pgs.len() as u64;
    let work = {
        let writer = writer.clone();
        let holder = args.holder.clone();
        async move {
            let mut seq = 0;
            while args.mtrs == 0 || seq < args.mtrs {
                let specs: Vec<RecordSpec> = (0..args.records_per_mtr)
                    .map(|j| RecordSpec {
                        page_id: PageId((seq * 31 + j * 7) % pages),
                        kind: 0,
                        payload: Bytes::from(payload(&holder, seq, j)),
                    })
                    .collect();
                let commit = writer.commit(&specs).await?;
                emit(
                    json!({"event": "acked", "seq": seq, "first": commit.first.get(), "cpl": commit.cpl.get()}),
                );
                seq += 1;
            }
            Ok::<_, sixfold_log_service::writer::WriterError>(())
        }
    };
    tokio::select! {
        result = work => match result {
            Ok(()) => {
                renew.abort();
                if let Err(e) = meta.release_lease(&args.holder, lease.epoch).await {
                    tracing::warn!(error = %e, "could not release the writer lease; it will expire");
                }
                emit(json!({"event": "done"}));
            }
            Err(e) => {
                emit(json!({"event": "fenced", "error": e.to_string()}));
                std::process::exit(EXIT_FENCED);
            }
        },
        lost = &mut renew => {
            let why = lost.map(|e| e.to_string()).unwrap_or_else(|e| e.to_string());
            emit(json!({"event": "lease-lost", "error": why}));
            std::process::exit(EXIT_FENCED);
        }
        _ = crate::storage_cmd::shutdown_signal() => {}
    }
    Ok(())
}
