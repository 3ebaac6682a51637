//! GetPage@LSN and materialization benchmark on one in-process segment.
//! Usage: cargo run --release -p sixfold-storage --example page_bench [records] [reads] [readers]

use sixfold_storage::bench_support::{BenchConfig, run};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let mut config = BenchConfig::default();
    if let Some(n) = args.first() {
        config.records = *n;
    }
    if let Some(n) = args.get(1) {
        config.reads = *n;
    }
    if let Some(n) = args.get(2) {
        config.readers = *n;
    }
    println!("{config:?}");
    println!("{}", run(&config).await?);
    Ok(())
}
