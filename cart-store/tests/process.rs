//! The real `cart-store` binary: serve, certs, restarts, `kill -9` crash recovery in both
//! durability modes, wrong node ids, corrupt data, graceful shutdown, and the HTTP surface
//! under attack (slow and idle connections, connection floods, invented methods, 504s under
//! overload, forged request ids, bodies that never come, encoded bodies, no-op writes, full
//! lines). Traffic goes only to 127.0.0.1; every loop is bounded in count and time.

use meridian_cart_store::{Batch, Cf, Durability, RocksStorage, Storage};
use serde_json::{json, Value};
use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{client, free_port, write_config, NodeProc, BIN};

/// Runs `cart-store serve --config CONFIG`, asserts that it refuses to start, and returns
/// what it printed on stderr.
fn serve_fails(config: &Path) -> String {
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "serve started with {}",
        config.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn get_json(c: &reqwest::blocking::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn quantity(cart: &Value, sku: &str) -> u64 {
    cart["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["sku"] == sku)
        .map_or(0, |l| l["quantity"].as_u64().unwrap())
}

#[test]
fn serves_the_api_and_shuts_down_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), 1, "");
    let c = client();
    let (s, h) = get_json(&c, &node.url("/health"));
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")));
    let r = c
        .post(node.url("/carts/alice/items"))
        .json(&json!({"sku": "book", "quantity": 2}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.headers()["causal-token"].to_str().unwrap().to_owned();
    let r = c
        .get(node.url("/carts/alice"))
        .header("causal-token", &token)
        .header("x-request-id", "req-7")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-7");
    let body: Value = r.json().unwrap();
    assert_eq!(body["lines"], json!([{"sku": "book", "quantity": 2}]));
    let r = c.post(node.url("/carts/alice/checkout")).send().unwrap();
    assert_eq!(r.status(), 200);
    let order: Value = r.json().unwrap();
    assert_eq!(order["lines"], json!([{"sku": "book", "quantity": 2}]));
    let metrics = c.get(node.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("cart_store_carts_stored 1"), "{metrics}");
    let (s, rep) = get_json(&c, &node.url("/replication"));
    assert_eq!((s, rep["peers"].clone()), (200, json!([])));
    // A 10 MB body over a real socket gets a readable 413.
    let big = format!(
        r#"{{"sku":"a","quantity":1,"p":"{}"}}"#,
        "x".repeat(10 << 20)
    );
    let r = c
        .post(node.url("/carts/alice/items"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    let e: Value = r.json().unwrap();
    assert_eq!(e["error"]["code"], "body_too_large");
    let status = node.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn idempotency_survives_restarts_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let post = |node: &NodeProc| {
        c.post(node.url("/carts/c/items"))
            .header("idempotency-key", "retry-me")
            .json(&json!({"sku": "a", "quantity": 3}))
            .send()
            .unwrap()
    };
    let node = NodeProc::start(dir.path(), 1, "");
    let first = post(&node).text().unwrap();
    assert!(node.terminate().success());
    let node = NodeProc::start(dir.path(), 1, "");
    let r = post(&node);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(r.text().unwrap(), first);
    node.kill9();
    let node = NodeProc::start(dir.path(), 1, "");
    assert_eq!(post(&node).text().unwrap(), first);
    let (_, cart) = get_json(&c, &node.url("/carts/c"));
    assert_eq!(quantity(&cart, "a"), 3, "applied once: {cart}");
}

#[test]
fn a_data_dir_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), 1, "");
    assert!(node.terminate().success());
    let config = write_config(dir.path(), 2, free_port(), "");
    let err = serve_fails(&config);
    assert!(
        err.contains("belongs to node_id 1") && err.contains("node_id 2"),
        "{err}"
    );
}

#[test]
fn a_corrupt_cart_value_is_a_clear_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let node = NodeProc::start(dir.path(), 1, "");
    for cart in ["good", "bad"] {
        let r = c
            .post(node.url(&format!("/carts/{cart}/items")))
            .json(&json!({"sku": "a", "quantity": 1}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(node.terminate().success());
    {
        // Flip bytes of the stored value, with RocksDB itself.
        let db = RocksStorage::open(&dir.path().join("data")).unwrap();
        let mut v = db.get(Cf::Carts, b"bad").unwrap().unwrap();
        for b in v.iter_mut().skip(1) {
            *b ^= 0xa5;
        }
        let mut batch = Batch::new();
        batch.put(Cf::Carts, b"bad".to_vec(), v);
        db.write(&batch, Durability::Fsync).unwrap();
    }
    let node = NodeProc::start(dir.path(), 1, "");
    let r = c.get(node.url("/carts/bad")).send().unwrap();
    assert_eq!(r.status(), 500);
    let e: Value = r.json().unwrap();
    assert_eq!(e["error"]["code"], "corrupt_data");
    assert!(e["error"]["message"].as_str().unwrap().contains("\"bad\""));
    let (s, good) = get_json(&c, &node.url("/carts/good"));
    assert_eq!((s, quantity(&good, "a")), (200, 1));
    let (s, _) = get_json(&c, &node.url("/health"));
    assert_eq!(s, 200, "the node is still up");
}

/// Concurrent writers record every acknowledged add; `kill -9` mid-load; after a restart
/// every acknowledged add is present, and nothing that was never sent appears.
fn crash_test(durability: &str) {
    const WRITERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("durability = \"{durability}\"");
    let node = NodeProc::start(dir.path(), 1, &extra);
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let url = node.url(&format!("/carts/crash-{w}/items"));
            let stop = stop.clone();
            let progress = progress.clone();
            std::thread::spawn(move || {
                let c = client();
                let (mut acked, mut sent) = (0u64, 0u64);
                let deadline = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && sent < 5_000 {
                    sent += 1;
                    let r = c
                        .post(&url)
                        .json(&json!({"sku": "s", "quantity": 1}))
                        .send();
                    match r {
                        Ok(r) if r.status() == 200 => {
                            acked += 1;
                            progress.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
                (acked, sent)
            })
        })
        .collect();
    // Let load build up (1000 acknowledged writes, or 10 s), then kill the node mid-load.
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress.load(Ordering::Relaxed) < 1000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    node.kill9();
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(u64, u64)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let total_acked: u64 = results.iter().map(|r| r.0).sum();
    let total_sent: u64 = results.iter().map(|r| r.1).sum();
    eprintln!(
        "{durability}: {total_acked} writes acknowledged of {total_sent} sent before kill -9"
    );
    assert!(
        total_acked > 20,
        "too little load before the kill: {total_acked}"
    );

    let node = NodeProc::start(dir.path(), 1, &extra);
    let c = client();
    for (w, (acked, sent)) in results.iter().enumerate() {
        let (_, cart) = get_json(&c, &node.url(&format!("/carts/crash-{w}")));
        let q = quantity(&cart, "s");
        assert!(
            q >= *acked && q <= *sent,
            "{durability}: writer {w}: acknowledged {acked}, sent {sent}, stored {q}"
        );
        assert_eq!(
            cart["lines"].as_array().unwrap().len().min(1),
            usize::from(q > 0)
        );
    }
    let (_, other) = get_json(&c, &node.url("/carts/crash-99"));
    assert_eq!(other["lines"], json!([]));
    // The node keeps working after recovery.
    let r = c
        .post(node.url("/carts/crash-0/items"))
        .json(&json!({"sku": "after", "quantity": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn kill_9_loses_no_acknowledged_write_in_process_mode() {
    crash_test("process");
}

#[test]
fn kill_9_loses_no_acknowledged_write_in_fsync_mode() {
    crash_test("fsync");
}

#[test]
fn certs_writes_a_ca_and_one_cert_per_region() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["certs", "--out"])
        .arg(dir.path().join("certs"))
        .args(["--regions", "virginia,frankfurt,tokyo"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "ca.pem",
        "ca.key",
        "virginia.pem",
        "virginia.key",
        "frankfurt.pem",
        "frankfurt.key",
        "tokyo.pem",
        "tokyo.key",
    ] {
        let text = std::fs::read_to_string(dir.path().join("certs").join(f)).unwrap();
        assert!(text.starts_with("-----BEGIN"), "{f}");
    }
}

#[test]
fn bad_config_and_removed_commands_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "region = \"virginia\"\nnode_id = \"one\"\n").unwrap();
    let err = serve_fails(&cfg);
    assert!(err.contains("bad.toml") && err.contains("node_id"), "{err}");
    // The load generator left the node binary (it is `cart-load`, package
    // meridian-cart-load): an unknown subcommand now. The demo takes only its own flags.
    let out = Command::new(BIN).arg("load").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unrecognized subcommand"), "load: {err}");
    let out = Command::new(BIN)
        .args(["demo", "--bogus"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--bogus"), "demo: {err}");
}

#[test]
fn a_persisted_clock_bound_far_ahead_is_refused_unless_overridden() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), 1, "");
    assert!(node.terminate().success());
    {
        // As if the clock had run an hour fast before the restart.
        let db = RocksStorage::open(&dir.path().join("data")).unwrap();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let bound = meridian_clocks::HlcTimestamp::new(now_ms + 3_600_000, 0);
        let mut batch = Batch::new();
        batch.put(
            Cf::Meta,
            meridian_cart_store::codec::META_HLC_BOUND,
            meridian_cart_store::codec::encode_u64(bound.to_u64()).to_vec(),
        );
        db.write(&batch, Durability::Fsync).unwrap();
    }
    let config = write_config(dir.path(), 1, free_port(), "");
    let err = serve_fails(&config);
    assert!(
        err.contains("ms ahead") && err.contains("clock_bound_override"),
        "{err}"
    );
    let node = NodeProc::start(dir.path(), 1, "clock_bound_override = true");
    let (s, _) = get_json(&client(), &node.url("/health"));
    assert_eq!(s, 200);
}

/// How a raw connection ended while we read from it.
#[derive(Debug, PartialEq)]
enum Ending {
    /// The node closed it (EOF or reset).
    Closed,
    /// Still open when we stopped reading.
    Open,
}

/// Reads from `s` until the node closes it or `within` passes; returns what arrived.
fn read_until_closed(s: &mut TcpStream, within: Duration) -> (String, Ending) {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&out).into_owned(), Ending::Open);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), Ending::Closed),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (String::from_utf8_lossy(&out).into_owned(), Ending::Open)
            }
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), Ending::Closed),
        }
    }
}

