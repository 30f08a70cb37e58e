//! Per-peer link state, the accept and dial loops, and one connection's life: stream
//! setup, `Up`, the reader and writer loops, `Down`.

use super::{tls, Inbound, LinkStats, PeerLink, Queued, RefusalStats, RECONNECT_DELAY_MIN};
use meridian_cart_store_core::replication::wire::{
    decode_body, encode_frame, frame_len, FRAME_BYTES_MAX,
};
use meridian_cart_store_core::replication::Message;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};

/// Application close codes.
pub(super) const CODE_SHUTDOWN: u32 = 0;
/// The peer broke the protocol (bad frame, wrong stream).
const CODE_PROTOCOL: u32 = 1;
/// A newer connection from the same peer replaced this one.
const CODE_REPLACED: u32 = 2;
/// Refused: unknown certificate, dial rule, or the link is cut.
pub(super) const CODE_REFUSED: u32 = 3;

const TAG_DATA: u8 = 0;
const TAG_CONTROL: u8 = 1;

/// State shared by every task of one transport.
pub(super) struct Shared {
    pub(super) region: String,
    pub(super) endpoint: quinn::Endpoint,
    pub(super) inbound: crossbeam_channel::Sender<Inbound>,
    pub(super) peers: Arc<HashMap<String, Arc<Peer>>>,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) refusals: Mutex<RefusalStats>,
    pub(super) reconnect_delay_max: Duration,
    pub(super) handshake_timeout: Duration,
    pub(super) handshake_permits: Arc<Semaphore>,
    pub(super) next_connection_id: AtomicU64,
}

impl Shared {
    fn is_shutdown(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn shutdown_signal(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn refuse(&self, reason: String) {
        tracing::warn!(region = %self.region, "refused a peer connection: {reason}");
        let mut r = self.refusals.lock().expect("refusals lock");
        r.count += 1;
        r.last = Some(reason);
    }

    /// Delivers `Up`/`Down`, waiting (this task only, never the writer) while the channel
    /// is full; gives up only at shutdown or when the receiver is gone.
    async fn emit_lifecycle(&self, mut event: Inbound) {
        let mut wait = Duration::from_millis(1);
        loop {
            match self.inbound.try_send(event) {
                Ok(()) | Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
                Err(crossbeam_channel::TrySendError::Full(e)) => {
                    if self.is_shutdown() {
                        tracing::debug!("inbound channel full at shutdown: dropped {e:?}");
                        return;
                    }
                    event = e;
                    sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(20));
                }
            }
        }
    }
}

/// The receiving ends of a peer's outbound queues; the live connection holds them.
pub(super) struct Queues {
    data: mpsc::Receiver<Queued>,
    control: mpsc::Receiver<Queued>,
}

/// One configured peer.
pub(super) struct Peer {
    pub(super) link: PeerLink,
    /// Whether we dial it (our region name is smaller).
    pub(super) dials: bool,
    /// Held by the connection that is (or is becoming) live: serializes one peer's
    /// connections, so a replaced connection's `Down` precedes the new one's `Up`.
    slot: Arc<tokio::sync::Mutex<Queues>>,
    /// The newest connection, to close on cut or replacement.
    current: Mutex<Option<(u64, quinn::Connection)>>,
    pub(super) cut: watch::Sender<bool>,
    pub(super) stats: Mutex<LinkStats>,
}

impl Peer {
    pub(super) fn new(
        link: PeerLink,
        dials: bool,
        data: mpsc::Receiver<Queued>,
        control: mpsc::Receiver<Queued>,
    ) -> Self {
        let stats = LinkStats {
            region: link.region.clone(),
            ..LinkStats::default()
        };
        Peer {
            link,
            dials,
            slot: Arc::new(tokio::sync::Mutex::new(Queues { data, control })),
            current: Mutex::new(None),
            cut: watch::channel(false).0,
            stats: Mutex::new(stats),
        }
    }

    pub(super) fn close_current(&self, code: u32, reason: &str) {
        if let Some((_, conn)) = self.current.lock().expect("current lock").take() {
            conn.close(code.into(), reason.as_bytes());
        }
    }

    fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, LinkStats> {
        self.stats.lock().expect("stats lock")
    }

