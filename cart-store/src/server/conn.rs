//! The accept loop: HTTP/1.1 connections under a connection limit, a header timeout and an
//! idle timeout, and a graceful shutdown bounded by `shutdown_timeout`.
//!
//! Every connection is in one of three phases, and its timer follows the phase:
//!
//! | phase | until | then |
//! |---|---|---|
//! | reading a request head (from the accept, or from the first byte after an idle spell) | `header_timeout` | closed without an answer |
//! | a request in flight | the request's own deadline (`request_timeout`, in the router) | — |
//! | idle between kept-alive requests | `idle_timeout` | closed |
//!
//! A connection beyond `connections_max` is answered `503 overloaded` (when the short answer
//! can be written at once) and closed, without its request being read.

use super::metrics::Metrics;
use super::settings::ConnectionLimits;
use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tower::ServiceExt;

/// How long the accept loop pauses after an accept error (e.g. out of file descriptors), so
/// that it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// What [`serve`] shares with every connection it starts.
struct Acceptor {
    router: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    permits: Arc<Semaphore>,
    refusal: Vec<u8>,
    graceful: GracefulShutdown,
    tasks: JoinSet<()>,
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, lets open
/// requests finish for up to `limits.shutdown_timeout`, and closes what is left.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let mut acceptor = Acceptor {
        router,
        refusal: refusal(limits.connections_max),
        permits: Arc::new(Semaphore::new(limits.connections_max)),
        limits,
        metrics,
        graceful: GracefulShutdown::new(),
        tasks: JoinSet::new(),
    };
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        while acceptor.tasks.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _)) => acceptor.accept(stream),
            Err(e) => {
                tracing::error!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
    drop(listener);
    acceptor.shut_down().await;
}

impl Acceptor {
    fn accept(&mut self, stream: TcpStream) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.http_connections_refused.inc();
            // A fresh socket's send buffer is empty: the short answer goes out at once or
            // not at all. Dropping the stream closes it; its request is never read.
            let _ = stream.try_write(&self.refusal);
            return;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let (router, busy) = (self.router.clone(), activity.clone());
        let service =
            hyper::service::service_fn(move |req| handle(router.clone(), busy.clone(), req));
        let conn = hyper::server::conn::http1::Builder::new()
            // The connection's own watchdog times the head; hyper's timer would also cut
            // idle keep-alive connections at the header timeout.
            .header_read_timeout(None)
            .max_buf_size(self.limits.head_bytes_max)
            .serve_connection(io, service);
        let conn = self.graceful.watch(conn);
        let limits = self.limits.clone();
        let open = OpenConnection::new(&self.metrics, permit);
        self.tasks.spawn(async move {
            watchdog(conn, &activity, &limits).await;
            drop(open);
        });
    }

    async fn shut_down(mut self) {
        let open = self.graceful.count();
        tracing::info!(
            open,
            "no longer accepting connections; finishing open requests"
        );
        let drained = tokio::time::timeout(self.limits.shutdown_timeout, self.graceful.shutdown());
        if drained.await.is_err() {
            tracing::warn!(
                open = self.tasks.len(),
                "closing connections still open after shutdown_timeout_ms ({} ms)",
                self.limits.shutdown_timeout.as_millis()
            );
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The 503 a connection beyond `connections_max` gets.
fn refusal(connections_max: usize) -> Vec<u8> {
    let body = serde_json::json!({"error": {
        "code": "overloaded",
        "message": format!(
            "the node has {connections_max} open HTTP connections (config key \
             http_connections_max); retry shortly"
        ),
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Holds a connection's permit, and counts it in `cart_store_http_connections_open`.
struct OpenConnection {
    metrics: Metrics,
    _permit: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(metrics: &Metrics, permit: OwnedSemaphorePermit) -> Self {
        metrics.http_connections_open.inc();
        OpenConnection {
            metrics: metrics.clone(),
            _permit: permit,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.http_connections_open.dec();
    }
}

/// Drives `conn` until it ends, or until its phase's timer runs out.
async fn watchdog(
    conn: impl Future<Output = hyper::Result<()>>,
    activity: &Activity,
    limits: &ConnectionLimits,
) {
    let mut conn = pin!(conn);
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = sleep_until(activity.deadline(limits)) => {
                if let Some(why) = activity.expired(limits) {
                    tracing::debug!(why, "closing an HTTP connection");
                    return;
                }
            }
            // A new phase: loop to take up its timer.
            () = activity.changed.notified() => {}
        }
    }
}

/// Runs one request through the router, with the connection marked busy meanwhile.
async fn handle(
    router: Router,
    activity: Arc<Activity>,
    req: Request<Incoming>,
) -> Result<axum::response::Response, Infallible> {
    let busy = Busy::new(activity);
    let resp = router.oneshot(req.map(Body::new)).await;
    drop(busy);
    resp
}

/// Where a connection is between requests; see the [module docs](self).
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Waiting for a request head, since this instant.
    Head(Instant),
    /// This many requests in flight.
    Busy(u32),
    /// No request in flight and no byte of the next one, since this instant.
    Idle(Instant),
}

/// A connection's phase, updated by its socket and its service; `changed` wakes the
/// watchdog to take up the new phase's timer.
#[derive(Debug)]
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn update(&self, f: impl FnOnce(Phase) -> Option<Phase>) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(next) = f(*phase) {
            *phase = next;
            self.changed.notify_one();
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: an idle connection starts reading a head.
    fn on_read(&self) {
        self.update(|p| match p {
            Phase::Idle(_) => Some(Phase::Head(Instant::now())),
            Phase::Head(_) | Phase::Busy(_) => None,
        });
    }

    /// When to look at the connection next.
    fn deadline(&self, limits: &ConnectionLimits) -> Instant {
        match self.phase() {
            Phase::Head(since) => since + limits.header_timeout,
            Phase::Idle(since) => since + limits.idle_timeout,
            // No timer of ours while a request is in flight (it has its own deadline); the
            // end of the request wakes the watchdog.
            Phase::Busy(_) => Instant::now() + limits.header_timeout.max(limits.idle_timeout),
        }
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &ConnectionLimits) -> Option<&'static str> {
        let now = Instant::now();
        match self.phase() {
            Phase::Head(since) if now >= since + limits.header_timeout => {
                Some("the request head did not arrive within http_header_timeout_ms")
            }
            Phase::Idle(since) if now >= since + limits.idle_timeout => {
                Some("idle for http_idle_timeout_ms")
            }
            _ => None,
        }
    }
}

/// A request in flight on a connection; the connection is idle again when the last one
/// is dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Self {
        activity.update(|p| match p {
            Phase::Busy(n) => Some(Phase::Busy(n + 1)),
            Phase::Head(_) | Phase::Idle(_) => Some(Phase::Busy(1)),
        });
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|p| match p {
            Phase::Busy(n) if n > 1 => Some(Phase::Busy(n - 1)),
            _ => Some(Phase::Idle(Instant::now())),
        });
    }
}

/// A TCP stream that tells its connection's [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
