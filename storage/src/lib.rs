//! Availability of pages (not yet built): the 8 KiB page format, redo apply, page versions,
//! GetPage@LSN, layer files and object-store snapshots. The segment log that feeds it lives in
//! `sixfold-log-service`; this crate will read it, never write it.
