//! `sixfold-bench`: load harnesses that print sixfold's numbers next to a baseline measured in
//! the same run on the same machine, so every result reads as a ratio rather than a bare number.
//!
//! - [`log_bench`]: `sixfold-bench log`, the log path (quorum writer → six storage processes)
//!   against one local file with group commit.
//! - [`procs`]: starting and stopping real `sixfold storage` processes.
//! - [`local_log`]: the one-file group-commit baseline.
//! - [`six_copy_floor`]: the least six replicas can cost on this machine (and the hidden
//!   `replica` subcommand that runs one of them).
//! - [`sync_probe`]: how much slower one log's fdatasync gets when six sync at once.
//!
//! The harness talks to storage only through the public quorum writer, as compute does; it must
//! not reach into storage internals, or it would measure something compute cannot get.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

mod local_log;
mod log_bench;
mod page_bench;
mod procs;
mod six_copy_floor;
mod sync_probe;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sixfold-bench",
    version,
    about = "Benchmarks for sixfold, each against a baseline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The log path: six `sixfold storage` processes (4/6 quorum, fsync) vs one local file
    /// (fsync), same commits, same batching, same disk.
    Log(log_bench::LogArgs),
    /// The page path: GetPage@LSN (cache hit and miss) and materialization on one segment vs
    /// random 8 KiB preads from one file.
    Pages(page_bench::PagesArgs),
    /// One replica of the log benchmark's six-copy floor (started by `log`, not by hand).
    #[command(hide = true)]
    Replica(six_copy_floor::ReplicaArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new;
    match cli.command {
        Command::Log(args) => runtime()?.block_on(log_bench::run(args)),
        Command::Pages(args) => runtime()?.block_on(page_bench::run(args)),
        // A plain blocking process: the floor's replicas have no async runtime.
        Command::Replica(args) => six_copy_floor::replica(args),
    }
}
