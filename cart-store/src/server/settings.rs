//! [`ServerSettings`]: the part of the [`Config`] the HTTP driver needs.

use crate::config::{Config, Durability};
use std::time::Duration;

/// The settings the HTTP layer needs (the rest of [`Config`]).
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Region name, reported by `/health` and `/replication`.
    pub region: String,
    /// Durability mode.
    pub durability: Durability,
    /// Largest request body.
    pub body_bytes_max: usize,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Most writes per batch.
    pub write_batch_max: usize,
    /// Most queued writes.
    pub write_queue_max: usize,
    /// How long to wait for a `Causal-Token`'s position.
    pub causal_wait: Duration,
    /// Configured peer regions (not contacted yet).
    pub peers: Vec<String>,
    /// The HTTP connection limit and the connection timers.
    pub connections: ConnectionLimits,
}

/// Limits on HTTP connections (rather than requests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most open connections; a connection beyond it is answered `503 overloaded` and closed.
    pub connections_max: usize,
    /// A request's head must arrive within this, counted from its first byte (the first
    /// request's from the accept); a slower connection is closed without an answer.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; a larger one is answered
    /// 431 by hyper and the connection closed. It bounds each connection's read buffer.
    pub head_bytes_max: usize,
    /// A kept-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// How long a graceful shutdown waits for open requests before closing their connections.
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// The config's defaults.
    fn default() -> Self {
        use crate::config::defaults;
        ConnectionLimits {
            connections_max: defaults::http_connections_max(),
            header_timeout: Duration::from_millis(defaults::http_header_timeout_ms()),
            head_bytes_max: defaults::http_head_bytes_max(),
            idle_timeout: Duration::from_millis(defaults::http_idle_timeout_ms()),
            shutdown_timeout: Duration::from_millis(defaults::shutdown_timeout_ms()),
        }
    }
}

impl Default for ServerSettings {
    /// The config's defaults, for region `"local"` with no peers.
    fn default() -> Self {
        use crate::config::defaults;
        ServerSettings {
            region: "local".into(),
            durability: Durability::default(),
            body_bytes_max: defaults::body_bytes_max(),
            request_timeout: Duration::from_millis(defaults::request_timeout_ms()),
            write_batch_max: defaults::write_batch_max(),
            write_queue_max: defaults::write_queue_max(),
            causal_wait: Duration::from_millis(defaults::causal_wait_ms()),
            peers: vec![],
            connections: ConnectionLimits::default(),
        }
    }
}

impl ServerSettings {
    /// The HTTP settings of a full config.
    pub fn from_config(c: &Config) -> Self {
        ServerSettings {
            region: c.region.clone(),
            durability: c.durability,
            body_bytes_max: c.body_bytes_max,
            request_timeout: c.request_timeout(),
            write_batch_max: c.write_batch_max,
            write_queue_max: c.write_queue_max,
            causal_wait: Duration::from_millis(c.causal_wait_ms),
            peers: c.peers.iter().map(|p| p.region.clone()).collect(),
            connections: c.connection_limits(),
        }
    }
}