    fn note_error(&self, reason: &str) {
        self.stats().last_error = Some(reason.to_owned());
    }
}

/// Accepts connections until shutdown; each handshake runs in its own task, at most
/// `handshakes_max` at once.
pub(super) async fn accept_loop(shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            i = shared.endpoint.accept() => i,
            _ = shared.shutdown_signal() => None,
        };
        let Some(incoming) = incoming else { break };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = shared.handshake_permits.clone().try_acquire_owned() else {
            shared.refuse(format!(
                "{}: too many handshakes in progress",
                incoming.remote_address()
            ));
            incoming.refuse();
            continue;
        };
        connections.spawn(accept_one(shared.clone(), incoming, permit));
    }
    // Shutdown: the endpoint is closed, so every connection task ends promptly.
    while connections.join_next().await.is_some() {}
}

async fn accept_one(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let remote = incoming.remote_address();
    let conn = match incoming.accept() {
        Ok(connecting) => match timeout(shared.handshake_timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return shared.refuse(format!("{remote}: handshake failed: {e}")),
            Err(_) => return shared.refuse(format!("{remote}: handshake timed out")),
        },
        Err(e) => return shared.refuse(format!("{remote}: {e}")),
    };
    drop(permit);
    let region = match tls::identify(&conn, shared.peers.keys().map(String::as_str)) {
        Ok(r) => r.to_owned(),
        Err(reason) => {
            conn.close(CODE_REFUSED.into(), reason.as_bytes());
            return shared.refuse(format!("{remote}: {reason}"));
        }
    };
    let peer = shared.peers[&region].clone();
    if peer.dials {
        let reason = format!(
            "{region} dialed us, but {} dials {region} (the smaller region name dials)",
            shared.region
        );
        conn.close(CODE_REFUSED.into(), reason.as_bytes());
        peer.note_error(&reason);
        return shared.refuse(format!("{remote}: {reason}"));
    }
    run_connection(&shared, &peer, conn).await;
}

/// Dials `peer` until shutdown, with backoff between attempts; waits while it is cut.
pub(super) async fn dial_loop(shared: Arc<Shared>, peer: Arc<Peer>) {
    let mut failures: u32 = 0;
    let mut cut = peer.cut.subscribe();
    loop {
        if peer.is_cut() {
            tokio::select! {
                _ = cut.wait_for(|c| !*c) => {}
                _ = shared.shutdown_signal() => {}
            }
            failures = 0;
        }
        if shared.is_shutdown() {
            return;
        }
        match dial(&shared, &peer).await {
            Ok(conn) => {
                if run_connection(&shared, &peer, conn).await >= super::BACKOFF_RESET_AFTER {
                    failures = 0;
                }
            }
            Err(reason) => {
                tracing::warn!(region = %shared.region, peer = %peer.link.region, "dialing failed: {reason}");
                peer.note_error(&reason);
            }
        }
        if shared.is_shutdown() {
            return;
        }
        if peer.is_cut() {
            continue;
        }
        let delay = backoff(failures, shared.reconnect_delay_max);
        failures = failures.saturating_add(1);
        tokio::select! {
            _ = sleep(delay) => {}
            _ = shared.shutdown_signal() => return,
        }
    }
}

/// Full jitter: uniform in `[0, min(cap, 100 ms · 2^failures)]`.
fn backoff(failures: u32, cap: Duration) -> Duration {
    let ceiling = RECONNECT_DELAY_MIN
        .saturating_mul(1u32 << failures.min(20))
        .min(cap);
    Duration::from_nanos(fastrand::u64(0..=ceiling.as_nanos() as u64))
}

async fn dial(shared: &Shared, peer: &Peer) -> Result<quinn::Connection, String> {
    let region = &peer.link.region;
    let address = &peer.link.address;
    let attempt = async {
        let addr = tokio::net::lookup_host(address.as_str())
            .await
            .map_err(|e| format!("cannot resolve {address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address} resolves to no address"))?;
        let connecting = shared
            .endpoint
            .connect(addr, region)
            .map_err(|e| format!("cannot connect to {region} at {addr}: {e}"))?;
        connecting
            .await
            .map_err(|e| format!("handshake with {region} at {addr} failed: {e}"))
    };
    match timeout(shared.handshake_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("handshake with {region} at {address} timed out")),
    }
}

/// Why a connection ended.
enum End {
    /// We close it: the reason is sent to the peer.
    Close(u32, String),
    /// It is already closed (by the peer, a timeout, a cut or shutdown).
    Lost(quinn::ConnectionError),
}

impl From<quinn::ConnectionError> for End {
    fn from(e: quinn::ConnectionError) -> Self {
        End::Lost(e)
    }
}

