//! The network half of replication: QUIC links between regions, with mutual TLS, that
//! move [`Message`]s and report links coming up and going down.
//!
//! # What it knows
//!
//! Regions, addresses, certificates and frames — nothing of carts, logs or progress. It
//! hands every [`Message`] it receives, and every link [`Up`](Inbound::Up) /
//! [`Down`](Inbound::Down), to the writer thread over a `crossbeam_channel` the caller
//! creates; the writer sends with [`Outbound::try_send`], which never blocks, from any
//! thread. The replication core ([`Replica`](meridian_cart_store_core::replication)) does
//! the rest: it resends what is lost, so this layer may drop messages (and does, at the
//! bounds below) but never reorders messages of one stream or delivers a damaged one.
//!
//! # Links
//!
//! Each pair of regions keeps **one long-lived QUIC connection**. The **region whose name is
//! lexicographically smaller dials**, the other accepts; a connection from a region that
//! should be accepting ours is refused. A second connection from a peer that already has
//! one replaces the old one (the old one's [`Down`](Inbound::Down) is delivered before the
//! new one's [`Up`](Inbound::Up)). The dialer reconnects after a loss with exponential
//! backoff: 100 ms doubling to [`TransportConfig::reconnect_delay_max`], full jitter, reset
//! once a connection has stayed up for [`BACKOFF_RESET_AFTER`]. Keep-alives
//! ([`TransportConfig::keep_alive`]) hold the connection open under the idle timeout
//! ([`TransportConfig::idle_timeout`]), which detects a silent peer.
//!
//! Both sides authenticate with certificates from one CA (`cart-store certs`), TLS 1.3 over
//! ring, ALPN [`ALPN`]. The dialer checks the server's certificate against the CA for the
//! peer's region name; the acceptor requires a client certificate from the CA and learns
//! the peer's region from it (its DNS name must be exactly one configured peer region).
//! Every refusal is logged with `tracing::warn!` and its reason, and counted
//! ([`Transport::refusals`], [`LinkStats::last_error`]).
//!
//! # Streams
//!
//! On each connection each side opens two unidirectional streams, each starting with a
//! one-byte tag: the **data** stream (tag 0) carries [`Message::Hello`] and
//! [`Message::Deltas`]; the **control** stream (tag 1, sent at a higher priority) carries
//! [`Message::Ack`]. So an ack is never stuck behind a large delta batch that flow control
//! holds up. [`Up`](Inbound::Up) is reported once both of our streams are open and both of
//! the peer's have arrived. Each stream is a sequence of frames from
//! [`encode_frame`](meridian_cart_store_core::replication::wire::encode_frame); a frame that
//! is refused (over [`FRAME_BYTES_MAX`], another protocol version, garbage, or a message
//! on the wrong stream) closes the connection with the reason logged and sent to the peer,
//! the node keeps serving, and the dialer reconnects after its backoff.
//!
//! # Bounds, and what happens at each
//!
//! | what | bound | at the bound |
//! |---|---|---|
//! | messages queued for one peer | [`TransportConfig::outbound_messages_max`] per stream (data, control) | [`Outbound::try_send`] returns [`SendError::Full`]; the protocol resends later |
//! | queued messages when a connection comes up | — | discarded before [`Up`](Inbound::Up): they were meant for the previous connection, the [`Hello`](Message::Hello) exchange resumes |
//! | the inbound channel (the caller's capacity) | full | a received message is dropped and counted ([`LinkStats::inbound_dropped`]); the peer resends it. [`Up`](Inbound::Up)/[`Down`](Inbound::Down) are never dropped: the link's task retries until there is room (it waits, the writer does not) |
//! | one frame | [`FRAME_BYTES_MAX`] | refused from the length prefix, before allocating; the connection is closed. An outgoing message over it is not sent (logged) |
//! | incoming handshakes in progress | [`TransportConfig::handshakes_max`] | more are refused at once |
//! | one handshake (and stream setup) | [`TransportConfig::handshake_timeout`] | abandoned |
//! | streams per connection | 2 unidirectional, no bidirectional | QUIC flow control refuses more |
//! | [`Transport::shutdown`] | [`SHUTDOWN_TIMEOUT`] | remaining tasks are aborted |
//!
//! # Simulated WAN latency
//!
//! A [`PeerLink::latency`] above zero delays every outgoing message to that peer: each
//! message is stamped when it is queued and written no earlier than the stamp plus the
//! latency. The per-peer queue is the bounded holding area, and since the stamps are in
//! queue order, order is kept and throughput is not cut (messages in flight overlap, like on
//! a long link). The demo uses it for WAN delays (no `tc netem` here); set it on both ends
//! for a symmetric round trip.
//!
//! # Runtime
//!
//! [`Transport::start`] must run inside a tokio runtime with the time and net drivers
//! (`#[tokio::main]` or a `Runtime` with `enable_all`); its tasks run there.

