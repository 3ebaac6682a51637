//! sixfold's gRPC contracts: the `.proto` files under `proto/` and the tonic code generated from
//! them. This crate holds no logic; every behaviour lives in the crate that implements or calls a
//! service.

/// `sixfold.log.v1`: the LogService that storage nodes serve for their segments' redo logs.
pub mod log {
    tonic::include_proto!("sixfold.log.v1");
}

/// `sixfold.meta.v1`: the meta group's Raft transport and the MetaService everyone else uses.
pub mod meta {
    tonic::include_proto!("sixfold.meta.v1");
}

/// `sixfold.page.v1`: the PageService storage nodes serve: GetPage@LSN and read-point reports.
pub mod page {
    tonic::include_proto!("sixfold.page.v1");
}