/// Reads one HTTP answer (head and `Content-Length` body) from `s`, within `within`.
fn read_answer(s: &mut TcpStream, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if len.is_some_and(|n| body.len() >= n) {
                return text;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no complete answer within {within:?}: {text:?}"
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => panic!("closed before a complete answer: {text:?}"),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the answer: {e}; so far {text:?}"),
        }
    }
}

/// Half a request head: the node waits for the rest.
const HALF_HEAD: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

#[test]
fn a_connection_flood_is_refused_and_slow_heads_are_closed() {
    const LIMIT: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("http_connections_max = {LIMIT}\nhttp_header_timeout_ms = 3000");
    let node = NodeProc::start(dir.path(), 1, &extra);
    // Below the limit, slow heads do not stop the node from answering.
    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..LIMIT / 2).map(|_| node.raw(HALF_HEAD)).collect();
    let (s, h) = get_json(&client(), &node.url("/health"));
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")));
    // Past the limit, a new connection gets a 503 at once and is closed.
    slow.extend((0..200 - LIMIT / 2).map(|_| node.raw(HALF_HEAD)));
    let mut probe = node.raw(b"");
    let (answer, ending) = read_until_closed(&mut probe, Duration::from_secs(1));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("http_connections_max"), "{answer:?}");
    assert_eq!(ending, Ending::Closed);
    // The node holds at most LIMIT of the 200 slow heads and closed the rest at once...
    let mut held = Vec::new();
    for mut s in slow {
        // Held: still open and silent (a refused one has its 503, a reset or an EOF).
        if read_until_closed(&mut s, Duration::from_millis(1)) == (String::new(), Ending::Open) {
            held.push(s);
        }
    }
    let judged = opened.elapsed();
    assert!(
        judged < Duration::from_millis(2500),
        "too slow to judge: {judged:?}"
    );
    assert!(
        (1..=LIMIT).contains(&held.len()),
        "held {} of 200",
        held.len()
    );
    // ...and closes the held ones once their head is 3 s late, with no answer.
    for mut s in held {
        let (answer, ending) = read_until_closed(&mut s, Duration::from_secs(8));
        assert_eq!((answer.as_str(), ending), ("", Ending::Closed));
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(2900),
        "closed before the timeout"
    );
    let (s, _) = get_json(&client(), &node.url("/health"));
    assert_eq!(s, 200, "the node answers again");
    let metrics = node.metrics();
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cart_store_http_connections_refused_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        refused.is_some_and(|n| n >= 200 - LIMIT as u64),
        "{metrics}"
    );
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), 1, "http_idle_timeout_ms = 1000");
    let mut kept = node.raw(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let answer = read_answer(&mut kept, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let answered = Instant::now();
    let (more, ending) = read_until_closed(&mut kept, Duration::from_secs(6));
    assert_eq!((more.as_str(), ending), ("", Ending::Closed));
    assert!(
        answered.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
}

#[test]
fn sigterm_finishes_within_shutdown_timeout_while_requests_are_half_sent() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(
        dir.path(),
        1,
        "http_header_timeout_ms = 60000\nhttp_idle_timeout_ms = 60000\n\
         request_timeout_ms = 60000\nshutdown_timeout_ms = 1000",
    );
    let r = client()
        .post(node.url("/carts/c/items"))
        .json(&json!({"sku": "a", "quantity": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Half a head, and a whole head with a tenth of its body.
    let _half_head = node.raw(HALF_HEAD);
    let _half_body = node.raw(
        b"POST /carts/c/items HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"sku\": \"",
    );
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let status = node.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "SIGTERM took {:?}; the connections' own timeouts are 60 s, shutdown_timeout_ms 1 s",
        start.elapsed()
    );
    // The acknowledged write survived the shutdown.
    let node = NodeProc::start(dir.path(), 1, "");
    let (_, cart) = get_json(&client(), &node.url("/carts/c"));
    assert_eq!(quantity(&cart, "a"), 1, "{cart}");
}

#[test]
fn invented_methods_do_not_grow_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), 1, "");
    let c = client();
    let mut rng = meridian_testkit::SplitMix64::new(0x6d65_7468);
    let mut send = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                let name = format!("M{:016X}", rng.next_u64());
                let method = reqwest::Method::from_bytes(name.as_bytes()).unwrap();
                let path = if i % 2 == 0 { "/health" } else { "/carts/x" };
                let r = c.request(method, node.url(path)).send().unwrap();
                assert_eq!(r.status(), 405, "{name} {path}");
                name
            })
            .collect()
    };
    send(10);
    // Scrape once first, so that /metrics's own series exists in both scrapes.
    node.metrics();
    let before = node.metrics();
    let names = send(300);
    let after = node.metrics();
    assert!(after.contains(r#"method="other""#), "{after}");
    assert!(
        after.len() <= before.len() + 512,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    for name in names {
        assert!(!after.contains(&name), "{name} became a label");
    }
}

#[test]
fn a_504_write_is_never_applied() {
    const CLIENTS: usize = 32;
    const EACH: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(
        dir.path(),
        1,
        "durability = \"fsync\"\nrequest_timeout_ms = 20\nwrite_batch_max = 1",
    );
    let url = node.url("/carts/busy/items");
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = client();
                let mut counts = [0u64; 3]; // 200, 504, 503
                for _ in 0..EACH {
                    let r = c
                        .post(&url)
                        .json(&json!({"sku": "s", "quantity": 1}))
                        .send()
                        .unwrap();
                    match r.status().as_u16() {
                        200 => counts[0] += 1,
                        504 => counts[1] += 1,
                        503 => counts[2] += 1,
                        other => panic!("unexpected {other}: {}", r.text().unwrap()),
                    }
                }
                counts
            })
        })
        .collect();
    let mut total = [0u64; 3];
    for h in handles {
        for (t, n) in total.iter_mut().zip(h.join().unwrap()) {
            *t += n;
        }
    }
    let [ok, timeouts, overloaded] = total;
    eprintln!("{ok} applied (200), {timeouts} timed out (504), {overloaded} overloaded (503)");
    assert!(timeouts > 0, "the load was too light to time out any write");
    // Exactly the 200s are in the cart. (A read can time out too: retry it, bounded.)
    let c = client();
    let cart = (0..200)
        .find_map(|_| {
            let r = c.get(node.url("/carts/busy")).send().unwrap();
            if r.status() == 200 {
                return Some(r.json::<Value>().unwrap());
            }
            std::thread::sleep(Duration::from_millis(10));
            None
        })
        .expect("a read within 200 tries");
    assert_eq!(quantity(&cart, "s"), ok, "{cart}");
    // The node's own compaction writes (it has no peers, so its adds are stable at once)
    // take sequence numbers too. Both gauges move with each commit: read until a scrape
    // falls between commits (bounded).
    let gauge = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let mut last = String::new();
    let consistent = (0..100).any(|_| {
        let metrics = node.metrics();
        let seq = gauge(&metrics, "cart_store_applied_seq");
        let compactions = gauge(&metrics, "cart_store_compaction_writes");
        last = format!("applied_seq {seq}, {ok} writes applied, {compactions} compactions");
        if seq == ok + compactions {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
        false
    });
    assert!(
        consistent,
        "one sequence number per applied write and per compaction: {last}"
    );
}

