//! [`Config`]: the node's TOML configuration, with defaults for everything but identity.
//!
//! The keys of the contract (`docs/CONTRACT.md`: `region`, `node_id`, `data_dir`, `http_listen`, `peer_listen`,
//! `[tls]`, `[[peers]]`) plus these top-level keys, all optional:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `durability` | `"process"` | `"process"`: WAL written before the ack; `"fsync"`: group-committed fsync |
//! | `body_bytes_max` | 65536 | largest request body |
//! | `cart_lines_max` | 1000 | most lines in one cart |
//! | `cart_bytes_max` | 262144 | largest encoded cart state (each add keeps a dot until a set, remove or clear drops it) |
//! | `request_timeout_ms` | 5000 | per-request deadline (504 after it) |
//! | `idempotency_ttl_secs` | 86400 | how long an `Idempotency-Key` is remembered |
//! | `max_clock_offset_ms` | 500 | HLC max offset, also the restart bound check |
//! | `clock_bound_override` | false | start even if the persisted HLC bound is too far ahead |
//! | `write_batch_max` | 256 | most requests in one group-committed batch |
//! | `write_queue_max` | 4096 | pending writes before 503 |
//! | `causal_wait_ms` | 1000 | how long a request waits for its `Causal-Token` |
//! | `http_connections_max` | 1024 | open HTTP connections; more are answered 503 and closed |
//! | `http_header_timeout_ms` | 10000 | a request's head must arrive within this, from its first byte (or from the accept) |
//! | `http_head_bytes_max` | 65536 | largest request head (request line and headers); 431 beyond |
//! | `http_idle_timeout_ms` | 75000 | a kept-alive connection with no request in flight is closed after this |
//! | `shutdown_timeout_ms` | 10000 | how long SIGTERM waits for open requests before closing their connections |
//! | `replication_batch_window_ms` | 5 | how long new deltas wait to be batched before they go to peers |
//! | `replication_batch_bytes_max` | 262144 | largest batch of deltas in one message |
//! | `replication_inflight_bytes_max` | 8388608 | most bytes of deltas sent to one peer and not yet acknowledged |
//! | `replication_resend_timeout_ms` | 2000 | with deltas in flight and no acknowledgement for this long, resend from the last one |
//! | `replication_forward_after_ms` | 1000 | forward another region's deltas to a peer that stayed behind on them this long |
//! | `peer_reconnect_delay_max_ms` | 5000 | cap of the exponential backoff (with jitter) between reconnects |
//! | `replication_log_retention_entries` | 1000000 | per origin, delta log entries kept for a peer that has not acknowledged them; a peer further behind is repaired by anti-entropy |
//! | `anti_entropy_bytes_per_sec` | 8388608 | rate limit of the cart states anti-entropy ships, all peers together |
//! | `compaction_interval_ms` | 200 | how often this region's causally stable adds are coalesced (0 disables compaction) |
//! | `compaction_line_adds_min` | 8 | a line is compacted once it holds this many of this region's adds (so at most this many per region before they are coalesced) |
//! | `compaction_queue_max` | 262144 | most local adds waiting for causal stability to be compacted; past it new adds are not queued (a cart's later add covers them) |
//!
//! Each `[[peers]]` entry is `region` (its TLS name), `address` (`host:port`, UDP) and,
//! optionally, `simulated_latency_ms` (default 0): a delay added to every message sent to
//! that peer, to simulate WAN latency on one machine (the demo uses it; leave it 0 in
//! production). With peers configured, `peer_listen` and `[tls]` are required.
//!
//! `cart-store/config/example.toml` shows every key with its default. Relative paths are
//! relative to the process's working directory.
//!
//! Unknown keys are reported by [`Config::unknown_keys`] (the binary logs them as warnings)
//! rather than refused, so a config written for a later version still starts.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::transport::{PeerLink, TransportConfig};
pub use meridian_cart_store_core::Durability;
use meridian_cart_store_core::{NodeConfig, ReplicationConfig};
use meridian_clocks::ReplicaId;

/// TLS files for peer links (mutual TLS: every node presents its region certificate and
/// verifies its peers' against the CA).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This node's certificate (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

/// A peer region.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's region name (its TLS name).
    pub region: String,
    /// The peer's QUIC address, `host:port`.
    pub address: String,
    /// Added delay per message sent to this peer, in ms (simulated WAN latency; 0 = none).
    #[serde(default)]
    pub simulated_latency_ms: u64,
}