mod link;
mod tls;

use meridian_cart_store_core::replication::wire::FRAME_BYTES_MAX;
use meridian_cart_store_core::replication::Message;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use tls::ALPN;

/// Default [`TransportConfig::reconnect_delay_max`]: 5 s.
pub const RECONNECT_DELAY_MAX_DEFAULT: Duration = Duration::from_secs(5);
/// The first reconnect delay (before jitter), doubled after each failure.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
/// A connection up at least this long resets the reconnect backoff.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Default [`TransportConfig::keep_alive`]: 2 s.
pub const KEEP_ALIVE_DEFAULT: Duration = Duration::from_secs(2);
/// Default [`TransportConfig::idle_timeout`]: 10 s.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default [`TransportConfig::outbound_messages_max`]: 1024.
pub const OUTBOUND_MESSAGES_MAX_DEFAULT: usize = 1024;
/// Default [`TransportConfig::handshake_timeout`]: 10 s.
pub const HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default [`TransportConfig::handshakes_max`]: 64.
pub const HANDSHAKES_MAX_DEFAULT: usize = 64;
/// How long [`Transport::shutdown`] waits for connections to close and tasks to end.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// One peer region to keep a link with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLink {
    /// The peer's region: its certificate's DNS name.
    pub region: String,
    /// Its QUIC address, `host:port`, resolved with `tokio::net::lookup_host` before each
    /// dial.
    pub address: String,
    /// Simulated one-way WAN latency added to every message sent to it; zero for none.
    pub latency: Duration,
}

/// What [`Transport::start`] needs. [`TransportConfig::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node's region: its certificate's DNS name.
    pub region: String,
    /// The UDP address to bind.
    pub listen: SocketAddr,
    /// The CA, this node's certificate chain and key (PEM files).
    pub tls: crate::config::TlsConfig,
    /// The peer regions.
    pub peers: Vec<PeerLink>,
    /// The reconnect backoff's cap. Default 5 s.
    pub reconnect_delay_max: Duration,
    /// QUIC keep-alive interval; must be below `idle_timeout`. Default 2 s.
    pub keep_alive: Duration,
    /// A connection with nothing received for this long is lost. Default 10 s.
    pub idle_timeout: Duration,
    /// Capacity of each per-peer outbound queue (one for data, one for control). Default
    /// 1024.
    pub outbound_messages_max: usize,
    /// Longest a handshake plus stream setup may take. Default 10 s.
    pub handshake_timeout: Duration,
    /// Most incoming handshakes in progress at once. Default 64.
    pub handshakes_max: usize,
}

impl TransportConfig {
    /// A config with every default.
    pub fn new(
        region: impl Into<String>,
        listen: SocketAddr,
        tls: crate::config::TlsConfig,
        peers: Vec<PeerLink>,
    ) -> Self {
        TransportConfig {
            region: region.into(),
            listen,
            tls,
            peers,
            reconnect_delay_max: RECONNECT_DELAY_MAX_DEFAULT,
            keep_alive: KEEP_ALIVE_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            outbound_messages_max: OUTBOUND_MESSAGES_MAX_DEFAULT,
            handshake_timeout: HANDSHAKE_TIMEOUT_DEFAULT,
            handshakes_max: HANDSHAKES_MAX_DEFAULT,
        }
    }

