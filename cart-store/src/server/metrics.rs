//! [`Metrics`]: the node's Prometheus registry.
//!
//! Every label has bounded cardinality, whatever clients send: `route` is the matched route
//! template or `unmatched`, `method` is one of the nine standard methods or `other`, and
//! `status` is the numeric status code, of which the `http` crate allows only 100–999 (and
//! this server sends a fixed few). `peer` is a configured peer region (the transport only
//! reports configured peers), and `kind` one of `hello`, `deltas`, `ack`.

use meridian_clocks::PhysicalClock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

use crate::node::Node;
use crate::storage::Storage;
use meridian_cart_store_core::replication::Message;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HttpLabels {
    pub(super) route: String,
    pub(super) method: &'static str,
    pub(super) status: u16,
}

/// The `method` label: a standard method's name, or `other` for any extension method, so
/// that clients cannot create series by inventing methods.
pub(super) fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|m| *m == method)
        .map_or("other", |m| match *m {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            Method::OPTIONS => "OPTIONS",
            Method::CONNECT => "CONNECT",
            _ => "TRACE",
        })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PeerLabels {
    pub(super) peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PeerKindLabels {
    pub(super) peer: String,
    pub(super) kind: &'static str,
}

fn lag_histogram() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// The node's Prometheus metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub(super) http_requests: Family<HttpLabels, Counter>,
    pub(super) http_latency: HistogramFamily<HttpLabels>,
    pub(super) write_latency: Histogram,
    pub(super) batch_size: Histogram,
    pub(super) fsyncs: Counter,
    carts_stored: Gauge,
    log_len: Gauge,
    applied_seq: Gauge,
    pub(super) idempotency_expired: Counter,
    pub(super) writes_expired: Counter,
    pub(super) http_connections_open: Gauge,
    pub(super) http_connections_refused: Counter,
    peer_connected_g: Family<PeerLabels, Gauge>,
    peer_messages_received: Family<PeerKindLabels, Counter>,
    peer_messages_sent: Family<PeerKindLabels, Counter>,
    peer_bytes_received: Family<PeerLabels, Counter>,
    peer_deltas_received: Family<PeerLabels, Counter>,
    peer_deltas_sent: Family<PeerLabels, Counter>,
    peer_delta_bytes_sent: Family<PeerLabels, Counter>,
    peer_deltas_applied: Family<PeerLabels, Counter>,
    peer_send_dropped_c: Family<PeerLabels, Counter>,
    peer_refused_c: Family<PeerLabels, Counter>,
    held_back_c: Family<PeerLabels, Counter>,
    lag: HistogramFamily<PeerLabels>,
    link_bytes_sent: Family<PeerLabels, Gauge>,
    link_connects: Family<PeerLabels, Gauge>,
    link_inbound_dropped: Family<PeerLabels, Gauge>,
    link_refusals: Gauge,
    clock_offset: Family<PeerLabels, Gauge>,
    pub(super) unstable_writes: Gauge,
    compaction_queued: Gauge,
    compaction_oldest_ms: Gauge,
    compaction_writes: Gauge,
    compaction_dropped: Gauge,
    ae_active: Family<PeerLabels, Gauge>,
    ae_sessions: Family<PeerLabels, Gauge>,
    ae_ranges_compared: Family<PeerLabels, Gauge>,
    ae_ranges_repaired: Family<PeerLabels, Gauge>,
    ae_bytes_sent: Family<PeerLabels, Gauge>,
    ae_bytes_repaired: Family<PeerLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub(super) fn new() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            http_requests: Family::<HttpLabels, Counter>::default(),
            http_latency: Family::new_with_constructor(latency_histogram),
            write_latency: latency_histogram(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            fsyncs: Counter::default(),
            carts_stored: Gauge::default(),
            log_len: Gauge::default(),
            applied_seq: Gauge::default(),
            idempotency_expired: Counter::default(),
            writes_expired: Counter::default(),
            http_connections_open: Gauge::default(),
            http_connections_refused: Counter::default(),
            peer_connected_g: Family::default(),
            peer_messages_received: Family::default(),
            peer_messages_sent: Family::default(),
            peer_bytes_received: Family::default(),
            peer_deltas_received: Family::default(),
            peer_deltas_sent: Family::default(),
            peer_delta_bytes_sent: Family::default(),
            peer_deltas_applied: Family::default(),
            peer_send_dropped_c: Family::default(),
            peer_refused_c: Family::default(),
            held_back_c: Family::default(),
            lag: Family::new_with_constructor(lag_histogram),
            link_bytes_sent: Family::default(),
            link_connects: Family::default(),
            link_inbound_dropped: Family::default(),
            link_refusals: Gauge::default(),
            clock_offset: Family::default(),
            unstable_writes: Gauge::default(),
            compaction_queued: Gauge::default(),
            compaction_oldest_ms: Gauge::default(),
            compaction_writes: Gauge::default(),
            compaction_dropped: Gauge::default(),
            ae_active: Family::default(),
            ae_sessions: Family::default(),
            ae_ranges_compared: Family::default(),
            ae_ranges_repaired: Family::default(),
            ae_bytes_sent: Family::default(),
            ae_bytes_repaired: Family::default(),
        };
        m.register(&mut r);
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "cart_store_http_requests",
            "HTTP requests by route, method and status",
            self.http_requests.clone(),
        );
        r.register(
            "cart_store_http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            self.http_latency.clone(),
        );
        r.register(
            "cart_store_storage_write_duration_seconds",
            "Time to apply and commit one storage batch (fsync included in fsync mode)",
            self.write_latency.clone(),
        );
        r.register(
            "cart_store_write_batch_size",
            "Writes committed per storage batch (group commit)",
            self.batch_size.clone(),
        );
        r.register(
            "cart_store_fsyncs",
            "Synced storage batches",
            self.fsyncs.clone(),
        );
        r.register(
            "cart_store_carts_stored",
            "Carts in storage",
            self.carts_stored.clone(),
        );
        r.register(
            "cart_store_delta_log_length",
            "Entries in the outgoing delta log",
            self.log_len.clone(),
        );
        r.register(
            "cart_store_applied_seq",
            "Last local sequence number committed",
            self.applied_seq.clone(),
        );
        r.register(
            "cart_store_idempotency_expired",
            "Idempotency records deleted after their TTL",
            self.idempotency_expired.clone(),
        );
        r.register(
            "cart_store_writes_expired",
            "Writes dropped unapplied because their request's deadline had passed (answered 504)",
            self.writes_expired.clone(),
        );
        r.register(
            "cart_store_http_connections_open",
            "Open HTTP connections (at most http_connections_max)",
            self.http_connections_open.clone(),
        );
        r.register(
            "cart_store_http_connections_refused",
            "HTTP connections refused beyond http_connections_max",
            self.http_connections_refused.clone(),
        );
        self.register_peers(r);
    }

    fn register_peers(&self, r: &mut Registry) {
        r.register(
            "cart_store_peer_connected",
            "1 while a connection to the peer is up",
            self.peer_connected_g.clone(),
        );
        r.register(
            "cart_store_peer_messages_received",
            "Replication messages received, by peer and kind",
            self.peer_messages_received.clone(),
        );
        r.register(
            "cart_store_peer_messages_sent",
            "Replication messages handed to the transport, by peer and kind",
            self.peer_messages_sent.clone(),
        );
        r.register(
            "cart_store_peer_bytes_received",
            "Bytes of replication frames received, by peer",
            self.peer_bytes_received.clone(),
        );
        r.register(
            "cart_store_peer_deltas_received",
            "Deltas received (duplicates included), by peer",
            self.peer_deltas_received.clone(),
        );
        r.register(
            "cart_store_peer_deltas_sent",
            "Deltas sent, by peer",
            self.peer_deltas_sent.clone(),
        );
        r.register(
            "cart_store_peer_delta_bytes_sent",
            "Bytes of encoded deltas sent, by peer",
            self.peer_delta_bytes_sent.clone(),
        );
        r.register(
            "cart_store_peer_deltas_applied",
            "Deltas received from the peer and applied (new, not duplicates)",
            self.peer_deltas_applied.clone(),
        );
        r.register(
            "cart_store_peer_send_dropped",
            "Messages dropped because the peer's outbound queue was full (resent later)",
            self.peer_send_dropped_c.clone(),
        );
        r.register(
            "cart_store_peer_refused",
            "Messages refused as protocol violations, by peer",
            self.peer_refused_c.clone(),
        );
        r.register(
            "cart_store_unstable_writes",
            "Writes applied here that are not yet causally stable (every region has them, and \
             every write still to arrive saw them); it grows while a region is unreachable",
            self.unstable_writes.clone(),
        );
        r.register(
            "cart_store_compaction_queued",
            "Local adds waiting for causal stability before they can be compacted",
            self.compaction_queued.clone(),
        );
        r.register(
            "cart_store_compaction_oldest_ms",
            "Age of the oldest add waiting for compaction, in ms: how long causal stability \
             has stalled (a region unreachable)",
            self.compaction_oldest_ms.clone(),
        );
        r.register(
            "cart_store_compaction_writes",
            "Compaction writes committed since start (each coalesces one cart's stable adds)",
            self.compaction_writes.clone(),
        );
        r.register(
            "cart_store_compaction_dropped",
            "Adds not queued for compaction because the queue was full, since start",
            self.compaction_dropped.clone(),
        );
        r.register(
            "cart_store_anti_entropy_active",
            "1 while an anti-entropy session with the peer runs (either direction)",
            self.ae_active.clone(),
        );
        r.register(
            "cart_store_anti_entropy_sessions_completed",
            "Anti-entropy sessions that repaired the peer, since start",
            self.ae_sessions.clone(),
        );
        r.register(
            "cart_store_anti_entropy_ranges_compared",
            "Digest-tree ranges compared with the peer (either direction), since start",
            self.ae_ranges_compared.clone(),
        );
        r.register(
            "cart_store_anti_entropy_ranges_repaired",
            "Leaf ranges found different from the peer's (either direction), since start",
            self.ae_ranges_repaired.clone(),
        );
        r.register(
            "cart_store_anti_entropy_bytes_sent",
            "Bytes of cart states shipped to the peer to repair it, since start",
            self.ae_bytes_sent.clone(),
        );
        r.register(
            "cart_store_anti_entropy_bytes_repaired",
            "Bytes of cart states received from the peer to repair this node, since start",
            self.ae_bytes_repaired.clone(),
        );
        r.register(
            "cart_store_deltas_held_back",
            "Deltas held back because they were stamped more than max_clock_offset ahead",
            self.held_back_c.clone(),
        );
        r.register(
            "cart_store_peer_bytes_sent",
            "Bytes of replication frames written to the peer's QUIC streams",
            self.link_bytes_sent.clone(),
        );
        r.register(
            "cart_store_peer_connects",
            "Times the connection to the peer came up",
            self.link_connects.clone(),
        );
        r.register(
            "cart_store_peer_inbound_dropped",
            "Messages from the peer dropped because the writer's inbound queue was full (resent)",
            self.link_inbound_dropped.clone(),
        );
        r.register(
            "cart_store_peer_connections_refused",
            "Incoming peer connections refused before they matched a peer (TLS, certificate, limits)",
            self.link_refusals.clone(),
        );
        r.register(
            "cart_store_peer_clock_offset_ms",
            "The peer's clock minus this node's, from the HLC of its last message (positive: ahead)",
            self.clock_offset.clone(),
        );
        r.register(
            "cart_store_replication_lag_seconds",
            "From a local write's commit to its acknowledgement by the peer",
            self.lag.clone(),
        );
    }

    fn peer(p: &str) -> PeerLabels {
        PeerLabels { peer: p.to_owned() }
    }

    pub(super) fn peer_connected(&self, peer: &str, up: bool) {
        self.peer_connected_g
            .get_or_create(&Self::peer(peer))
            .set(i64::from(up));
    }

    pub(super) fn peer_received(&self, peer: &str, m: &Message, bytes: usize) {
        let kind = m.kind();
        self.peer_messages_received
            .get_or_create(&PeerKindLabels {
                peer: peer.to_owned(),
                kind,
            })
            .inc();
        self.peer_bytes_received
            .get_or_create(&Self::peer(peer))
            .inc_by(bytes as u64);
        if let Message::Deltas { entries, .. } = m {
            self.peer_deltas_received
                .get_or_create(&Self::peer(peer))
                .inc_by(entries.len() as u64);
        }
    }

    pub(super) fn peer_sent(&self, peer: &str, m: &Message) {
        self.peer_messages_sent
            .get_or_create(&PeerKindLabels {
                peer: peer.to_owned(),
                kind: m.kind(),
            })
            .inc();
        if let Message::Deltas { entries, .. } = m {
            let l = Self::peer(peer);
            self.peer_deltas_sent
                .get_or_create(&l)
                .inc_by(entries.len() as u64);
            let bytes: usize = entries.iter().map(|e| e.record.len()).sum();
            self.peer_delta_bytes_sent
                .get_or_create(&l)
                .inc_by(bytes as u64);
        }
    }

    pub(super) fn peer_applied(&self, peer: &str, n: u64) {
        self.peer_deltas_applied
            .get_or_create(&Self::peer(peer))
            .inc_by(n);
    }

    pub(super) fn peer_send_dropped(&self, peer: &str) {
        self.peer_send_dropped_c
            .get_or_create(&Self::peer(peer))
            .inc();
    }

    pub(super) fn peer_refused(&self, peer: &str) {
        self.peer_refused_c.get_or_create(&Self::peer(peer)).inc();
    }

    pub(super) fn peer_clock_offset(&self, peer: &str, ms: Option<i64>) {
        if let Some(ms) = ms {
            self.clock_offset.get_or_create(&Self::peer(peer)).set(ms);
        }
    }

    /// Copies each peer's anti-entropy counters into their series.
    /// Compaction's queue and counters.
    pub(super) fn set_compaction(
        &self,
        c: &meridian_cart_store_core::replication::CompactionStatus,
    ) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.compaction_queued.set(g(c.queued));
        self.compaction_oldest_ms.set(g(c.oldest_ms));
        self.compaction_writes.set(g(c.writes));
        self.compaction_dropped.set(g(c.dropped));
    }

    pub(super) fn set_anti_entropy(
        &self,
        peers: &[meridian_cart_store_core::replication::peer::PeerState],
    ) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for p in peers {
            let l = Self::peer(p.region());
            let ae = p.anti_entropy();
            self.ae_active
                .get_or_create(&l)
                .set(i64::from(p.anti_entropy_active()));
            self.ae_sessions
                .get_or_create(&l)
                .set(g(ae.sessions_completed));
            self.ae_ranges_compared
                .get_or_create(&l)
                .set(g(ae.ranges_compared));
            self.ae_ranges_repaired
                .get_or_create(&l)
                .set(g(ae.ranges_repaired));
            self.ae_bytes_sent.get_or_create(&l).set(g(ae.bytes_sent));
            self.ae_bytes_repaired
                .get_or_create(&l)
                .set(g(ae.bytes_received));
        }
    }

    pub(super) fn held_back(&self, peer: &str) {
        self.held_back_c.get_or_create(&Self::peer(peer)).inc();
    }

    pub(super) fn replication_lag(&self, peer: &str, ms: u64) {
        self.lag
            .get_or_create(&Self::peer(peer))
            .observe(ms as f64 / 1000.0);
    }

    /// Copies the transport's per-link counters into their series (at each scrape).
    pub(super) fn set_link_stats(
        &self,
        links: &[crate::transport::LinkStats],
        refusals: &crate::transport::RefusalStats,
    ) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for l in links {
            let p = Self::peer(&l.region);
            self.link_bytes_sent.get_or_create(&p).set(g(l.bytes_sent));
            self.link_connects.get_or_create(&p).set(g(l.connects));
            self.link_inbound_dropped
                .get_or_create(&p)
                .set(g(l.inbound_dropped));
        }
        self.link_refusals.set(g(refusals.count));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub(super) fn set_node_gauges<S: Storage, C: PhysicalClock>(&self, node: &Node<S, C>) {
        self.carts_stored
            .set(i64::try_from(node.carts_stored()).unwrap_or(i64::MAX));
        self.log_len
            .set(i64::try_from(node.log_len()).unwrap_or(i64::MAX));
        self.applied_seq
            .set(i64::try_from(node.last_seq()).unwrap_or(i64::MAX));
    }
}