/// The node's configuration. See the [module docs](self) for every key.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Config {
    /// Unique region name.
    pub region: String,
    /// Unique replica id, never reused.
    pub node_id: u64,
    /// Where RocksDB keeps its files.
    pub data_dir: PathBuf,
    /// HTTP API address.
    pub http_listen: SocketAddr,
    /// QUIC (UDP) address for peers; required when peers are configured.
    #[serde(default)]
    pub peer_listen: Option<String>,
    /// TLS for peers.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Peer regions.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Durability mode.
    #[serde(default)]
    pub durability: Durability,
    /// Largest request body in bytes.
    #[serde(default = "defaults::body_bytes_max")]
    pub body_bytes_max: usize,
    /// Most lines in one cart.
    #[serde(default = "defaults::cart_lines_max")]
    pub cart_lines_max: usize,
    /// Largest encoded cart state in bytes.
    #[serde(default = "defaults::cart_bytes_max")]
    pub cart_bytes_max: usize,
    /// Per-request deadline in ms.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Idempotency record lifetime in seconds.
    #[serde(default = "defaults::idempotency_ttl_secs")]
    pub idempotency_ttl_secs: u64,
    /// HLC max offset in ms.
    #[serde(default = "defaults::max_clock_offset_ms")]
    pub max_clock_offset_ms: u64,
    /// Start even when the persisted HLC bound is further ahead than the max offset.
    #[serde(default)]
    pub clock_bound_override: bool,
    /// Most writes in one storage batch.
    #[serde(default = "defaults::write_batch_max")]
    pub write_batch_max: usize,
    /// Most writes waiting for the writer before requests get 503.
    #[serde(default = "defaults::write_queue_max")]
    pub write_queue_max: usize,
    /// How long a request waits for the position its `Causal-Token` names, in ms.
    #[serde(default = "defaults::causal_wait_ms")]
    pub causal_wait_ms: u64,
    /// Most open HTTP connections; more are answered 503 and closed.
    #[serde(default = "defaults::http_connections_max")]
    pub http_connections_max: usize,
    /// How long a request's head may take to arrive, in ms.
    #[serde(default = "defaults::http_header_timeout_ms")]
    pub http_header_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes.
    #[serde(default = "defaults::http_head_bytes_max")]
    pub http_head_bytes_max: usize,
    /// How long a kept-alive connection may sit idle between requests, in ms.
    #[serde(default = "defaults::http_idle_timeout_ms")]
    pub http_idle_timeout_ms: u64,
    /// How long a graceful shutdown waits for open requests, in ms.
    #[serde(default = "defaults::shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// How long new deltas wait to be batched, in ms.
    #[serde(default = "defaults::replication_batch_window_ms")]
    pub replication_batch_window_ms: u64,
    /// Largest batch of deltas in one message, in bytes.
    #[serde(default = "defaults::replication_batch_bytes_max")]
    pub replication_batch_bytes_max: usize,
    /// Most bytes in flight to one peer.
    #[serde(default = "defaults::replication_inflight_bytes_max")]
    pub replication_inflight_bytes_max: usize,
    /// Resend after this long without an acknowledgement, in ms.
    #[serde(default = "defaults::replication_resend_timeout_ms")]
    pub replication_resend_timeout_ms: u64,
    /// Forward another origin's deltas to a peer behind on them this long, in ms.
    #[serde(default = "defaults::replication_forward_after_ms")]
    pub replication_forward_after_ms: u64,
    /// Cap of the reconnect backoff, in ms.
    #[serde(default = "defaults::peer_reconnect_delay_max_ms")]
    pub peer_reconnect_delay_max_ms: u64,
    /// Per origin, log entries kept for a peer that has not acknowledged them.
    #[serde(default = "defaults::replication_log_retention_entries")]
    pub replication_log_retention_entries: u64,
    /// Anti-entropy's rate limit, bytes of cart states per second.
    #[serde(default = "defaults::anti_entropy_bytes_per_sec")]
    pub anti_entropy_bytes_per_sec: u64,
    /// How often causally stable adds are compacted, in ms (0 disables it).
    #[serde(default = "defaults::compaction_interval_ms")]
    pub compaction_interval_ms: u64,
    /// Most local adds queued for compaction.
    #[serde(default = "defaults::compaction_queue_max")]
    pub compaction_queue_max: u64,
    /// A line is compacted once it holds this many of this region's adds.
    #[serde(default = "defaults::compaction_line_adds_min")]
    pub compaction_line_adds_min: u64,
    #[serde(skip)]
    unknown: Vec<String>,
}

