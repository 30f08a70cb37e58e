//! [`run_load`]: the load generator behind `cart-load` (and `cargo xtask bench-node`).
//!
//! `concurrency` clients, each one sequential HTTP/1.1 keep-alive connection's worth of
//! requests, pick an operation from the mix and a cart uniformly from `carts`, for
//! `duration`. Latencies go into an HdrHistogram (µs, 3 significant digits). The choice of
//! operations and carts is seeded, so two runs issue the same sequence per client.
//!
//! With [`LoadConfig::redis`] set, the same clients drive a Redis server instead, each on its
//! own connection with one command in flight (no pipelining), so that `cargo xtask
//! bench-node` can compare the node with Redis under the same load shape: add =
//! `HINCRBY cart:<id> <sku> 1`, set = `HSET`, remove = `HDEL`, read = `HGETALL`, checkout =
//! `HGETALL` then `DEL` (an empty cart counts as an expected refusal, like the node's 409).

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use meridian_testkit::SplitMix64;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Most clients.
pub const CONCURRENCY_MAX: usize = 4096;
/// Longest run.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
/// Highest latency recorded (longer ones are clamped): 60 s.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// Relative weights of the operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Mix {
    /// `POST /carts/{cart}/items`.
    pub add: u32,
    /// `PUT /carts/{cart}/items/{sku}`.
    pub set: u32,
    /// `DELETE /carts/{cart}/items/{sku}`.
    pub remove: u32,
    /// `GET /carts/{cart}`.
    pub read: u32,
    /// `POST /carts/{cart}/checkout`.
    pub checkout: u32,
}

impl Default for Mix {
    /// 70% add, 20% read, 10% remove.
    fn default() -> Self {
        Mix {
            add: 70,
            set: 0,
            remove: 10,
            read: 20,
            checkout: 0,
        }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;

    /// `add=70,read=20,remove=10`; operations not named weigh 0.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut m = Mix {
            add: 0,
            set: 0,
            remove: 0,
            read: 0,
            checkout: 0,
        };
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not op=weight, e.g. add=70"))?;
            let w: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("weight {v:?} is not an integer"))?;
            match k.trim() {
                "add" => m.add = w,
                "set" => m.set = w,
                "remove" => m.remove = w,
                "read" => m.read = w,
                "checkout" => m.checkout = w,
                other => {
                    return Err(format!(
                        "unknown operation {other:?}; use add, set, remove, read, checkout"
                    ))
                }
            }
        }
        if m.total() == 0 || m.total() > 1_000_000 {
            return Err("the weights must add up to 1..=1000000".into());
        }
        Ok(m)
    }
}

impl Mix {
    fn total(&self) -> u64 {
        [self.add, self.set, self.remove, self.read, self.checkout]
            .iter()
            .map(|w| u64::from(*w))
            .sum()
    }

    fn pick(&self, r: u64) -> OpKind {
        let mut x = r % self.total();
        for (w, k) in [
            (self.add, OpKind::Add),
            (self.set, OpKind::Set),
            (self.remove, OpKind::Remove),
            (self.read, OpKind::Read),
            (self.checkout, OpKind::Checkout),
        ] {
            if x < u64::from(w) {
                return k;
            }
            x -= u64::from(w);
        }
        OpKind::Read
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Add,
    Set,
    Remove,
    Read,
    Checkout,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Base URLs (`http://127.0.0.1:8080`); clients are spread over them round-robin.
    pub targets: Vec<String>,
    /// Number of clients.
    pub concurrency: usize,
    /// How long to run.
    pub duration: Duration,
    /// Carts to spread the load over.
    pub carts: u64,
    /// Skus per cart to choose from.
    pub skus: u64,
    /// The operation mix.
    pub mix: Mix,
    /// Seed of the operation choices.
    pub seed: u64,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Drive this Redis server (`redis://127.0.0.1:6379/`) instead of `targets`.
    pub redis: Option<String>,
}

/// One client's connection: a node over HTTP/1.1, or Redis.
///
/// The HTTP side is a bare hyper connection per client (no pool, no URL parsing per
/// request): on a shared 2-core machine the load generator's own cost is taken from the
/// server, and reqwest cost about 21 µs of CPU per request against redis-rs's few.
enum Conn {
    Http {
        addr: std::net::SocketAddr,
        host: String,
        sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    },
    Redis(redis::aio::MultiplexedConnection),
}

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `http://HOST:PORT` (no path) to a socket address and the `Host` header.
async fn resolve(base: &str) -> Result<(std::net::SocketAddr, String), LoadError> {
    let hostport = base
        .trim_end_matches('/')
        .strip_prefix("http://")
        .ok_or_else(|| LoadError(format!("target {base:?} must start with http://")))?;
    if hostport.contains('/') {
        return Err(LoadError(format!(
            "target {base:?} must be http://HOST:PORT with no path"
        )));
    }
    let with_port = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:80")
    };
    let addr = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| LoadError(format!("cannot resolve {with_port}: {e}")))?
        .next()
        .ok_or_else(|| LoadError(format!("{with_port} resolves to no address")))?;
    Ok((addr, hostport.to_owned()))
}