    fn validate(&self) -> Result<(), TransportError> {
        let bad = |m: String| Err(TransportError::Config(m));
        if tls::server_name(&self.region).is_none() {
            return bad(format!("region {:?} is not a DNS name", self.region));
        }
        for (i, p) in self.peers.iter().enumerate() {
            if tls::server_name(&p.region).is_none() {
                return bad(format!("peer region {:?} is not a DNS name", p.region));
            }
            if p.region == self.region {
                return bad(format!("peer {:?} is this node's own region", p.region));
            }
            if self.peers[..i].iter().any(|q| q.region == p.region) {
                return bad(format!("peer {:?} is listed twice", p.region));
            }
        }
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return bad(format!(
                "keep_alive ({:?}) must be above zero and below idle_timeout ({:?})",
                self.keep_alive, self.idle_timeout
            ));
        }
        if quinn::IdleTimeout::try_from(self.idle_timeout).is_err() {
            return bad(format!("idle_timeout {:?} is too large", self.idle_timeout));
        }
        if self.outbound_messages_max == 0 || self.handshakes_max == 0 {
            return bad("outbound_messages_max and handshakes_max must be at least 1".into());
        }
        if self.reconnect_delay_max.is_zero() || self.handshake_timeout.is_zero() {
            return bad("reconnect_delay_max and handshake_timeout must be above zero".into());
        }
        Ok(())
    }
}

/// What the transport tells the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A connection to `peer` is up, both streams open (call `handle_connect`).
    Up {
        /// The peer's region.
        peer: String,
    },
    /// The connection to `peer` is gone (call `handle_disconnect`). Always follows its
    /// [`Inbound::Up`], and precedes the next one.
    Down {
        /// The peer's region.
        peer: String,
        /// Why, for the log.
        reason: String,
    },
    /// A message from `peer`, received between its `Up` and `Down`.
    Message {
        /// The peer's region, as its certificate says.
        peer: String,
        /// The message.
        message: Message,
        /// Its frame's size on the wire, prefix included.
        bytes: usize,
    },
}

/// Why [`Outbound::try_send`] did not queue a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer's queue is full (it is slow or unreachable); the message was dropped.
    #[error("the peer's outbound queue is full")]
    Full,
    /// No such peer is configured.
    #[error("no such peer")]
    NoSuchPeer,
    /// The transport is shut down.
    #[error("the transport is shut down")]
    Closed,
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The [`TransportConfig`] is inconsistent.
    #[error("invalid transport config: {0}")]
    Config(String),
    /// A TLS file could not be read or used.
    #[error("TLS file {path}: {message}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind the QUIC endpoint to UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One peer link's counters, from [`Transport::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// The peer's region.
    pub region: String,
    /// Whether the link is up (between `Up` and `Down`).
    pub connected: bool,
    /// How many times it came up.
    pub connects: u64,
    /// Messages written to the peer.
    pub messages_sent: u64,
    /// Their frames' bytes.
    pub bytes_sent: u64,
    /// Messages received from the peer (including dropped ones).
    pub messages_received: u64,
    /// Their frames' bytes.
    pub bytes_received: u64,
    /// Received messages dropped because the inbound channel was full.
    pub inbound_dropped: u64,
    /// The last connection failure, refusal or loss, with its reason.
    pub last_error: Option<String>,
}

/// Reads a transport's per-link statistics (see [`Transport::stats_handle`]).
#[derive(Clone)]
pub struct StatsHandle {
    shared: Arc<link::Shared>,
}

impl std::fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsHandle")
    }
}

impl StatsHandle {
    /// Per peer, sorted by region.
    pub fn stats(&self) -> Vec<LinkStats> {
        let mut v: Vec<LinkStats> = self
            .shared
            .peers
            .values()
            .map(|p| p.stats.lock().expect("stats lock").clone())
            .collect();
        v.sort_by(|a, b| a.region.cmp(&b.region));
        v
    }

    /// Incoming connections refused before they were matched to a peer link.
    pub fn refusals(&self) -> RefusalStats {
        self.shared.refusals.lock().expect("refusals lock").clone()
    }
}

