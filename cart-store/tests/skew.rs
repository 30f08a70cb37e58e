//! Clock skew with real processes: one region runs an hour fast under libfaketime
//! (Debian's `faketime`, preloaded into the node; `FAKETIME_DONT_FAKE_MONOTONIC=1` keeps
//! `Instant`, and so tokio's and quinn's timers, on real time, while `SystemTime` (the HLC's
//! physical clock, and the TLS validity check) runs ahead).
//!
//! The contract (docs/CONTRACT.md, "Clock skew"): a write stamped more than
//! `max_clock_offset_ms` ahead of a receiver's clock is held back there: not applied, not
//! acknowledged, kept and resent by its sender, applied once the receiver's clock has
//! caught up. So the fast region cannot win `set` races while it is ahead, the receivers'
//! HLCs never move past the bound, and nothing is lost.
//!
//! Run with `--nocapture` to see the progress lines.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::cluster::{Cluster, Op, Proc};
use common::BIN;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const TOKYO: usize = 2;

/// libfaketime's environment: the wall clock `offset` ahead, monotonic time untouched.
fn faketime(offset: &str) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), LIBFAKETIME.into()),
        ("FAKETIME".into(), offset.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        // Read FAKETIME once, not on every clock call.
        ("FAKETIME_NO_CACHE".into(), "0".into()),
    ]
}

/// Restarts node `i` with `env` (kill -9 first).
fn restart_with(cluster: &mut Cluster, i: usize, env: Vec<(String, String)>) {
    cluster.kill9(i);
    cluster.nodes[i].env = env;
    cluster.restart(i);
}

fn peer_status(node: &Proc, peer: &str) -> serde_json::Value {
    node.replication()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["region"] == peer)
        .cloned()
        .unwrap()
}