/// Every top-level key [`Config`] reads.
const KNOWN_KEYS: &[&str] = &[
    "region",
    "node_id",
    "data_dir",
    "http_listen",
    "peer_listen",
    "tls",
    "peers",
    "durability",
    "body_bytes_max",
    "cart_lines_max",
    "cart_bytes_max",
    "request_timeout_ms",
    "idempotency_ttl_secs",
    "max_clock_offset_ms",
    "clock_bound_override",
    "write_batch_max",
    "write_queue_max",
    "causal_wait_ms",
    "http_connections_max",
    "http_header_timeout_ms",
    "http_head_bytes_max",
    "http_idle_timeout_ms",
    "shutdown_timeout_ms",
    "replication_batch_window_ms",
    "replication_batch_bytes_max",
    "replication_inflight_bytes_max",
    "replication_resend_timeout_ms",
    "replication_forward_after_ms",
    "peer_reconnect_delay_max_ms",
    "replication_log_retention_entries",
    "anti_entropy_bytes_per_sec",
    "compaction_interval_ms",
    "compaction_queue_max",
    "compaction_line_adds_min",
];

/// The default of every defaulted key, written once: the config, [`ServerSettings`]'s
/// `Default` and the tests all use these.
///
/// [`ServerSettings`]: crate::server::ServerSettings
pub mod defaults {
    #![allow(missing_docs)]
    pub fn body_bytes_max() -> usize {
        64 * 1024
    }
    use meridian_cart_store_core::node;

    pub fn cart_lines_max() -> usize {
        node::CART_LINES_MAX_DEFAULT
    }
    pub fn cart_bytes_max() -> usize {
        node::CART_BYTES_MAX_DEFAULT
    }
    pub fn request_timeout_ms() -> u64 {
        5000
    }
    pub fn idempotency_ttl_secs() -> u64 {
        node::IDEMPOTENCY_TTL_DEFAULT.as_secs()
    }
    pub fn max_clock_offset_ms() -> u64 {
        meridian_clocks::DEFAULT_MAX_OFFSET.as_millis() as u64
    }
    pub fn write_batch_max() -> usize {
        256
    }
    pub fn write_queue_max() -> usize {
        4096
    }
    pub fn causal_wait_ms() -> u64 {
        1000
    }
    pub fn http_connections_max() -> usize {
        1024
    }
    pub fn http_header_timeout_ms() -> u64 {
        10_000
    }
    pub fn http_head_bytes_max() -> usize {
        64 * 1024
    }
    pub fn http_idle_timeout_ms() -> u64 {
        75_000
    }
    pub fn shutdown_timeout_ms() -> u64 {
        10_000
    }
    use meridian_cart_store_core::replication as r;
    pub fn replication_batch_window_ms() -> u64 {
        r::BATCH_WINDOW_DEFAULT.as_millis() as u64
    }
    pub fn replication_batch_bytes_max() -> usize {
        r::BATCH_BYTES_MAX_DEFAULT
    }
    pub fn replication_inflight_bytes_max() -> usize {
        r::INFLIGHT_BYTES_MAX_DEFAULT
    }
    pub fn replication_resend_timeout_ms() -> u64 {
        r::RESEND_TIMEOUT_DEFAULT.as_millis() as u64
    }
    pub fn replication_forward_after_ms() -> u64 {
        r::FORWARD_AFTER_DEFAULT.as_millis() as u64
    }
    pub fn peer_reconnect_delay_max_ms() -> u64 {
        5000
    }
    pub fn replication_log_retention_entries() -> u64 {
        r::LOG_RETENTION_ENTRIES_DEFAULT
    }
    pub fn anti_entropy_bytes_per_sec() -> u64 {
        r::AE_BYTES_PER_SEC_DEFAULT
    }
    pub fn compaction_interval_ms() -> u64 {
        r::COMPACTION_INTERVAL_DEFAULT.as_millis() as u64
    }
    pub fn compaction_queue_max() -> u64 {
        r::COMPACTION_QUEUE_MAX_DEFAULT as u64
    }
    pub fn compaction_line_adds_min() -> u64 {
        meridian_cart_store_core::node::COMPACTION_LINE_ADDS_MIN_DEFAULT as u64
    }
}

