//! `cart-load`: drive cart-store nodes (or, for comparison, Redis) with HTTP load and report
//! throughput and latency percentiles. A benchmark tool: it is not part of the node binary.
//!
//! ```text
//! cart-load --target http://127.0.0.1:8080 --duration 10s
//! cart-load --redis redis://127.0.0.1:6379/ --duration 10s
//! ```

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cart-load",
    version,
    about = "Drive cart-store nodes (or Redis) with HTTP load and report throughput and latency percentiles"
)]
struct Cli {
    /// Base URL(s) of the nodes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    target: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run: e.g. 20s, 500ms, 2m (plain numbers are seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: std::time::Duration,
    /// Number of carts.
    #[arg(long, default_value_t = 100_000)]
    carts: u64,
    /// Skus per cart to choose from.
    #[arg(long, default_value_t = 20)]
    skus: u64,
    /// Operation weights, e.g. add=70,read=20,remove=10 (also set=, checkout=).
    #[arg(long, default_value = "add=70,read=20,remove=10")]
    mix: meridian_cart_load::Mix,
    /// Seed of the operation sequence.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Drive a Redis server (e.g. redis://127.0.0.1:6379/) with the same load shape
    /// instead of cart-store nodes: the baseline of `cargo xtask bench-node`.
    #[arg(long)]
    redis: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = meridian_cart_load::LoadConfig {
        targets: cli.target,
        concurrency: cli.concurrency,
        duration: cli.duration,
        carts: cli.carts,
        skus: cli.skus,
        mix: cli.mix,
        seed: cli.seed,
        progress: true,
        redis: cli.redis,
    };
    match load(config, cli.json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cart-load: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 20s, 500ms or 2m"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unit must be ms, s or m")),
    }
}

fn load(config: meridian_cart_load::LoadConfig, json: Option<PathBuf>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(meridian_cart_load::run_load(config))?;
    println!(
        "requests {}  errors {}  throughput {:.0}/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        report.requests,
        report.errors,
        report.throughput,
        report.p50_ms,
        report.p99_ms,
        report.p999_ms,
        report.max_ms
    );
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if report.requests > 0 && report.errors == report.requests {
        anyhow::bail!("every request failed; is a node listening at the target?");
    }
    Ok(())
}
