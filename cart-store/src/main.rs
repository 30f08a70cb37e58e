//! `cart-store`: run one region's node, or write development certificates.
//!
//! ```text
//! cart-store serve --config FILE
//! cart-store certs --out DIR --regions a,b,c
//! cart-store demo [--serve]
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
    /// Three regions in one process over real QUIC: a partition, both sides writing, the
    /// heal, and the merge.
    Demo {
        /// Keep the three HTTP APIs up afterwards, until Ctrl-C.
        #[arg(long)]
        serve: bool,
        /// Scale the simulated WAN latency, in percent of the real figures (0 = none).
        #[arg(long, default_value_t = 100)]
        latency_percent: u64,
        /// Hold the partition this long under a steady load in every region, then report
        /// the divergent carts and the time to converge.
        #[arg(long, default_value_t = 0)]
        partition_secs: u64,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Certs { out, regions } => certs(out, &regions),
        Command::Demo {
            serve,
            latency_percent,
            partition_secs,
        } => demo(meridian_cart_store::demo::DemoOptions {
            serve,
            latency_percent,
            partition_secs,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cart-store: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo(opts: meridian_cart_store::demo::DemoOptions) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(meridian_cart_store::demo::run(opts))
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // The handler is installed before anything answers, so a SIGTERM right after the
        // first /health answer still shuts down cleanly rather than killing the process.
        let shutdown = shutdown_signal()?;
        let server = Server::start(&config).await?;
        if let Some(peer_addr) = server.peer_addr() {
            tracing::info!(
                peers = ?config.peers.iter().map(|p| &p.region).collect::<Vec<_>>(),
                "replicating over QUIC on {peer_addr}"
            );
        }
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
        server.run(listener, shutdown).await?;
        tracing::info!("shut down cleanly");
        anyhow::Ok(())
    })
}

/// SIGTERM or Ctrl-C. The SIGTERM handler is registered when this is called, not when the
/// future is first polled.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    Ok(async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            term.recv().await;
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        tracing::info!("shutdown signal received; finishing in-flight requests");
    })
}
