//! The compute node (not yet built): Postgres wire protocol, SQL planning, catalog, B+tree,
//! buffer cache and transactions. It ships redo through `sixfold_log_service::writer` and reads
//! pages only through GetPage.