#[test]
fn request_ids_are_checked_before_they_are_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), 1, "");
    let c = client();
    let echoed = |id: &str| -> String {
        let r = c
            .get(node.url("/health"))
            .header("x-request-id", id)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-request-id"].to_str().unwrap().to_owned()
    };
    let good = "req-7.retry:2_b";
    assert_eq!(echoed(good), good);
    let long = "x".repeat(10 * 1024);
    for bad in [
        long.as_str(),
        "a b",
        "id with spaces level=error",
        &"y".repeat(65),
    ] {
        let got = echoed(bad);
        assert_ne!(got, bad);
        let (prefix, n) = got.split_once('-').expect("a generated PREFIX-COUNTER id");
        assert!(prefix.len() == 8 && n.parse::<u64>().is_ok(), "{got}");
    }
}

#[test]
fn a_body_declared_too_large_is_413_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), 1, "request_timeout_ms = 10000");
    for expect in ["", "Expect: 100-continue\r\n"] {
        let start = Instant::now();
        let mut s = node.raw(
            format!(
                "POST /carts/c/items HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/json\r\nContent-Length: 10000000\r\n{expect}\r\n"
            )
            .as_bytes(),
        );
        let answer = read_answer(&mut s, Duration::from_secs(5));
        assert!(answer.starts_with("HTTP/1.1 413"), "{expect:?}: {answer:?}");
        assert!(answer.contains("body_too_large"), "{answer:?}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{expect:?}: 413 after {:?}; request_timeout_ms is 10 s",
            start.elapsed()
        );
    }
    let (s, h) = get_json(&client(), &node.url("/health"));
    assert_eq!((s, h["applied_seq"].as_u64()), (200, Some(0)));
}