/// Incoming connections refused before they could be matched to a peer link (handshake
/// failures, unknown certificates, the dial rule, the handshake limit), from
/// [`Transport::refusals`]. Refusals of a known peer also go to its
/// [`LinkStats::last_error`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefusalStats {
    /// How many.
    pub count: u64,
    /// The last one's reason.
    pub last: Option<String>,
}

/// A message waiting in a peer's queue, stamped when queued (for simulated latency).
struct Queued {
    at: tokio::time::Instant,
    message: Message,
}

/// One peer's outbound queues: data, control.
type PeerQueues = (mpsc::Sender<Queued>, mpsc::Sender<Queued>);

/// Sends messages to peers: a bounded queue per peer and stream. Cheap to clone; usable
/// from any thread, with or without a runtime.
#[derive(Clone)]
pub struct Outbound {
    queues: Arc<HashMap<String, PeerQueues>>,
    closed: Arc<AtomicBool>,
}

impl Outbound {
    /// Queues `message` for `peer` without blocking: [`Message::Ack`] on the control
    /// stream, the others on the data stream. A message queued while the link is down is
    /// discarded when the next connection comes up (before its `Up`).
    pub fn try_send(&self, peer: &str, message: Message) -> Result<(), SendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let (data, control) = self.queues.get(peer).ok_or(SendError::NoSuchPeer)?;
        let queue = match message {
            Message::Ack { .. } => control,
            // Anti-entropy's messages of one session must stay in order: all on data.
            _ => data,
        };
        let queued = Queued {
            at: tokio::time::Instant::now(),
            message,
        };
        queue.try_send(queued).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }
}

/// Fault injection for the demo and tests: cut and heal links.
#[derive(Clone)]
pub struct Faults {
    peers: Arc<HashMap<String, Arc<link::Peer>>>,
}

impl Faults {
    /// Closes the connection to `peer` (both sides see `Down`) and refuses to reconnect —
    /// neither dialing it nor accepting it — until [`heal`](Self::heal). Unknown peers are
    /// ignored.
    pub fn cut(&self, peer: &str) {
        if let Some(p) = self.peers.get(peer) {
            p.cut.send_replace(true);
            p.close_current(link::CODE_REFUSED, "link cut (fault injection)");
        }
    }

    /// Lets the link to `peer` reconnect (the dialer dials at once).
    pub fn heal(&self, peer: &str) {
        if let Some(p) = self.peers.get(peer) {
            p.cut.send_replace(false);
        }
    }

    /// Whether the link to `peer` is cut.
    pub fn is_cut(&self, peer: &str) -> bool {
        self.peers.get(peer).is_some_and(|p| *p.cut.borrow())
    }
}

/// The QUIC transport of one node: its endpoint, and one task per link.
///
/// ```no_run
/// # async fn demo(config: meridian_cart_store::transport::TransportConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use meridian_cart_store::transport::{Inbound, Transport};
///
/// let (tx, rx) = crossbeam_channel::bounded(4096);
/// let (transport, outbound, _faults) = Transport::start(config, tx).await?;
/// // The writer thread: `rx.recv()` for Up / Down / Message, `outbound.try_send(peer, msg)`.
/// std::thread::spawn(move || {
///     while let Ok(event) = rx.recv() {
///         if let Inbound::Message { peer, message, .. } = event {
///             let _ = outbound.try_send(&peer, message); // echo
///         }
///     }
/// });
/// transport.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Transport {
    shared: Arc<link::Shared>,
    local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    closed: Arc<AtomicBool>,
}

