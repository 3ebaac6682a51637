//! `sixfold`: one binary, one subcommand per role.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

mod demo;
mod storage_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sixfold",
    version,
    about = "An Aurora-style distributed SQL database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a storage node: hosts segments and serves the LogService over gRPC.
    Storage(storage_cmd::StorageArgs),
    /// Start a whole local cluster as separate processes under one data directory.
    Demo(demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Storage(args) => runtime.block_on(storage_cmd::run(args)),
        Command::Demo(args) => runtime.block_on(demo::run(args)),
    }
}