async fn handshake(
    addr: std::net::SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// What one request came to.
enum Outcome {
    Ok,
    /// A checkout of an empty cart: expected, not an error.
    EmptyCheckout,
}

impl Conn {
    async fn issue(&mut self, kind: OpKind, cart: u64, sku: u64) -> Result<Outcome, String> {
        match self {
            Conn::Http { addr, host, sender } => {
                let (method, path, body) = match kind {
                    OpKind::Add => (
                        Method::POST,
                        format!("/carts/load-{cart}/items"),
                        Some(format!(r#"{{"sku":"sku-{sku}","quantity":1}}"#)),
                    ),
                    OpKind::Set => (
                        Method::PUT,
                        format!("/carts/load-{cart}/items/sku-{sku}"),
                        Some(format!(r#"{{"quantity":{}}}"#, 1 + sku % 5)),
                    ),
                    OpKind::Remove => (
                        Method::DELETE,
                        format!("/carts/load-{cart}/items/sku-{sku}"),
                        None,
                    ),
                    OpKind::Read => (Method::GET, format!("/carts/load-{cart}"), None),
                    OpKind::Checkout => {
                        (Method::POST, format!("/carts/load-{cart}/checkout"), None)
                    }
                };
                let mut req = Request::builder()
                    .method(method)
                    .uri(path)
                    .header(hyper::header::HOST, host.as_str());
                if body.is_some() {
                    req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                }
                let req = req
                    .body(Full::new(Bytes::from(body.unwrap_or_default())))
                    .map_err(|e| e.to_string())?;
                // (Re)connect lazily: after an error the connection is dropped.
                let mut s = match sender.take() {
                    Some(s) if !s.is_closed() => s,
                    _ => handshake(*addr).await?,
                };
                let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
                    let status = resp.status();
                    // Read the body so the connection can carry the next request.
                    resp.into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(status)
                })
                .await
                .map_err(|_| format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))?;
                let status = answer?;
                *sender = Some(s);
                if status.is_success() {
                    Ok(Outcome::Ok)
                } else if kind == OpKind::Checkout && status.as_u16() == 409 {
                    Ok(Outcome::EmptyCheckout)
                } else {
                    Err(format!("HTTP {status}"))
                }
            }
            Conn::Redis(con) => {
                let key = format!("cart:load-{cart}");
                let field = format!("sku-{sku}");
                let r = match kind {
                    OpKind::Add => redis::cmd("HINCRBY")
                        .arg(&key)
                        .arg(&field)
                        .arg(1)
                        .query_async::<i64>(con)
                        .await
                        .map(|_| Outcome::Ok),
                    OpKind::Set => redis::cmd("HSET")
                        .arg(&key)
                        .arg(&field)
                        .arg(1 + sku % 5)
                        .query_async::<i64>(con)
                        .await
                        .map(|_| Outcome::Ok),
                    OpKind::Remove => redis::cmd("HDEL")
                        .arg(&key)
                        .arg(&field)
                        .query_async::<i64>(con)
                        .await
                        .map(|_| Outcome::Ok),
                    OpKind::Read => redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async::<Vec<(String, i64)>>(con)
                        .await
                        .map(|_| Outcome::Ok),
                    OpKind::Checkout => {
                        match redis::cmd("HGETALL")
                            .arg(&key)
                            .query_async::<Vec<(String, i64)>>(con)
                            .await
                        {
                            Ok(lines) if lines.is_empty() => Ok(Outcome::EmptyCheckout),
                            Ok(_) => redis::cmd("DEL")
                                .arg(&key)
                                .query_async::<i64>(con)
                                .await
                                .map(|_| Outcome::Ok),
                            Err(e) => Err(e),
                        }
                    }
                };
                r.map_err(|e| format!("redis: {e}"))
            }
        }
    }
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(String);

/// Latency summary of a run, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// Requests completed (including errors).
    pub requests: u64,
    /// Requests that failed: transport errors and statuses other than 2xx (a 409 for
    /// checking out an empty cart counts as expected, not as an error).
    pub errors: u64,
    /// 409 answers to checkouts of empty carts.
    pub empty_checkouts: u64,
    /// Wall time of the run in seconds.
    pub elapsed_secs: f64,
    /// Requests per second.
    pub throughput: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
    /// The mix used.
    pub mix: Mix,
    /// Clients.
    pub concurrency: usize,
}

struct ClientResult {
    hist: Histogram<u64>,
    errors: u64,
    empty_checkouts: u64,
    first_error: Option<String>,
}

/// Runs the load and returns the summary. The first error, if any, is printed to stderr
/// with the error count.
pub async fn run_load(config: LoadConfig) -> Result<LoadReport, LoadError> {
    if config.targets.is_empty() && config.redis.is_none() {
        return Err(LoadError("give at least one --target URL".into()));
    }
    if !(1..=CONCURRENCY_MAX).contains(&config.concurrency) {
        return Err(LoadError(format!(
            "concurrency must be 1..={CONCURRENCY_MAX}"
        )));
    }
    if config.duration.is_zero() || config.duration > DURATION_MAX {
        return Err(LoadError("duration must be between 1 ms and 1 h".into()));
    }
    if config.carts == 0 || config.skus == 0 {
        return Err(LoadError("carts and skus must be at least 1".into()));
    }
    let mut conns = Vec::with_capacity(config.concurrency);
    for c in 0..config.concurrency {
        conns.push(match &config.redis {
            Some(url) => {
                let r = redis::Client::open(url.as_str())
                    .map_err(|e| LoadError(format!("bad Redis URL {url:?}: {e}")))?;
                let con = r
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| LoadError(format!("cannot connect to Redis at {url}: {e}")))?;
                Conn::Redis(con)
            }
            None => {
                let (addr, host) = resolve(&config.targets[c % config.targets.len()]).await?;
                Conn::Http {
                    addr,
                    host,
                    sender: None,
                }
            }
        });
    }
    let bar = if config.progress {
        let b = indicatif::ProgressBar::new(config.duration.as_secs().max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} s  {msg}")
                .expect("static template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let start = Instant::now();
    let deadline = start + config.duration;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let cfg = config.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng =
                SplitMix64::new(cfg.seed ^ (c as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut res = ClientResult {
                hist: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("static bounds"),
                errors: 0,
                empty_checkouts: 0,
                first_error: None,
            };
            while Instant::now() < deadline {
                let kind = cfg.mix.pick(rng.next_u64());
                let cart = rng.below(cfg.carts);
                let sku = rng.below(cfg.skus);
                let t = Instant::now();
                let outcome = match conn.issue(kind, cart, sku).await {
                    Ok(Outcome::Ok) => Ok(()),
                    Ok(Outcome::EmptyCheckout) => {
                        res.empty_checkouts += 1;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                res.hist.saturating_record(us.clamp(1, LATENCY_US_MAX));
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = outcome {
                    res.errors += 1;
                    if res.first_error.is_none() {
                        res.first_error = Some(e);
                    }
                }
            }
            res
        }));
    }
    // Progress: once a second until the deadline.
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250).min(config.duration)).await;
        let secs = start.elapsed().as_secs_f64();
        let n = done.load(std::sync::atomic::Ordering::Relaxed);
        bar.set_position(start.elapsed().as_secs().min(config.duration.as_secs()));
        bar.set_message(format!("{n} requests, {:.0}/s", n as f64 / secs.max(1e-9)));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).expect("bounds");
    let (mut errors, mut empty) = (0, 0);
    let mut first_error = None;
    for t in tasks {
        let r = t
            .await
            .map_err(|e| LoadError(format!("a client task failed: {e}")))?;
        hist.add(&r.hist).expect("same bounds");
        errors += r.errors;
        empty += r.empty_checkouts;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    if let Some(e) = first_error {
        eprintln!("cart-store load: {errors} errors; the first: {e}");
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(LoadReport {
        requests: hist.len(),
        errors,
        empty_checkouts: empty,
        elapsed_secs: elapsed,
        throughput: hist.len() as f64 / elapsed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: hist.max() as f64 / 1000.0,
        mix: config.mix,
        concurrency: config.concurrency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_pick_by_weight() {
        let m: Mix = "add=70,read=20,remove=10".parse().unwrap();
        assert_eq!(m, Mix::default());
        let mut counts = [0u32; 5];
        let mut rng = SplitMix64::new(7);
        for _ in 0..10_000 {
            let k = m.pick(rng.next_u64());
            counts[k as usize] += 1;
        }
        assert!((6_500..7_500).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[1] + counts[4], 0, "{counts:?}");
        for (bad, want) in [
            ("add", "op=weight"),
            ("add=x", "not an integer"),
            ("buy=1", "unknown operation"),
            ("add=0", "add up to"),
        ] {
            let e = bad.parse::<Mix>().unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
