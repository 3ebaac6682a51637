//! The one client for talking to a storage node's LogService: timeouts, message limits and the
//! conversion of replies into domain types.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sixfold_proto::log as pb;
use sixfold_proto::log::log_service_client::LogServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use crate::declaration::Declaration;
use crate::limits::{APPENDS_IN_FLIGHT_MAX, CONNECT_TIMEOUT, GRPC_MESSAGE_BYTES_MAX, RPC_TIMEOUT};
use crate::segment::{ReadResult, SegmentState};
use crate::types::{Epoch, Lsn, NodeId, PgId};

/// What a writer tells a segment with every append: its VDL, and the PG's last record at that
/// moment (so the segment knows when it holds everything of the PG up to that VDL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurableHint {
    pub vdl: Lsn,
    pub pg_tail: Lsn,
}

#[derive(Clone)]
pub struct SegmentClient {
    node: NodeId,
    addr: String,
    inner: LogServiceClient<Channel>,
}

impl std::fmt::Debug for SegmentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SegmentClient({:?} at {})", self.node, self.addr)
    }
}

impl SegmentClient {
    /// A client that connects on first use and reconnects after failures by itself.
    pub fn connect_lazy(node: NodeId, addr: &str) -> Result<SegmentClient, Status> {
        Self::with_timeout(node, addr, RPC_TIMEOUT)
    }

    pub fn with_timeout(
        node: NodeId,
        addr: &str,
        timeout: Duration,
    ) -> Result<SegmentClient, Status> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("bad storage address {addr}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .tcp_nodelay(true);
        let inner = LogServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        Ok(SegmentClient {
            node,
            addr: addr.to_string(),
            inner,
        })
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub async fn append(
        &self,
        pg: PgId,
        epoch: Epoch,
        records: Bytes,
        hint: DurableHint,
    ) -> Result<Lsn, Status> {
        let req = append_request(pg, epoch, records, hint);
        let resp = self.inner.clone().append(req).await?.into_inner();
        Ok(Lsn(resp.scl))
    }

    /// Opens the writer's long-lived Append stream to this node.
    pub async fn append_stream(&self) -> Result<AppendStream, Status> {
        let (requests, rx) = mpsc::channel(APPENDS_IN_FLIGHT_MAX);
        let acks = self
            .inner
            .clone()
            .append_stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(AppendStream { requests, acks })
    }

    pub async fn seal(&self, pg: PgId, epoch: Epoch) -> Result<SegmentState, Status> {
        let req = pb::SealRequest {
            pg: pg.get(),
            epoch: epoch.get(),
        };
        state_from_proto(self.inner.clone().seal(req).await?.into_inner())
    }

    pub async fn truncate(
        &self,
        pg: PgId,
        epoch: Epoch,
        declaration: &Declaration,
    ) -> Result<SegmentState, Status> {
        let req = pb::TruncateRequest {
            pg: pg.get(),
            epoch: epoch.get(),
            declaration: Some(declaration.to_proto()),
        };
        state_from_proto(self.inner.clone().truncate(req).await?.into_inner())
    }

    pub async fn status(&self, pg: PgId) -> Result<SegmentState, Status> {
        let req = pb::SegmentStatusRequest { pg: pg.get() };
        state_from_proto(self.inner.clone().segment_status(req).await?.into_inner())
    }

    pub async fn read(
        &self,
        pg: PgId,
        after: Lsn,
        through: Lsn,
        max_bytes: usize,
    ) -> Result<ReadResult, Status> {
        let req = pb::ReadRecordsRequest {
            pg: pg.get(),
            after_lsn: after.get(),
            through_lsn: through.get(),
            max_bytes: max_bytes.min(u32::MAX as usize) as u32,
        };
        let resp = self.inner.clone().read_records(req).await?.into_inner();
        Ok(ReadResult {
            records: resp.records.to_vec(),
            more: resp.more,
            scl: Lsn(resp.scl),
            base: Lsn(resp.base_lsn),
        })
    }
}

/// Appends to one node on one HTTP/2 stream: no per-Append request and response headers, no
/// stream setup. Acks come back in the order the Appends were sent; the caller keeps at most
/// [`APPENDS_IN_FLIGHT_MAX`] unacknowledged. After any error the stream is done.
pub struct AppendStream {
    requests: mpsc::Sender<pb::AppendRequest>,
    acks: Streaming<pb::AppendResponse>,
}

impl AppendStream {
    /// Sends one Append (an empty `records` is a heartbeat that carries only the hint).
    pub fn send(
        &self,
        pg: PgId,
        epoch: Epoch,
        records: Bytes,
        hint: DurableHint,
    ) -> Result<(), Status> {
        let req = append_request(pg, epoch, records, hint);
        self.requests.try_send(req).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                Status::resource_exhausted("more Appends in flight than the stream allows")
            }
            mpsc::error::TrySendError::Closed(_) => Status::unavailable("append stream closed"),
        })
    }

    /// The SCL acknowledging the oldest unacknowledged Append. Cancel-safe.
    pub async fn next_ack(&mut self) -> Result<Lsn, Status> {
        match self.acks.next().await {
            Some(Ok(ack)) => Ok(Lsn(ack.scl)),
            Some(Err(status)) => Err(status),
            None => Err(Status::unavailable("append stream ended")),
        }
    }
}

fn append_request(pg: PgId, epoch: Epoch, records: Bytes, hint: DurableHint) -> pb::AppendRequest {
    pb::AppendRequest {
        pg: pg.get(),
        epoch: epoch.get(),
        records,
        vdl_hint: hint.vdl.get(),
        pg_tail: hint.pg_tail.get(),
    }
}

pub fn state_from_proto(p: pb::SegmentState) -> Result<SegmentState, Status> {
    let declaration = match &p.declaration {
        Some(d) => Declaration::from_proto(d)
            .map_err(|m| Status::internal(format!("bad declaration from storage: {m}")))?,
        None => Declaration::default(),
    };
    Ok(SegmentState {
        pg: PgId(p.pg),
        epoch: Epoch(p.epoch),
        scl: Lsn(p.scl),
        max_lsn: Lsn(p.max_lsn),
        vdl_hint: Lsn(p.vdl_hint),
        declaration,
        record_count: p.record_count,
        complete_lsn: Lsn(p.complete_lsn),
    })
}
