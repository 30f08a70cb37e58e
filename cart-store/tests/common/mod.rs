//! What the process tests share: a real `cart-store` node on a free loopback port.
#![allow(dead_code)] // each test binary uses a different part

pub mod cluster;
pub mod mesh;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cart-store");

pub fn free_port() -> u16 {
    meridian_testkit::free_port().expect("a free loopback port")
}

pub fn write_config(dir: &Path, node_id: u64, port: u16, extra: &str) -> PathBuf {
    let path = dir.join(format!("node-{port}.toml"));
    let text = format!(
        "region = \"virginia\"\nnode_id = {node_id}\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{port}\"\n{extra}\n",
        dir.join("data").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub struct NodeProc {
    pub child: Child,
    pub base: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl NodeProc {
    /// Starts the node and waits until `/health` answers.
    pub fn start(dir: &Path, node_id: u64, extra: &str) -> NodeProc {
        let port = free_port();
        let config = write_config(dir, node_id, port, extra);
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = drain_stderr(&mut child);
        let mut node = NodeProc {
            child,
            base: format!("http://127.0.0.1:{port}"),
            stderr: Some(stderr),
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
                panic!(
                    "cart-store exited early ({status}): {}",
                    node.stderr_after_exit()
                );
            }
            assert!(
                Instant::now() < deadline,
                "cart-store did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Opens a raw TCP connection to the node and sends `bytes`.
    pub fn raw(&self, bytes: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(self.base.trim_start_matches("http://")).unwrap();
        s.write_all(bytes).unwrap();
        s
    }

    pub fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
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

impl NodeProc {
    /// The last 64 KiB the node wrote to stderr. Waits for the node to exit: call it after
    /// `try_wait` said so.
    pub fn stderr_after_exit(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the node's stderr until it exits, so that a node logging a lot (a 5xx is logged at
/// ERROR) never blocks on a full pipe; returns its last 64 KiB.
pub fn drain_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        const KEEP: usize = 64 << 10;
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * KEEP {
                kept.drain(..kept.len() - KEEP);
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}