impl From<quinn::ReadExactError> for End {
    fn from(e: quinn::ReadExactError) -> Self {
        match e {
            quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(e)) => End::Lost(e),
            other => End::Close(CODE_PROTOCOL, format!("reading a stream: {other}")),
        }
    }
}

impl From<quinn::WriteError> for End {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::ConnectionLost(e) => End::Lost(e),
            other => End::Close(CODE_PROTOCOL, format!("writing a stream: {other}")),
        }
    }
}

/// One connection, from registration to `Down`. Returns how long it was up (zero if it
/// never came up).
async fn run_connection(shared: &Shared, peer: &Peer, conn: quinn::Connection) -> Duration {
    let region = peer.link.region.as_str();
    let id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
    if let Some((_, old)) = peer
        .current
        .lock()
        .expect("current lock")
        .replace((id, conn.clone()))
    {
        old.close(CODE_REPLACED.into(), b"replaced by a newer connection");
    }
    // Checked after registering, so a concurrent `cut` either sees this connection or we
    // see the flag.
    if peer.is_cut() {
        let reason = "link cut (fault injection)";
        conn.close(CODE_REFUSED.into(), reason.as_bytes());
        tracing::info!(region = %shared.region, peer = %region, "connection refused: {reason}");
        peer.note_error(reason);
        return Duration::ZERO;
    }
    let queues = tokio::select! {
        q = peer.slot.clone().lock_owned() => Some(q),
        _ = conn.closed() => None,
        _ = shared.shutdown_signal() => None,
    };
    let Some(mut queues) = queues else {
        forget(peer, id);
        return Duration::ZERO;
    };
    let setup = timeout(shared.handshake_timeout, open_streams(&conn)).await;
    let streams = match setup {
        Ok(Ok(s)) => s,
        Ok(Err(end)) => {
            let reason = finish(&conn, end);
            tracing::warn!(region = %shared.region, peer = %region, "stream setup failed: {reason}");
            peer.note_error(&reason);
            forget(peer, id);
            return Duration::ZERO;
        }
        Err(_) => {
            let reason = "stream setup timed out".to_owned();
            conn.close(CODE_PROTOCOL.into(), reason.as_bytes());
            tracing::warn!(region = %shared.region, peer = %region, "{reason}");
            peer.note_error(&reason);
            forget(peer, id);
            return Duration::ZERO;
        }
    };
    // Whatever was queued belongs to an earlier connection: the Hello exchange resumes.
    while queues.data.try_recv().is_ok() {}
    while queues.control.try_recv().is_ok() {}
    {
        let mut s = peer.stats();
        s.connected = true;
        s.connects += 1;
    }
    tracing::info!(region = %shared.region, peer = %region, remote = %conn.remote_address(), "link up");
    shared
        .emit_lifecycle(Inbound::Up {
            peer: region.to_owned(),
        })
        .await;
    let up_since = Instant::now();

    let Streams {
        mut data_send,
        mut control_send,
        mut data_recv,
        mut control_recv,
    } = streams;
    let Queues { data, control } = &mut *queues;
    let latency = peer.link.latency;
    let end: End = tokio::select! {
        e = write_loop(peer, &mut data_send, data, latency) => e,
        e = write_loop(peer, &mut control_send, control, latency) => e,
        e = read_loop(shared, peer, &mut data_recv, false) => e,
        e = read_loop(shared, peer, &mut control_recv, true) => e,
        e = conn.closed() => End::Lost(e),
    };
    let reason = match end {
        // Closed here, by another task: say which.
        End::Lost(quinn::ConnectionError::LocallyClosed) => if shared.is_shutdown() {
            "shutdown"
        } else if peer.is_cut() {
            "link cut (fault injection)"
        } else {
            "replaced by a newer connection"
        }
        .to_owned(),
        end => finish(&conn, end),
    };
    forget(peer, id);
    {
        let mut s = peer.stats();
        s.connected = false;
        s.last_error = Some(reason.clone());
    }
    tracing::warn!(region = %shared.region, peer = %region, "link down: {reason}");
    shared
        .emit_lifecycle(Inbound::Down {
            peer: region.to_owned(),
            reason,
        })
        .await;
    drop(queues);
    up_since.elapsed()
}

/// Closes the connection if we end it, and says why it ended.
fn finish(conn: &quinn::Connection, end: End) -> String {
    match end {
        End::Close(code, reason) => {
            conn.close(code.into(), reason.as_bytes());
            reason
        }
        End::Lost(e) => e.to_string(),
    }
}