fn held_back_metric(node: &Proc, peer: &str) -> f64 {
    let text = common::client()
        .get(node.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("cart_store_deltas_held_back") && l.contains(&format!("peer=\"{peer}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `cart-store serve` on `config` as a one-off: it must exit (refusing to start) within
/// 20 s. Returns its stderr.
fn refused_start(config: &Path) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(!status.success(), "it started: {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node did not refuse to start within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_region_an_hour_fast_cannot_win_and_loses_nothing() {
    if !Path::new(LIBFAKETIME).exists() {
        eprintln!(
            "SKIP: libfaketime is missing (install Debian's faketime: apt-get install -y \
             faketime; `cargo xtask test` does it as root)"
        );
        return;
    }
    let mut cluster = Cluster::start(3);
    // Tokyo runs an hour fast from here on.
    restart_with(&mut cluster, TOKYO, faketime("+1h"));
    cluster.wait_connected(Duration::from_secs(30));
    let (va, fr, to) = (0, 1, TOKYO);

    // 1. Tokyo sets, then (later in real time) virginia sets the same line. Tokyo's HLC is an
    // hour ahead, so by timestamps its set would win: held back, it cannot.
    cluster.node(to).write(&Op::set("race", "tea", 5));
    cluster.node(to).write(&Op::add("tokyo-only", "pen", 2));
    std::thread::sleep(Duration::from_millis(300));
    cluster.node(va).write(&Op::set("race", "tea", 3));
    let (_, t) = cluster.wait_for(
        "virginia and frankfurt hold back tokyo's writes",
        Duration::from_secs(20),
        || {
            for i in [va, fr] {
                let n = cluster.node(i);
                if held_back_metric(n, "tokyo") < 1.0 {
                    return Err(format!("{}: nothing held back yet", n.region));
                }
                let tea = n.cart("race").get("tea").copied();
                if tea != Some(3) {
                    return Err(format!("{}: tea is {tea:?}", n.region));
                }
            }
            Ok(())
        },
    );
    cluster.say(&format!(
        "tokyo's set is held back: tea = 3 in virginia and frankfurt ({:.2} s)",
        t.as_secs_f64()
    ));
    // Let resends come and go: still held back, still 3.
    std::thread::sleep(Duration::from_secs(2));
    for i in [va, fr] {
        let n = cluster.node(i);
        assert_eq!(n.cart("race").get("tea"), Some(&3), "{}", n.region);
        assert!(
            n.cart("tokyo-only").is_empty(),
            "{}: applied a held-back write",
            n.region
        );
        let p = peer_status(n, "tokyo");
        let offset = p["clock_offset_ms"].as_i64().unwrap();
        assert!(
            (3_500_000..3_700_000).contains(&offset),
            "{} sees tokyo's offset as {offset} ms",
            n.region
        );
        cluster.say(&format!("{}: tokyo's clock_offset_ms = {offset}", n.region));
    }
    // The receivers' HLCs did not follow tokyo's: each restarts without tripping its own
    // persisted-bound check (a bound an hour ahead would refuse the start).
    cluster.kill9(va);
    cluster.restart(va);
    cluster.say("virginia restarts: its HLC bound never moved past max_clock_offset_ms");

    // 2. Restart after a large skew. Tokyo's clock is corrected, but its persisted HLC
    // bound is an hour ahead of real time: it refuses to start, naming the gap and the
    // override.
    cluster.kill9(to);
    let config = cluster.node(to).config.clone();
    let err = refused_start(&config);
    assert!(err.contains("clock_bound_override"), "{err}");
    assert!(err.contains("ahead"), "the message names the gap: {err}");
    cluster.say(&format!(
        "tokyo on a correct clock refuses to start: {}",
        err.lines()
            .last()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect::<String>()
    ));
    // With the override it starts, its data intact, and replicates: the others' writes
    // reach it at once, while its own new writes, stamped from the bound (an hour ahead),
    // are held back by the others like before.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("clock_bound_override = true\n{text}")).unwrap();
    cluster.nodes[to].env = Vec::new();
    cluster.restart(to);
    cluster.wait_connected(Duration::from_secs(30));
    assert_eq!(cluster.node(to).cart("tokyo-only").get("pen"), Some(&2));
    cluster.node(va).write(&Op::add("after-override", "cup", 1));
    cluster.node(to).write(&Op::add("after-override", "mug", 1));
    cluster.wait_for(
        "tokyo applies virginia's new write",
        Duration::from_secs(20),
        || match cluster.node(to).cart("after-override").get("cup") {
            Some(1) => Ok(()),
            other => Err(format!("cup is {other:?}")),
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !cluster.node(va).cart("after-override").contains_key("mug"),
        "tokyo's write, stamped an hour ahead, is held back"
    );
    cluster.say("with clock_bound_override tokyo starts: it gets the others' writes; its own wait");

    // 3. Virginia and frankfurt's clocks catch up (they run an hour and two minutes fast
    // now): the held writes are resent and applied, and by HLC tokyo's set (stamped an
    // hour after virginia's) wins, the same everywhere. Nothing was lost.
    restart_with(&mut cluster, va, faketime("+62m"));
    restart_with(&mut cluster, fr, faketime("+62m"));
    cluster.wait_connected(Duration::from_secs(30));
    let carts = [
        "race".to_owned(),
        "tokyo-only".to_owned(),
        "after-override".to_owned(),
    ];
    let (lines, t) = cluster.wait_converged(&carts, Duration::from_secs(30));
    assert_eq!(lines[0].get("tea"), Some(&5), "{lines:?}");
    assert_eq!(lines[1].get("pen"), Some(&2), "{lines:?}");
    assert_eq!(lines[2].get("cup"), Some(&1), "{lines:?}");
    assert_eq!(lines[2].get("mug"), Some(&1), "{lines:?}");
    cluster.say(&format!(
        "clocks caught up: the held writes applied, tea = 5 everywhere, nothing lost ({:.2} s)",
        t.as_secs_f64()
    ));
}
