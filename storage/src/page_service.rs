//! The PageService gRPC server: GetPage@LSN, read-point reports and page status, served by
//! `sixfold storage` on the same port as the LogService. It only translates between the wire
//! and [`crate::node`]; errors become gRPC codes through `From<StorageError> for Status` (see
//! `proto/proto/page.proto` for what each code means to a caller).

use std::sync::Arc;

use bytes::Bytes;
use sixfold_log_service::limits::GRPC_MESSAGE_BYTES_MAX;
use sixfold_log_service::{Lsn, PageId};
use sixfold_proto::page as pb;
use sixfold_proto::page::page_service_server::{PageService, PageServiceServer};
use tonic::{Request, Response, Status};

use crate::node::NodePages;

pub struct PageServer {
    node: Arc<NodePages>,
}

impl PageServer {
    pub fn new(node: Arc<NodePages>) -> PageServer {
        PageServer { node }
    }

    pub fn into_service(self) -> PageServiceServer<PageServer> {
        PageServiceServer::new(self)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
    }
}

#[tonic::async_trait]
impl PageService for PageServer {
    async fn get_page(
        &self,
        request: Request<pb::GetPageRequest>,
    ) -> Result<Response<pb::GetPageResponse>, Status> {
        let req = request.into_inner();
        let (page, lsn) = (PageId(req.page_id), Lsn(req.lsn));
        let segment = self.node.segment_of(page)?;
        let img = segment.get_page(page, lsn).await?;
        Ok(Response::new(pb::GetPageResponse {
            page: Bytes::copy_from_slice(img.as_bytes()),
            page_lsn: img.lsn().get(),
        }))
    }

    async fn report_read_point(
        &self,
        request: Request<pb::ReportReadPointRequest>,
    ) -> Result<Response<pb::ReportReadPointResponse>, Status> {
        let req = request.into_inner();
        self.node
            .read_points
            .report(req.compute_id, Lsn(req.read_point))?;
        Ok(Response::new(pb::ReportReadPointResponse {
            ttl_ms: self.node.read_points.ttl().as_millis() as u64,
        }))
    }

    async fn page_status(
        &self,
        _request: Request<pb::PageStatusRequest>,
    ) -> Result<Response<pb::PageStatusResponse>, Status> {
        Ok(Response::new(pb::PageStatusResponse {
            pgs: self.node.status(),
        }))
    }
}
