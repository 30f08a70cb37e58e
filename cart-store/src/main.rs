//! `cart-store`: run one region's node, or write development certificates.
//!
//! ```text
//! cart-store serve --config FILE
//! cart-store certs --out DIR --regions a,b,c
//! ```

use anyhow::Context;
use clap::{Parser, Subcommand};
use meridian_cart_store::server::Server;
use meridian_cart_store::Config;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

// The node allocates per request (bodies, JSON, cart states); glibc malloc was 14% of its
// CPU under `cargo xtask bench-node`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cart-store",
    version,
    about = "One region of Meridian's cart service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node.
    Serve {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Write a development CA and one certificate per region.
    Certs {
        /// Directory to write ca.pem, ca.key, REGION.pem and REGION.key into.
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated region names, e.g. virginia,frankfurt,tokyo.
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
    },
    /// Three regions in one process with a scripted story (not implemented yet).
    Demo {
        /// Keep the HTTP APIs up afterwards.
        #[arg(long)]
        serve: bool,
    },
    /// Drive nodes with HTTP load and report throughput and latency percentiles.
    Load {
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
        mix: meridian_cart_store::load::Mix,
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Certs { out, regions } => certs(out, &regions),
        Command::Demo { .. } => Err(anyhow::anyhow!(
            "`cart-store demo` is not implemented yet (it needs replication)"
        )),
        Command::Load {
            target,
            concurrency,
            duration,
            carts,
            skus,
            mix,
            seed,
            json,
            redis,
        } => load(
            meridian_cart_store::load::LoadConfig {
                targets: target,
                concurrency,
                duration,
                carts,
                skus,
                mix,
                seed,
                progress: true,
                redis,
            },
            json,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cart-store: error: {e:#}");
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

fn load(
    config: meridian_cart_store::load::LoadConfig,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(meridian_cart_store::load::run_load(config))?;
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

fn certs(out: PathBuf, regions: &[String]) -> anyhow::Result<()> {
    let files = meridian_cart_store::certs::write_dev_certs(&out, regions)?;
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn serve(config_path: PathBuf) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = Config::load(&config_path)?;
    for key in config.unknown_keys() {
        tracing::warn!(key = %key, "unknown config key ignored (a typo?)");
    }
    if !config.peers.is_empty() {
        tracing::warn!(
            peers = config.peers.len(),
            "peers are configured, but replication is not implemented yet; they are not contacted"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = Server::open(&config)?;
        let listener = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(
            region = %config.region,
            node_id = config.node_id,
            durability = ?config.durability,
            data_dir = %config.data_dir.display(),
            "listening on http://{addr}"
        );
        println!("cart-store: listening on http://{addr}");
        server.run(listener, shutdown_signal()).await?;
        tracing::info!("shut down cleanly");
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
