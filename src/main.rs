//! `sixfold`: one binary, one subcommand per role.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

mod ctl;
mod demo;
mod log_writer;
mod meta_cmd;
mod storage_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sixfold",
    version,
    about = "An Aurora-style distributed SQL database"
)]
struct Cli {
    /// Threads that run this process's async work [default: one per CPU core]. Several
    /// processes sharing a machine (a local cluster) each do better with a share of the cores.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a storage node: hosts segments and serves the LogService over gRPC.
    Storage(storage_cmd::StorageArgs),
    /// Run a member of the meta group (Raft): cluster map, placement, writer lease.
    Meta(meta_cmd::MetaArgs),
    /// Start a whole local cluster as separate processes under one data directory.
    Demo(demo::DemoArgs),
    /// Write synthetic redo under the writer lease, printing one JSON line per event.
    LogWriter(log_writer::LogWriterArgs),
    /// Inspect and steer a running cluster: status, storage nodes, volumes.
    Ctl(ctl::CtlArgs),
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole context chain; no backtrace for an operator's mistake.
            eprintln!("sixfold: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = cli.worker_threads {
        runtime.worker_threads(n.into());
    }
    let runtime = runtime.build()?;
    match cli.command {
        Command::Storage(args) => runtime.block_on(storage_cmd::run(args)),
        Command::Meta(args) => runtime.block_on(meta_cmd::run(args)),
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::LogWriter(args) => runtime.block_on(log_writer::run(args)),
        Command::Ctl(args) => runtime.block_on(ctl::run(args)),
    }
}
