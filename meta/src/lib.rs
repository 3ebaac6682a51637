//! Cluster metadata (not yet built): an openraft group holding nodes, volumes with segment
//! placement, and the writer lease with its volume epoch. Until it exists, placement comes from
//! a file (`sixfold_log_service::placement`) and the epoch from sealing segments.