/// Unregisters connection `id` if it is still the peer's current one.
fn forget(peer: &Peer, id: u64) {
    let mut current = peer.current.lock().expect("current lock");
    if current.as_ref().is_some_and(|(i, _)| *i == id) {
        *current = None;
    }
}

struct Streams {
    data_send: quinn::SendStream,
    control_send: quinn::SendStream,
    data_recv: quinn::RecvStream,
    control_recv: quinn::RecvStream,
}

/// Opens our two streams (tagged) and accepts the peer's two.
async fn open_streams(conn: &quinn::Connection) -> Result<Streams, End> {
    let mut data_send = conn.open_uni().await?;
    data_send.write_all(&[TAG_DATA]).await?;
    let mut control_send = conn.open_uni().await?;
    control_send.write_all(&[TAG_CONTROL]).await?;
    // Acks first when both streams have something to send.
    let _ = control_send.set_priority(1);
    let (mut data_recv, mut control_recv) = (None, None);
    while data_recv.is_none() || control_recv.is_none() {
        let mut recv = conn.accept_uni().await?;
        let mut tag = [0u8];
        recv.read_exact(&mut tag).await?;
        let slot = match tag[0] {
            TAG_DATA => &mut data_recv,
            TAG_CONTROL => &mut control_recv,
            t => return Err(End::Close(CODE_PROTOCOL, format!("unknown stream tag {t}"))),
        };
        if slot.replace(recv).is_some() {
            return Err(End::Close(
                CODE_PROTOCOL,
                format!("stream tag {} opened twice", tag[0]),
            ));
        }
    }
    Ok(Streams {
        data_send,
        control_send,
        data_recv: data_recv.expect("loop ends with both"),
        control_recv: control_recv.expect("loop ends with both"),
    })
}

/// Writes the queue's messages as frames, each no earlier than its queueing time plus the
/// simulated latency. Returns only on failure.
async fn write_loop(
    peer: &Peer,
    send: &mut quinn::SendStream,
    queue: &mut mpsc::Receiver<Queued>,
    latency: Duration,
) -> End {
    loop {
        let Some(Queued { at, message }) = queue.recv().await else {
            // Every `Outbound` is gone: nothing more to send, but keep receiving.
            return std::future::pending().await;
        };
        if !latency.is_zero() {
            tokio::time::sleep_until(at + latency).await;
        }
        let frame = encode_frame(&message);
        if frame.len() - 4 > FRAME_BYTES_MAX {
            tracing::error!(
                peer = %peer.link.region,
                "not sending a {} message of {} bytes: frames are at most {FRAME_BYTES_MAX}",
                message.kind(),
                frame.len()
            );
            continue;
        }
        if let Err(e) = send.write_all(&frame).await {
            return e.into();
        }
        let mut s = peer.stats();
        s.messages_sent += 1;
        s.bytes_sent += frame.len() as u64;
    }
}

/// Reads frames and passes their messages on. Returns only on failure.
async fn read_loop(
    shared: &Shared,
    peer: &Peer,
    recv: &mut quinn::RecvStream,
    control: bool,
) -> End {
    let stream = if control { "control" } else { "data" };
    loop {
        let mut prefix = [0u8; 4];
        if let Err(e) = recv.read_exact(&mut prefix).await {
            return e.into();
        }
        let len = match frame_len(prefix) {
            Ok(len) => len,
            Err(e) => return End::Close(CODE_PROTOCOL, format!("{stream} stream: {e}")),
        };
        let mut body = vec![0u8; len];
        if let Err(e) = recv.read_exact(&mut body).await {
            return e.into();
        }
        let message = match decode_body(&body) {
            Ok(m) => m,
            Err(e) => return End::Close(CODE_PROTOCOL, format!("{stream} stream: {e}")),
        };
        if matches!(message, Message::Ack { .. }) != control {
            return End::Close(
                CODE_PROTOCOL,
                format!("a {} message on the {stream} stream", message.kind()),
            );
        }
        let bytes = len + 4;
        let event = Inbound::Message {
            peer: peer.link.region.clone(),
            message,
            bytes,
        };
        let dropped = match shared.inbound.try_send(event) {
            Ok(()) => false,
            // Full: the writer is behind. The protocol resends what is not acknowledged.
            // Disconnected: the writer is gone (shutting down).
            Err(_) => true,
        };
        let mut s = peer.stats();
        s.messages_received += 1;
        s.bytes_received += bytes as u64;
        if dropped {
            s.inbound_dropped += 1;
        }
    }
}
