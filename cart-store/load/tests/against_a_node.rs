//! `cart-load` against a real cart-store node (its HTTP server over `MemStorage`, on a
//! loopback port): the report adds up, the node took the writes, and bad flags are refused.

use meridian_cart_store::server::{Server, ServerSettings};
use meridian_cart_store::{MemStorage, Node, NodeConfig, Storage};
use meridian_clocks::{ReplicaId, SystemClock};
use serde_json::Value;
use std::process::Command;
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_cart-load");

/// A node serving on a loopback port in a thread of its own; dropped, it shuts down.
struct RunningNode {
    base: String,
    storage: MemStorage,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningNode {
    fn start() -> RunningNode {
        let storage = MemStorage::new();
        let dyn_storage: Arc<dyn Storage> = Arc::new(storage.clone());
        let node = Node::open(dyn_storage, SystemClock, NodeConfig::new(ReplicaId(1))).unwrap();
        let server = Server::with_node(node, ServerSettings::default());
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", std_listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let shutdown = async move {
                    let _ = stopped.await;
                };
                server.run(listener, shutdown).await.unwrap();
            });
        });
        RunningNode {
            base,
            storage,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn load_drives_a_node_and_writes_a_json_summary() {
    let node = RunningNode::start();
    let dir = std::env::temp_dir().join(format!("cart-load-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("load.json");
    let out = Command::new(BIN)
        .args(["--target", &node.base])
        .args(["--concurrency", "4", "--duration", "700ms", "--carts", "20"])
        .args(["--mix", "add=50,set=10,remove=10,read=20,checkout=10"])
        .arg("--json")
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
    let _ = std::fs::remove_dir_all(&dir);
    assert!(report["requests"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["p99_ms"].as_f64().unwrap() >= report["p50_ms"].as_f64().unwrap());
    // The node took the writes: it stores carts. (Not its delta log: with no peers, the
    // log is trimmed as soon as it is committed.)
    assert!(
        meridian_cart_store::storage::count(&node.storage, meridian_cart_store::Cf::Carts).unwrap()
            > 0
    );
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    for (args, want) in [
        (vec!["--mix", "buy=1"], "unknown operation"),
        (vec!["--target", "ftp://x"], "must start with http://"),
        (vec!["--duration", "5 parsecs"], "unit must be ms, s or m"),
        (vec!["--duration", "soon"], "not a duration"),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn nothing_listening_is_an_error_not_a_silent_zero() {
    let port = meridian_testkit::free_port().unwrap();
    let out = Command::new(BIN)
        .args(["--target", &format!("http://127.0.0.1:{port}")])
        .args(["--concurrency", "1", "--duration", "300ms"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("every request failed"));
}
