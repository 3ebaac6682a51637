//! The LogService a storage node serves: one [`Segment`] per PG placed on the node, and a gossip
//! task per segment that fills its holes from peers.
//!
//! Only queue → persist → ack is on the request path; gossip and hint persistence run beside it.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesOrdered, Stream, StreamExt};
use sixfold_proto::log as pb;
use sixfold_proto::log::log_service_server::{LogService, LogServiceServer};
use tonic::{Request, Response, Status, Streaming};

use crate::client::SegmentClient;
use crate::declaration::Declaration;
use crate::error::SegmentError;
use crate::gossip;
use crate::limits::{APPENDS_IN_FLIGHT_MAX, BATCH_BYTES_MAX, GRPC_MESSAGE_BYTES_MAX};
use crate::placement::Placement;
use crate::segment::{OpenReport, Origin, Segment};
use crate::types::{Epoch, Lsn, NodeId, PgId};

/// The segments hosted by one storage node.
pub struct StorageNode {
    node: NodeId,
    segments: HashMap<PgId, Arc<Segment>>,
}

impl StorageNode {
    /// Opens every segment `placement` puts on `node`, under `data_dir`.
    pub fn open(
        data_dir: &Path,
        node: NodeId,
        placement: &Placement,
    ) -> Result<StorageNode, SegmentError> {
        let mut segments = HashMap::new();
        for pg in placement.pgs_on(node) {
            let (segment, report) =
                Segment::open(&data_dir.join("segments"), pg.id, placement.pages_of(pg.id))?;
            log_open_report(node, pg.id, &report);
            segments.insert(pg.id, Arc::new(segment));
        }
        Ok(StorageNode { node, segments })
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    pub fn segments(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.segments.values()
    }

    /// Adopts the highest volume epoch the meta group granted, so an old writer is fenced even
    /// on segments the new writer has not reached yet.
    pub fn seal_all(&self, epoch: Epoch) -> Result<(), SegmentError> {
        for segment in self.segments.values() {
            if segment.state().epoch < epoch {
                segment.seal(epoch)?;
            }
        }
        Ok(())
    }

    pub fn segment(&self, pg: PgId) -> Result<&Arc<Segment>, SegmentError> {
        self.segments.get(&pg).ok_or(SegmentError::UnknownPg(pg))
    }

    /// Starts one gossip task per segment, pulling from the other five segments of its PG.
    pub fn spawn_gossip(
        &self,
        placement: &Placement,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, Status> {
        let mut tasks = Vec::new();
        for (pg, segment) in &self.segments {
            let pg_placement = placement
                .pg(*pg)
                .expect("segment opened from this placement");
            let mut peers = Vec::new();
            for peer in pg_placement.segments.iter().filter(|n| **n != self.node) {
                let info = placement.node(*peer).expect("placement validated");
                peers.push(SegmentClient::connect_lazy(*peer, &info.addr)?);
            }
            tasks.push(tokio::spawn(gossip::run(segment.clone(), peers)));
        }
        Ok(tasks)
    }

    pub fn into_service(self: Arc<Self>) -> LogServiceServer<LogServer> {
        LogServiceServer::new(LogServer { node: self })
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
    }
}

fn log_open_report(node: NodeId, pg: PgId, report: &OpenReport) {
    if report.corrupt_skipped > 0 || report.torn_bytes_cut > 0 {
        tracing::warn!(
            node = node.get(),
            pg = pg.get(),
            ?report,
            "segment opened with damage repaired"
        );
    } else {
        tracing::info!(
            node = node.get(),
            pg = pg.get(),
            records = report.records,
            "segment opened"
        );
    }
}

pub struct LogServer {
    node: Arc<StorageNode>,
}

/// Runs blocking segment work (file writes with fsync) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SegmentError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Status::from),
        Err(e) => Err(Status::internal(format!("segment task failed: {e}"))),
    }
}

/// One writer Append: persists the records and answers with the segment's SCL.
async fn append(node: &StorageNode, req: pb::AppendRequest) -> Result<pb::AppendResponse, Status> {
    let segment = node.segment(PgId(req.pg))?;
    let records: Bytes = req.records;
    let origin = Origin::Writer {
        epoch: Epoch(req.epoch),
        vdl_hint: Lsn(req.vdl_hint),
        pg_tail: Lsn(req.pg_tail),
    };
    let scl = segment.append(&records, origin).await?;
    Ok(pb::AppendResponse { scl: scl.get() })
}