#[test]
fn deleting_what_never_existed_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), 1, "");
    let c = client();
    for path in ["/carts/never", "/carts/never/items/x"] {
        let r = c.delete(node.url(path)).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let cart: Value = r.json().unwrap();
        assert_eq!(
            (cart["cart"].as_str(), &cart["lines"]),
            (Some("never"), &json!([]))
        );
    }
    let (_, h) = get_json(&c, &node.url("/health"));
    assert_eq!(h["applied_seq"], 0, "{h}");
    let metrics = node.metrics();
    for want in ["cart_store_carts_stored 0", "cart_store_delta_log_length 0"] {
        assert!(
            metrics.lines().any(|l| l == want),
            "missing {want:?} in\n{metrics}"
        );
    }
}

#[test]
fn an_encoded_body_is_415() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), 1, "");
    let c = client();
    let post = |encoding: &str| {
        c.post(node.url("/carts/c/items"))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(r#"{"sku":"a","quantity":1}"#)
            .send()
            .unwrap()
    };
    for encoding in ["gzip", "br", "identity, gzip"] {
        let r = post(encoding);
        assert_eq!(r.status(), 415, "{encoding}");
        let e: Value = r.json().unwrap();
        assert_eq!(e["error"]["code"], "unsupported_media_type");
        let m = e["error"]["message"].as_str().unwrap();
        assert!(m.contains("gzip") || m.contains("br"), "{m}");
    }
    assert_eq!(post("identity").status(), 200);
    let (_, cart) = get_json(&c, &node.url("/carts/c"));
    assert_eq!(
        quantity(&cart, "a"),
        1,
        "only the identity body was applied: {cart}"
    );
}

#[test]
fn a_line_stops_at_ten_thousand() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), 1, "");
    let c = client();
    let add = |n: u64| {
        c.post(node.url("/carts/c/items"))
            .json(&json!({"sku": "a", "quantity": n}))
            .send()
            .unwrap()
    };
    assert_eq!(add(10_000).status(), 200);
    let r = add(1);
    assert_eq!(r.status(), 409);
    let e: Value = r.json().unwrap();
    assert_eq!(e["error"]["code"], "line_full", "{e}");
    let (_, cart) = get_json(&c, &node.url("/carts/c"));
    assert_eq!(quantity(&cart, "a"), 10_000, "{cart}");
}

#[test]
fn a_huge_request_head_is_431() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), 1, "http_head_bytes_max = 16384");
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(32 * 1024)
    );
    let mut s = node.raw(big.as_bytes());
    let (answer, ending) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert_eq!(ending, Ending::Closed);
    let fits = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(8 * 1024)
    );
    let answer = read_answer(&mut node.raw(fits.as_bytes()), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}