/// A config that cannot be used; the message names the file, key and fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file at `path` could not be read.
    #[error("cannot read config file {path}: {source}")]
    #[allow(missing_docs)]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML at `path` is malformed or a key has the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        #[allow(missing_docs)]
        path: PathBuf,
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid config: `{key}` {message}")]
    Invalid {
        /// The config key, as written in the file.
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl Config {
    /// Reads and validates the TOML file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let parse_err = |e: toml::de::Error| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        };
        let table: toml::Table = toml::from_str(text).map_err(parse_err)?;
        let mut config: Config = toml::from_str(text).map_err(parse_err)?;
        config.unknown = table
            .keys()
            .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        config.validate()?;
        Ok(config)
    }

    /// Keys this version does not know (likely typos), sorted.
    pub fn unknown_keys(&self) -> Vec<String> {
        self.unknown.clone()
    }

    /// The write path's settings.
    pub fn node_config(&self) -> NodeConfig {
        NodeConfig {
            node_id: ReplicaId(self.node_id),
            cart_lines_max: self.cart_lines_max,
            cart_bytes_max: self.cart_bytes_max,
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_secs),
            max_clock_offset: self.max_clock_offset(),
            clock_bound_override: self.clock_bound_override,
            compaction_line_adds_min: usize::try_from(self.compaction_line_adds_min)
                .unwrap_or(usize::MAX),
        }
    }

    /// The replication core's settings.
    pub fn replication_config(&self) -> ReplicationConfig {
        let mut r = ReplicationConfig::new(
            self.region.clone(),
            self.peers.iter().map(|p| p.region.clone()).collect(),
            self.durability,
        );
        r.batch_window = Duration::from_millis(self.replication_batch_window_ms);
        r.batch_bytes_max = self.replication_batch_bytes_max;
        r.inflight_bytes_max = self.replication_inflight_bytes_max;
        r.resend_timeout = Duration::from_millis(self.replication_resend_timeout_ms);
        r.forward_after = Duration::from_millis(self.replication_forward_after_ms);
        r.log_retention_entries = self.replication_log_retention_entries;
        r.anti_entropy_bytes_per_sec = self.anti_entropy_bytes_per_sec;
        r.compaction_interval = Duration::from_millis(self.compaction_interval_ms);
        r.compaction_queue_max = usize::try_from(self.compaction_queue_max).unwrap_or(usize::MAX);
        // The node's writer runs replication syncs on a thread of their own.
        r.offload_sync = true;
        r
    }

    /// The QUIC transport's settings, if peers are configured.
    pub fn transport_config(&self) -> Option<TransportConfig> {
        if self.peers.is_empty() {
            return None;
        }
        let listen = self.peer_listen.as_deref()?.parse().ok()?;
        let peers = self
            .peers
            .iter()
            .map(|p| PeerLink {
                region: p.region.clone(),
                address: p.address.clone(),
                latency: Duration::from_millis(p.simulated_latency_ms),
            })
            .collect();
        let mut t = TransportConfig::new(self.region.clone(), listen, self.tls.clone()?, peers);
        t.reconnect_delay_max = Duration::from_millis(self.peer_reconnect_delay_max_ms);
        Some(t)
    }

    /// The HLC max offset.
    pub fn max_clock_offset(&self) -> Duration {
        Duration::from_millis(self.max_clock_offset_ms)
    }

    /// The per-request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The HTTP connection limits and timers.
    pub fn connection_limits(&self) -> crate::server::ConnectionLimits {
        crate::server::ConnectionLimits {
            connections_max: self.http_connections_max,
            header_timeout: Duration::from_millis(self.http_header_timeout_ms),
            head_bytes_max: self.http_head_bytes_max,
            idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
        }
    }

    /// Every numeric key with its value and allowed range: `(key, value, min, max)`.
    fn ranges(&self) -> [(&'static str, u64, u64, u64); 24] {
        let cart_bytes_hi = (crate::codec::VALUE_BYTES_MAX - 1) as u64;
        [
            (
                "cart_bytes_max",
                self.cart_bytes_max as u64,
                1024,
                cart_bytes_hi,
            ),
            ("body_bytes_max", self.body_bytes_max as u64, 256, 16 << 20),
            ("cart_lines_max", self.cart_lines_max as u64, 1, 1_000_000),
            ("request_timeout_ms", self.request_timeout_ms, 1, 3_600_000),
            (
                "idempotency_ttl_secs",
                self.idempotency_ttl_secs,
                1,
                365 * 86_400,
            ),
            (
                "max_clock_offset_ms",
                self.max_clock_offset_ms,
                1,
                3_600_000,
            ),
            ("write_batch_max", self.write_batch_max as u64, 1, 65_536),
            ("write_queue_max", self.write_queue_max as u64, 1, 1_000_000),
            (
                "http_connections_max",
                self.http_connections_max as u64,
                1,
                1_000_000,
            ),
            (
                "http_header_timeout_ms",
                self.http_header_timeout_ms,
                1,
                3_600_000,
            ),
            (
                "http_head_bytes_max",
                self.http_head_bytes_max as u64,
                8192,
                1 << 20,
            ),
            (
                "http_idle_timeout_ms",
                self.http_idle_timeout_ms,
                1,
                3_600_000,
            ),
            (
                "shutdown_timeout_ms",
                self.shutdown_timeout_ms,
                0,
                3_600_000,
            ),
            (
                "replication_batch_window_ms",
                self.replication_batch_window_ms,
                0,
                1000,
            ),
            (
                "replication_batch_bytes_max",
                self.replication_batch_bytes_max as u64,
                1024,
                (meridian_cart_store_core::replication::wire::FRAME_BYTES_MAX / 2) as u64,
            ),
            (
                "replication_inflight_bytes_max",
                self.replication_inflight_bytes_max as u64,
                64 * 1024,
                1 << 30,
            ),
            (
                "replication_resend_timeout_ms",
                self.replication_resend_timeout_ms,
                10,
                600_000,
            ),
            (
                "replication_forward_after_ms",
                self.replication_forward_after_ms,
                1,
                600_000,
            ),
            (
                "peer_reconnect_delay_max_ms",
                self.peer_reconnect_delay_max_ms,
                100,
                600_000,
            ),
            (
                "replication_log_retention_entries",
                self.replication_log_retention_entries,
                1,
                1 << 40,
            ),
            (
                "anti_entropy_bytes_per_sec",
                self.anti_entropy_bytes_per_sec,
                64 * 1024,
                1 << 40,
            ),
            (
                "compaction_interval_ms",
                self.compaction_interval_ms,
                0,
                600_000,
            ),
            (
                "compaction_queue_max",
                self.compaction_queue_max,
                0,
                1 << 24,
            ),
            (
                "compaction_line_adds_min",
                self.compaction_line_adds_min,
                2,
                1 << 20,
            ),
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if !crate::validate::is_id(&self.region) {
            return invalid(
                "region",
                "must be 1-128 characters of [A-Za-z0-9._:-], e.g. \"virginia\"",
            );
        }
        if self.node_id == 0 {
            return invalid("node_id", "must be a positive integer, unique per node");
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        for (key, v, lo, hi) in self.ranges() {
            if v < lo || v > hi {
                return invalid(key, &format!("is {v}; allowed {lo}..={hi}"));
            }
        }
        if self.causal_wait_ms > 600_000 {
            return invalid("causal_wait_ms", "allowed 0..=600000");
        }
        self.validate_peers()
    }

    fn validate_peers(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.peers.is_empty() {
            return Ok(());
        }
        if !crate::certs::valid_region(&self.region) {
            return invalid(
                "region",
                "must be a valid DNS name when peers are configured (it is the TLS name)".into(),
            );
        }
        match self.peer_listen.as_deref().map(str::parse::<SocketAddr>) {
            None => {
                return invalid(
                    "peer_listen",
                    "is required when [[peers]] are configured, e.g. \"0.0.0.0:9080\"".into(),
                )
            }
            Some(Err(e)) => return invalid("peer_listen", format!("is not host:port: {e}")),
            Some(Ok(_)) => {}
        }
        if self.tls.is_none() {
            return invalid(
                "tls",
                "is required when [[peers]] are configured (ca_cert, cert, key; \
                 `cart-store certs` writes development ones)"
                    .into(),
            );
        }
        if self.peers.len() > meridian_cart_store_core::replication::wire::PROGRESS_MAX - 1 {
            return invalid("peers", "too many peers".into());
        }
        for (i, p) in self.peers.iter().enumerate() {
            if p.region == self.region {
                return invalid(
                    "peers",
                    format!("lists this node's own region {:?}", p.region),
                );
            }
            if self.peers[..i].iter().any(|q| q.region == p.region) {
                return invalid("peers", format!("lists region {:?} twice", p.region));
            }
            if !crate::certs::valid_region(&p.region) {
                return invalid(
                    "peers",
                    format!(
                        "region {:?} is not a valid DNS name (its TLS name)",
                        p.region
                    ),
                );
            }
            if p.simulated_latency_ms > 10_000 {
                return invalid("peers", "simulated_latency_ms allowed 0..=10000".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
region = "virginia"
node_id = 1
data_dir = "data/virginia"
http_listen = "127.0.0.1:8080"
"#;

    #[test]
    fn design_example_parses_with_defaults() {
        let text = r#"
region = "virginia"           # unique name, also the TLS name of this node
node_id = 1                   # unique ReplicaId, never reused
data_dir = "data/virginia"
http_listen = "127.0.0.1:8080"
peer_listen = "127.0.0.1:9080"   # QUIC, UDP
[tls]
ca_cert = "certs/ca.pem"
cert = "certs/virginia.pem"
key = "certs/virginia.key"
[[peers]]
region = "frankfurt"
address = "127.0.0.1:9081"
"#;
        let c = Config::parse(text).unwrap();
        assert_eq!(c.region, "virginia");
        assert_eq!(c.node_id, 1);
        assert_eq!(c.durability, Durability::Process);
        assert_eq!(c.cart_lines_max, 1000);
        assert_eq!(c.idempotency_ttl_secs, 86_400);
        assert_eq!(c.peers.len(), 1);
        assert_eq!(
            c.tls.as_ref().unwrap().cert,
            PathBuf::from("certs/virginia.pem")
        );
        assert!(c.unknown_keys().is_empty());
    }

    #[test]
    fn fsync_mode_and_unknown_keys() {
        let c = Config::parse(&format!(
            "{MINIMAL}durability = \"fsync\"\ncart_lines_mx = 3\n"
        ))
        .unwrap();
        assert_eq!(c.durability, Durability::Fsync);
        assert_eq!(c.unknown_keys(), vec!["cart_lines_mx".to_owned()]);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let cases = [
            ("region = \"virginia\"\n", "missing field `node_id`"),
            (
                &format!("{MINIMAL}durability = \"sometimes\"\n"),
                "unknown variant `sometimes`",
            ),
            (&MINIMAL.replace("node_id = 1", "node_id = 0"), "`node_id`"),
            (
                &MINIMAL.replace("127.0.0.1:8080", "localhost"),
                "invalid socket address",
            ),
            (
                &format!("{MINIMAL}cart_lines_max = 0\n"),
                "`cart_lines_max` is 0",
            ),
            (&MINIMAL.replace("virginia\"", "vir ginia\""), "`region`"),
        ];
        for (text, want) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn the_example_config_is_valid_and_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let c = Config::load(&path).unwrap();
        assert!(c.unknown_keys().is_empty(), "{:?}", c.unknown_keys());
        let text = std::fs::read_to_string(&path).unwrap();
        for key in KNOWN_KEYS {
            let shown = text.lines().any(|l| {
                l.starts_with(&format!("{key} ="))
                    || l == format!("[{key}]")
                    || l == format!("[[{key}]]")
            });
            assert!(shown, "example.toml does not show `{key}`");
        }
        let minimal = Config::parse(MINIMAL).unwrap();
        assert_eq!(
            (
                c.durability,
                c.body_bytes_max,
                c.cart_lines_max,
                c.request_timeout_ms,
                c.cart_bytes_max
            ),
            (
                minimal.durability,
                minimal.body_bytes_max,
                minimal.cart_lines_max,
                minimal.request_timeout_ms,
                minimal.cart_bytes_max
            )
        );
        assert_eq!(
            (
                c.http_connections_max,
                c.http_header_timeout_ms,
                c.http_head_bytes_max,
                c.http_idle_timeout_ms,
                c.shutdown_timeout_ms
            ),
            (
                minimal.http_connections_max,
                minimal.http_header_timeout_ms,
                minimal.http_head_bytes_max,
                minimal.http_idle_timeout_ms,
                minimal.shutdown_timeout_ms
            )
        );
        assert_eq!(
            (
                c.idempotency_ttl_secs,
                c.max_clock_offset_ms,
                c.clock_bound_override,
                c.write_batch_max,
                c.write_queue_max,
                c.causal_wait_ms
            ),
            (
                minimal.idempotency_ttl_secs,
                minimal.max_clock_offset_ms,
                minimal.clock_bound_override,
                minimal.write_batch_max,
                minimal.write_queue_max,
                minimal.causal_wait_ms
            )
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Config::load(Path::new("/nonexistent/cart.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cart.toml"), "{err}");
    }
}
