//! The real `cart-store` binary: serve, certs, restarts, `kill -9` crash recovery in both
//! durability modes, wrong node ids, corrupt data, graceful shutdown. Traffic goes only to
//! 127.0.0.1; every loop is bounded in count and time.

use meridian_cart_store::{Batch, Cf, Durability, RocksStorage, Storage};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cart-store");

fn free_port() -> u16 {
    meridian_testkit::free_port().expect("a free loopback port")
}

fn write_config(dir: &Path, node_id: u64, port: u16, extra: &str) -> PathBuf {
    let path = dir.join(format!("node-{port}.toml"));
    let text = format!(
        "region = \"virginia\"\nnode_id = {node_id}\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{port}\"\n{extra}\n",
        dir.join("data").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

struct NodeProc {
    child: Child,
    base: String,
}

impl NodeProc {
    /// Starts the node and waits until `/health` answers.
    fn start(dir: &Path, node_id: u64, extra: &str) -> NodeProc {
        let port = free_port();
        let config = write_config(dir, node_id, port, extra);
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut node = NodeProc {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = client();
        loop {
            if let Ok(r) = client.get(format!("{}/health", node.base)).send() {
                if r.status() == 200 {
                    return node;
                }
            }
            if let Some(status) = node.child.try_wait().unwrap() {
                let mut err = String::new();
                node.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("cart-store exited early ({status}): {err}");
            }
            assert!(
                Instant::now() < deadline,
                "cart-store did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    /// SIGTERM, and the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
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
fn bad_config_and_unbuilt_commands_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "region = \"virginia\"\nnode_id = \"one\"\n").unwrap();
    let err = serve_fails(&cfg);
    assert!(err.contains("bad.toml") && err.contains("node_id"), "{err}");
    let out = Command::new(BIN).arg("demo").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not implemented yet"), "demo: {err}");
}

#[test]
fn load_drives_a_node_and_writes_a_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), 1, "");
    let json_path = dir.path().join("load.json");
    let out = Command::new(BIN)
        .args(["load", "--target", &node.base])
        .args(["--concurrency", "4", "--duration", "700ms", "--carts", "20"])
        .args([
            "--mix",
            "add=50,set=10,remove=10,read=20,checkout=10",
            "--json",
        ])
        .arg(&json_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("p99.9"), "{stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert!(report["requests"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["p99_ms"].as_f64().unwrap() >= report["p50_ms"].as_f64().unwrap());
    // The node took the writes.
    let metrics = client()
        .get(node.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !metrics.contains("cart_store_delta_log_length 0"),
        "{metrics}"
    );
    let out = Command::new(BIN)
        .args(["load", "--mix", "buy=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown operation"));
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
