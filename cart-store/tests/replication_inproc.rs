//! Three regions in one process (`Server::start`, real QUIC with mutual TLS on loopback,
//! real RocksDB), partitioned with the transport's fault hook ([`Faults`]): tokyo cut off
//! and healed, converging to CONTRACT.md's answers; a non-transitive partition
//! (virginia–tokyo cut, frankfurt linked to both) bridged by forwarding; and
//! read-your-writes across regions with `Causal-Token`. Needs no root.
//!
//! Run with `--nocapture` to see the progress lines.

use meridian_cart_store::config::Config;
use meridian_cart_store::demo::{call, request};
use meridian_cart_store::server::Server;
use meridian_cart_store::transport::Faults;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

type Lines = BTreeMap<String, u64>;

const REGIONS: [&str; 3] = ["virginia", "frankfurt", "tokyo"];

struct Region {
    name: &'static str,
    http: SocketAddr,
    faults: Faults,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Regions {
    r: Vec<Region>,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Regions {
    async fn start() -> Regions {
        let dir = tempfile::Builder::new()
            .prefix("meridian-inproc-")
            .tempdir()
            .unwrap();
        let names: Vec<String> = REGIONS.iter().map(|r| (*r).to_owned()).collect();
        let certs = dir.path().join("certs");
        meridian_cart_store::certs::write_dev_certs(&certs, &names).unwrap();
        let ports: Vec<u16> = REGIONS
            .iter()
            .map(|_| {
                std::net::UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let mut r = Vec::new();
        for (i, name) in REGIONS.iter().enumerate() {
            let config = Config::parse(&config_text(dir.path(), &certs, i, &ports)).unwrap();
            let server = Server::start(&config)
                .await
                .unwrap_or_else(|e| panic!("starting {name}: {e}"));
            let faults = server
                .faults()
                .cloned()
                .unwrap_or_else(|| panic!("{name}: replication did not start"));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let http = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                server
                    .run(listener, async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{name} stopped with {e}"));
            });
            r.push(Region {
                name,
                http,
                faults,
                stop: Some(stop),
                task: Some(task),
            });
        }
        let regions = Regions {
            r,
            started: Instant::now(),
            _dir: dir,
        };
        regions.say("three regions up (in-process, QUIC on loopback)");
        regions
    }

    fn say(&self, what: &str) {
        eprintln!("[{:>6.2}s] {what}", self.started.elapsed().as_secs_f64());
    }

    async fn shutdown(mut self) {
        for r in &mut self.r {
            if let Some(s) = r.stop.take() {
                let _ = s.send(());
            }
        }
        for r in &mut self.r {
            if let Some(t) = r.task.take() {
                t.await.expect("a region's task panicked");
            }
        }
    }

    async fn status(&self, i: usize) -> Value {
        let (s, v) = call(self.r[i].http, "GET", "/replication", None)
            .await
            .unwrap();
        assert_eq!(s, 200, "/replication on {}: {v}", self.r[i].name);
        v
    }

    /// Everything `/replication` says, for failure messages.
    async fn diagnostics(&self) -> String {
        let mut out = String::new();
        for i in 0..self.r.len() {
            out += &format!("\n{}: {}", self.r[i].name, self.status(i).await);
        }
        out
    }

    async fn cart(&self, i: usize, cart: &str) -> Lines {
        let (s, v) = call(self.r[i].http, "GET", &format!("/carts/{cart}"), None)
            .await
            .unwrap();
        assert_eq!(s, 200, "GET /carts/{cart} on {}: {v}", self.r[i].name);
        lines_of(&v)
    }

    /// A write that must be acknowledged: the cart after it.
    async fn write(&self, i: usize, method: &str, path: &str, body: Option<&str>) -> Lines {
        let (s, v) = call(self.r[i].http, method, path, body).await.unwrap();
        assert_eq!(s, 200, "{method} {path} on {}: {v}", self.r[i].name);
        lines_of(&v)
    }

    /// Whether link `i -> peer` is up, per node `i`'s `/replication`.
    async fn connected(&self, i: usize, peer: &str) -> bool {
        let v = self.status(i).await;
        v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["region"] == peer && p["connected"] == true)
    }

    /// Polls `check` every 20 ms; panics after `within` naming `what`, with its last answer
    /// and every node's `/replication`. Returns the time it took.
    async fn wait_for<F, Fut>(&self, what: &str, within: Duration, check: F) -> Duration
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let start = Instant::now();
        loop {
            match check().await {
                Ok(()) => return start.elapsed(),
                Err(e) if start.elapsed() > within => panic!(
                    "{what}: not within {:.1} s; last: {e}{}",
                    within.as_secs_f64(),
                    self.diagnostics().await
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn wait_links(&self, within: Duration, want: &[(usize, usize, bool)]) -> Duration {
        self.wait_for("peer links in the wanted state", within, || async {
            for &(i, j, up) in want {
                if self.connected(i, REGIONS[j]).await != up {
                    return Err(format!(
                        "{} -> {} is not {}",
                        REGIONS[i],
                        REGIONS[j],
                        if up { "up" } else { "down" }
                    ));
                }
            }
            Ok(())
        })
        .await
    }

    async fn wait_all_connected(&self) {
        let all: Vec<(usize, usize, bool)> = (0..3)
            .flat_map(|i| (0..3).filter(move |j| *j != i).map(move |j| (i, j, true)))
            .collect();
        let t = self.wait_links(Duration::from_secs(20), &all).await;
        self.say(&format!(
            "all peer links connected after {:.2} s",
            t.as_secs_f64()
        ));
    }

    /// Waits until every node returns the same lines for each of `carts`: those lines.
    async fn wait_converged(&self, carts: &[&str], within: Duration) -> (Vec<Lines>, Duration) {
        let t = self
            .wait_for("every node holding identical carts", within, || async {
                for c in carts {
                    let mut views = Vec::new();
                    for i in 0..3 {
                        views.push(self.cart(i, c).await);
                    }
                    if views.iter().any(|v| *v != views[0]) {
                        return Err(format!("{c}: {views:?}"));
                    }
                }
                Ok(())
            })
            .await;
        let mut out = Vec::new();
        for c in carts {
            out.push(self.cart(0, c).await);
        }
        self.say(&format!(
            "{carts:?} identical everywhere after {:.2} s",
            t.as_secs_f64()
        ));
        (out, t)
    }

    /// Cuts (or heals) the link between regions `i` and `j`, at both ends.
    fn cut(&self, i: usize, j: usize, cut: bool) {
        for (a, b) in [(i, j), (j, i)] {
            if cut {
                self.r[a].faults.cut(REGIONS[b]);
            } else {
                self.r[a].faults.heal(REGIONS[b]);
            }
        }
    }
}

fn config_text(dir: &Path, certs: &Path, i: usize, ports: &[u16]) -> String {
    let name = REGIONS[i];
    let mut peers = String::new();
    for (j, other) in REGIONS.iter().enumerate() {
        if j != i {
            peers += &format!(
                "[[peers]]\nregion = \"{other}\"\naddress = \"127.0.0.1:{}\"\n",
                ports[j]
            );
        }
    }
    format!(
        "region = \"{name}\"\nnode_id = {id}\ndata_dir = \"{data}\"\nhttp_listen = \"127.0.0.1:0\"\n\
         peer_listen = \"127.0.0.1:{port}\"\n\
         replication_resend_timeout_ms = 500\nreplication_forward_after_ms = 500\n\
         peer_reconnect_delay_max_ms = 500\ncausal_wait_ms = 300\n\
         [tls]\nca_cert = \"{c}/ca.pem\"\ncert = \"{c}/{name}.pem\"\nkey = \"{c}/{name}.key\"\n{peers}",
        id = i + 1,
        data = dir.join(name).display(),
        port = ports[i],
        c = certs.display(),
    )
}

fn lines_of(v: &Value) -> Lines {
    v["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {v}"))
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap().to_owned(),
                l["quantity"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn lines(pairs: &[(&str, u64)]) -> Lines {
    pairs.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect()
}

const ALICE: &str = "/carts/alice/items";

/// Tokyo cut from both peers (both ends of both links), both sides writing, the heal: every
/// region converges to the table's answers (add wins over a concurrent remove, the later
/// set wins, a set's base plus an unseen concurrent add, a clear keeps only the unseen add).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokyo_cut_off_and_healed_converges_to_the_contract_answers() {
    let rs = Regions::start().await;
    rs.wait_all_connected().await;
    let (va, fr, tk) = (0, 1, 2);

    rs.write(tk, "POST", ALICE, Some(r#"{"sku":"tea","quantity":3}"#))
        .await;
    rs.write(fr, "POST", ALICE, Some(r#"{"sku":"pen","quantity":2}"#))
        .await;
    rs.write(va, "POST", ALICE, Some(r#"{"sku":"cup","quantity":2}"#))
        .await;
    rs.write(
        va,
        "POST",
        "/carts/bob/items",
        Some(r#"{"sku":"lamp","quantity":1}"#),
    )
    .await;
    let (before, _) = rs
        .wait_converged(&["alice", "bob"], Duration::from_secs(10))
        .await;
    assert_eq!(before[0], lines(&[("cup", 2), ("pen", 2), ("tea", 3)]));

    rs.cut(va, tk, true);
    rs.cut(fr, tk, true);
    let t = rs
        .wait_links(
            Duration::from_secs(10),
            &[
                (va, tk, false),
                (fr, tk, false),
                (tk, va, false),
                (tk, fr, false),
            ],
        )
        .await;
    rs.say(&format!(
        "tokyo cut off (links down after {:.2} s)",
        t.as_secs_f64()
    ));

    let after_remove = rs.write(va, "DELETE", "/carts/alice/items/tea", None).await;
    assert_eq!(after_remove.get("tea"), None);
    let l = rs
        .write(tk, "POST", ALICE, Some(r#"{"sku":"tea","quantity":2}"#))
        .await;
    assert_eq!(l.get("tea"), Some(&5));
    rs.write(
        fr,
        "PUT",
        "/carts/alice/items/pen",
        Some(r#"{"quantity":5}"#),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    rs.write(
        tk,
        "PUT",
        "/carts/alice/items/pen",
        Some(r#"{"quantity":1}"#),
    )
    .await;
    rs.write(
        va,
        "PUT",
        "/carts/alice/items/cup",
        Some(r#"{"quantity":4}"#),
    )
    .await;
    let l = rs
        .write(tk, "POST", ALICE, Some(r#"{"sku":"cup","quantity":1}"#))
        .await;
    assert_eq!(l.get("cup"), Some(&3));
    rs.write(va, "DELETE", "/carts/bob", None).await;
    rs.write(
        tk,
        "POST",
        "/carts/bob/items",
        Some(r#"{"sku":"rug","quantity":1}"#),
    )
    .await;

    // The other side converges among itself; tokyo sees none of it.
    let t = rs
        .wait_for(
            "virginia and frankfurt agreeing while tokyo is cut",
            Duration::from_secs(10),
            || async {
                let (a, b) = (rs.cart(va, "alice").await, rs.cart(fr, "alice").await);
                let want = lines(&[("cup", 4), ("pen", 5)]);
                if a == want && b == want {
                    Ok(())
                } else {
                    Err(format!("virginia {a:?} frankfurt {b:?}"))
                }
            },
        )
        .await;
    rs.say(&format!(
        "virginia and frankfurt agree after {:.2} s",
        t.as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        rs.cart(tk, "alice").await,
        lines(&[("cup", 3), ("pen", 1), ("tea", 5)]),
        "tokyo diverges while cut: it saw none of the other side's writes"
    );
    assert_eq!(rs.cart(tk, "bob").await, lines(&[("lamp", 1), ("rug", 1)]));
    rs.say("tokyo diverged while cut");

    rs.cut(va, tk, false);
    rs.cut(fr, tk, false);
    let (after, took) = rs
        .wait_converged(&["alice", "bob"], Duration::from_secs(20))
        .await;
    eprintln!(
        "converged {:.2} s after the heal: alice {:?} bob {:?}",
        took.as_secs_f64(),
        after[0],
        after[1]
    );
    assert_eq!(
        after[0].get("tea"),
        Some(&2),
        "add ‖ remove: the unseen add of 2 survives, the removed 3 do not come back"
    );
    assert_eq!(
        after[0].get("pen"),
        Some(&1),
        "set ‖ set: the later set (tokyo's pen = 1) wins"
    );
    assert_eq!(
        after[0].get("cup"),
        Some(&5),
        "set(4) ‖ add(1): the set fixes the base, the unseen add counts on top"
    );
    assert_eq!(after[0].len(), 3, "{:?}", after[0]);
    assert_eq!(
        after[1],
        lines(&[("rug", 1)]),
        "clear ‖ add: the cart keeps only the unseen add"
    );
    rs.wait_all_connected().await;
    rs.shutdown().await;
}

/// virginia–tokyo cut at both ends, frankfurt linked to both: writes in virginia reach
/// tokyo (and tokyo's reach virginia) through frankfurt's forwarding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_transitive_partition_is_bridged_by_forwarding() {
    let rs = Regions::start().await;
    rs.wait_all_connected().await;
    let (va, fr, tk) = (0, 1, 2);
    rs.cut(va, tk, true);
    rs.wait_links(
        Duration::from_secs(10),
        &[
            (va, tk, false),
            (tk, va, false),
            (va, fr, true),
            (fr, tk, true),
        ],
    )
    .await;
    rs.say("virginia–tokyo cut; frankfurt linked to both");

    for (from, to, cart) in [(va, tk, "nt-va"), (tk, va, "nt-tk")] {
        rs.write(
            from,
            "POST",
            &format!("/carts/{cart}/items"),
            Some(r#"{"sku":"probe","quantity":1}"#),
        )
        .await;
        let t = rs
            .wait_for(
                &format!(
                    "{}'s write visible in {} through frankfurt",
                    REGIONS[from], REGIONS[to]
                ),
                Duration::from_secs(5),
                || async {
                    let l = rs.cart(to, cart).await;
                    if l == lines(&[("probe", 1)]) {
                        Ok(())
                    } else {
                        Err(format!("{l:?}"))
                    }
                },
            )
            .await;
        rs.say(&format!(
            "{}'s write visible in {} after {:.2} s (forwarded by frankfurt; bound 5 s)",
            REGIONS[from],
            REGIONS[to],
            t.as_secs_f64()
        ));
        // Still cut: the write went through frankfurt.
        assert!(!rs.connected(from, REGIONS[to]).await);
    }
    let fwd = rs.status(fr).await;
    eprintln!(
        "frankfurt's peers after forwarding: {}",
        fwd["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!(
                "{} forwarding={} entries_sent={}",
                p["region"], p["forwarding"], p["entries_sent"]
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    rs.cut(va, tk, false);
    rs.wait_all_connected().await;
    rs.wait_converged(&["nt-va", "nt-tk"], Duration::from_secs(10))
        .await;
    rs.shutdown().await;
}

/// One request with extra headers: the status, the `Retry-After` header and the JSON body.
async fn call_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Value) {
    let (status, h, bytes) = request(addr, method, path, body, headers).await.unwrap();
    let retry = h
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        retry,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Read-your-writes across regions: a write's `Causal-Token` taken to another region is
/// served there once that region has applied it; while the regions are cut apart the same
/// read is 503 with `Retry-After`, naming the region it waits for, never a stale cart; after
/// the heal it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_causal_token_is_served_in_another_region_only_once_applied_there() {
    let rs = Regions::start().await;
    rs.wait_all_connected().await;
    let (va, tk) = (0, 2);
    let (s, _, v) = call_with(
        rs.r[va].http,
        "POST",
        "/carts/ryw/items",
        Some(r#"{"sku":"book","quantity":1}"#),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let (s, _, v) = call_with(
        rs.r[tk].http,
        "GET",
        "/carts/ryw",
        None,
        &[("causal-token", &token)],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        lines_of(&v),
        lines(&[("book", 1)]),
        "tokyo waited for the write"
    );

    // Cut tokyo off from both peers, write again in virginia: tokyo cannot cover the token.
    rs.cut(va, tk, true);
    rs.cut(1, tk, true);
    rs.wait_links(Duration::from_secs(10), &[(va, tk, false), (1, tk, false)])
        .await;
    let (s, _, v) = call_with(
        rs.r[va].http,
        "POST",
        "/carts/ryw/items",
        Some(r#"{"sku":"pen","quantity":2}"#),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let (s, retry, v) = call_with(
        rs.r[tk].http,
        "GET",
        "/carts/ryw",
        None,
        &[("causal-token", &token)],
    )
    .await;
    assert_eq!(s, 503, "never a stale answer: {v}");
    assert!(retry.is_some(), "503 carries Retry-After");
    assert_eq!(v["error"]["code"], "causal_wait_timeout", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("region virginia"), "{message}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it waited causal_wait_ms first"
    );

    rs.cut(va, tk, false);
    rs.cut(1, tk, false);
    let (s, _, v) = call_with(
        rs.r[tk].http,
        "GET",
        "/carts/ryw",
        None,
        &[("causal-token", &token)],
    )
    .await;
    let v = if s == 503 {
        // The heal may take longer than one causal wait: the reconnect, then the deltas.
        rs.wait_all_connected().await;
        let (s, _, v) = call_with(
            rs.r[tk].http,
            "GET",
            "/carts/ryw",
            None,
            &[("causal-token", &token)],
        )
        .await;
        assert_eq!(s, 200, "{v}");
        v
    } else {
        assert_eq!(s, 200, "{v}");
        v
    };
    assert_eq!(lines_of(&v), lines(&[("book", 1), ("pen", 2)]));
    // The peers' clock offsets are exported (same machine: within a second).
    let text = metrics_text(rs.r[tk].http).await;
    let offset = text
        .lines()
        .find(|l| l.starts_with("cart_store_peer_clock_offset_ms{peer=\"virginia\"}"))
        .unwrap_or_else(|| panic!("no clock offset for virginia in\n{text}"));
    let ms: i64 = offset.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(ms.abs() < 1000, "{offset}");
    rs.shutdown().await;
}

async fn metrics_text(addr: SocketAddr) -> String {
    let (_, _, bytes) = request(addr, "GET", "/metrics", None, &[]).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}