type AckFuture = Pin<Box<dyn Future<Output = Result<pb::AppendResponse, Status>> + Send>>;

/// An AppendStream being served: requests are read while earlier ones wait for their fsync,
/// up to [`APPENDS_IN_FLIGHT_MAX`] at a time (beyond that, HTTP/2 flow control holds the
/// writer back), and acks go out in request order.
struct AppendStreamState {
    node: Arc<StorageNode>,
    requests: Streaming<pb::AppendRequest>,
    requests_done: bool,
    in_flight: FuturesOrdered<AckFuture>,
}

impl AppendStreamState {
    /// The next ack, or None once the writer closed the stream and everything is answered.
    /// The first error ends the stream (tonic sends it as the status).
    async fn next_ack(&mut self) -> Option<Result<pb::AppendResponse, Status>> {
        loop {
            if self.requests_done && self.in_flight.is_empty() {
                return None;
            }
            tokio::select! {
                Some(ack) = self.in_flight.next(), if !self.in_flight.is_empty() => return Some(ack),
                request = self.requests.next(),
                    if !self.requests_done && self.in_flight.len() < APPENDS_IN_FLIGHT_MAX =>
                {
                    match request {
                        Some(Ok(req)) => {
                            let node = self.node.clone();
                            self.in_flight
                                .push_back(Box::pin(async move { append(&node, req).await }));
                        }
                        Some(Err(status)) => return Some(Err(status)),
                        None => self.requests_done = true,
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl LogService for LogServer {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        Ok(Response::new(
            append(&self.node, request.into_inner()).await?,
        ))
    }

    type AppendStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::AppendResponse, Status>> + Send + 'static>>;

    async fn append_stream(
        &self,
        request: Request<Streaming<pb::AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let state = AppendStreamState {
            node: self.node.clone(),
            requests: request.into_inner(),
            requests_done: false,
            in_flight: FuturesOrdered::new(),
        };
        // Nothing follows an error: the writer resends from the failed Append on a new stream.
        let acks = futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            let ack = state.next_ack().await?;
            let state = ack.is_ok().then_some(state);
            Some((ack, state))
        });
        Ok(Response::new(Box::pin(acks)))
    }

    async fn seal(
        &self,
        request: Request<pb::SealRequest>,
    ) -> Result<Response<pb::SegmentState>, Status> {
        let req = request.into_inner();
        let segment = self.node.segment(PgId(req.pg))?.clone();
        let state = blocking(move || segment.seal(Epoch(req.epoch))).await?;
        Ok(Response::new(state.to_proto()))
    }

    async fn truncate(
        &self,
        request: Request<pb::TruncateRequest>,
    ) -> Result<Response<pb::SegmentState>, Status> {
        let req = request.into_inner();
        let segment = self.node.segment(PgId(req.pg))?.clone();
        let declaration = req
            .declaration
            .as_ref()
            .map(Declaration::from_proto)
            .transpose()
            .map_err(|m| Status::from(SegmentError::InvalidRequest(m.to_string())))?
            .ok_or_else(|| {
                Status::from(SegmentError::InvalidRequest(
                    "truncate without a declaration".into(),
                ))
            })?;
        let state = blocking(move || segment.truncate(Epoch(req.epoch), declaration)).await?;
        Ok(Response::new(state.to_proto()))
    }

    async fn read_records(
        &self,
        request: Request<pb::ReadRecordsRequest>,
    ) -> Result<Response<pb::ReadRecordsResponse>, Status> {
        let req = request.into_inner();
        let segment = self.node.segment(PgId(req.pg))?.clone();
        let max_bytes = (req.max_bytes as usize).clamp(1, BATCH_BYTES_MAX);
        let result =
            blocking(move || segment.read(Lsn(req.after_lsn), Lsn(req.through_lsn), max_bytes))
                .await?;
        Ok(Response::new(pb::ReadRecordsResponse {
            records: Bytes::from(result.records),
            more: result.more,
            scl: result.scl.get(),
            base_lsn: result.base.get(),
        }))
    }

    async fn segment_status(
        &self,
        request: Request<pb::SegmentStatusRequest>,
    ) -> Result<Response<pb::SegmentState>, Status> {
        let req = request.into_inner();
        let segment = self.node.segment(PgId(req.pg))?;
        Ok(Response::new(segment.state().to_proto()))
    }
}