impl Transport {
    /// Loads the certificates, binds the UDP socket, and starts accepting and dialing.
    /// Links come up in the background; each reports [`Inbound::Up`] on `inbound`.
    pub async fn start(
        config: TransportConfig,
        inbound: crossbeam_channel::Sender<Inbound>,
    ) -> Result<(Transport, Outbound, Faults), TransportError> {
        config.validate()?;
        let tls = tls::load(&config.tls, &config.region)?;

        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(config.idle_timeout).expect("validated"),
            ))
            .keep_alive_interval(Some(config.keep_alive))
            .max_concurrent_uni_streams(2u32.into())
            .max_concurrent_bidi_streams(0u32.into());
        let transport = Arc::new(transport);

        let mut server = quinn::ServerConfig::with_crypto(Arc::new(tls.server));
        server
            .transport_config(transport.clone())
            .migration(false)
            .max_incoming(config.handshakes_max);
        let mut client = quinn::ClientConfig::new(Arc::new(tls.client));
        client.transport_config(transport);

        let mut endpoint = quinn::Endpoint::server(server, config.listen).map_err(|source| {
            TransportError::Bind {
                addr: config.listen,
                source,
            }
        })?;
        endpoint.set_default_client_config(client);
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;

        let mut peers = HashMap::new();
        let mut queues = HashMap::new();
        for p in &config.peers {
            let (data_tx, data_rx) = mpsc::channel(config.outbound_messages_max);
            let (control_tx, control_rx) = mpsc::channel(config.outbound_messages_max);
            queues.insert(p.region.clone(), (data_tx, control_tx));
            let dials = config.region < p.region;
            peers.insert(
                p.region.clone(),
                Arc::new(link::Peer::new(p.clone(), dials, data_rx, control_rx)),
            );
        }
        let peers = Arc::new(peers);
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(link::Shared {
            region: config.region.clone(),
            endpoint,
            inbound,
            peers: peers.clone(),
            shutdown,
            refusals: Mutex::new(RefusalStats::default()),
            reconnect_delay_max: config.reconnect_delay_max,
            handshake_timeout: config.handshake_timeout,
            handshake_permits: Arc::new(tokio::sync::Semaphore::new(config.handshakes_max)),
            next_connection_id: Default::default(),
        });

        let mut tasks = vec![tokio::spawn(link::accept_loop(shared.clone()))];
        for p in peers.values().filter(|p| p.dials) {
            tasks.push(tokio::spawn(link::dial_loop(shared.clone(), p.clone())));
        }
        tracing::info!(region = %config.region, %local_addr, peers = config.peers.len(), "replication transport listening");

        let closed = Arc::new(AtomicBool::new(false));
        let outbound = Outbound {
            queues: Arc::new(queues),
            closed: closed.clone(),
        };
        let transport = Transport {
            shared,
            local_addr,
            tasks,
            closed,
        };
        Ok((transport, outbound, Faults { peers }))
    }

    /// The bound UDP address (with the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Per-peer counters, sorted by region.
    pub fn stats(&self) -> Vec<LinkStats> {
        self.stats_handle().stats()
    }

    /// A handle that reads [`stats`](Self::stats) and [`refusals`](Self::refusals) later,
    /// from anywhere (the metrics endpoint).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            shared: self.shared.clone(),
        }
    }

    /// Incoming connections refused before they were matched to a peer link.
    pub fn refusals(&self) -> RefusalStats {
        self.stats_handle().refusals()
    }

    /// Closes every connection (peers see "shutdown"), stops dialing and accepting, and
    /// waits up to [`SHUTDOWN_TIMEOUT`] for the tasks to end and the closes to be sent;
    /// what remains is aborted. [`Outbound::try_send`] returns [`SendError::Closed`] from
    /// the start of the shutdown. `Down` for the links that were up is delivered if the
    /// inbound channel has room.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_TIMEOUT;
        for task in &mut self.tasks {
            if tokio::time::timeout_at(deadline, &mut *task).await.is_err() {
                task.abort();
            }
        }
        let _ = tokio::time::timeout_at(deadline, self.shared.endpoint.wait_idle()).await;
        tracing::info!(region = %self.shared.region, "replication transport shut down");
    }

    fn begin_shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.shared.shutdown.send_replace(true);
        self.shared
            .endpoint
            .close(link::CODE_SHUTDOWN.into(), b"shutdown");
    }
}

impl Drop for Transport {
    /// Without [`shutdown`](Transport::shutdown): closes everything at once and aborts the
    /// tasks.
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            self.begin_shutdown();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);
