//! The one client for a storage node's PageService: timeouts, message limits, and checking
//! every page that comes back before handing it out.

use std::time::Duration;

use sixfold_log_service::limits::{CONNECT_TIMEOUT, GRPC_MESSAGE_BYTES_MAX, RPC_TIMEOUT};
use sixfold_log_service::{Lsn, PageId};
use sixfold_proto::page as pb;
use sixfold_proto::page::page_service_client::PageServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::page::Page;

#[derive(Clone)]
pub struct PageClient {
    addr: String,
    inner: PageServiceClient<Channel>,
}

impl std::fmt::Debug for PageClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageClient({})", self.addr)
    }
}

impl PageClient {
    /// A client that connects on first use and reconnects by itself.
    pub fn connect_lazy(addr: &str) -> Result<PageClient, Status> {
        Self::with_timeout(addr, RPC_TIMEOUT)
    }

    pub fn with_timeout(addr: &str, timeout: Duration) -> Result<PageClient, Status> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("bad storage address {addr}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .tcp_nodelay(true);
        let inner = PageServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        Ok(PageClient {
            addr: addr.to_string(),
            inner,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The page as of `lsn`; None when it was never written at or below `lsn`. The page is
    /// verified (size, checksum, layout, id and LSN) before it is returned.
    pub async fn get_page(&self, page: PageId, lsn: Lsn) -> Result<Option<Page>, Status> {
        let req = pb::GetPageRequest {
            page_id: page.get(),
            lsn: lsn.get(),
        };
        let resp = match self.inner.clone().get_page(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(s),
        };
        let img = Page::from_bytes(&resp.page)
            .map_err(|e| Status::data_loss(format!("storage sent a bad page: {e}")))?;
        if img.page_id() != page || img.lsn() > lsn || img.lsn().get() != resp.page_lsn {
            return Err(Status::data_loss(format!(
                "storage sent {img:?} for {page:?} at {lsn:?}"
            )));
        }
        Ok(Some(img))
    }

    /// Reports `compute`'s lowest read point in use; returns how long the report holds.
    pub async fn report_read_point(
        &self,
        compute: u64,
        read_point: Lsn,
    ) -> Result<Duration, Status> {
        let req = pb::ReportReadPointRequest {
            compute_id: compute,
            read_point: read_point.get(),
        };
        let resp = self
            .inner
            .clone()
            .report_read_point(req)
            .await?
            .into_inner();
        Ok(Duration::from_millis(resp.ttl_ms))
    }

    pub async fn status(&self) -> Result<Vec<pb::PgPageStatus>, Status> {
        let resp = self
            .inner
            .clone()
            .page_status(pb::PageStatusRequest {})
            .await?
            .into_inner();
        Ok(resp.pgs)
    }
}
