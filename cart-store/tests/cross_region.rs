//! What a client and an operator see across regions, with real `cart-store serve`
//! processes: read-your-writes with a `Causal-Token` (in network namespaces, so a
//! partition is a link really going down), an idempotent checkout retried in another
//! region, and one request followed across every region's log by its id.
//!
//! Run with `--nocapture` to see the progress lines.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

mod common;

use common::client;
use common::cluster::{Cluster, Netns, Op};
use serde_json::Value;

/// One cluster at a time: the machine may have two cores.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `(status, headers, body)` of a request.
fn call(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status().as_u16();
    let h = r.headers().clone();
    let text = r.text().unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, h, v)
}

/// Read-your-writes across regions: a read in frankfurt carrying virginia's token shows
/// virginia's write. While frankfurt is cut off, the same kind of read answers 503 with
/// `Retry-After`, naming virginia: never a stale cart. After the heal it succeeds.
#[test]
fn a_causal_token_reads_your_writes_in_another_region_and_never_stale() {
    let _serial = serial();
    let net = match Netns::setup(3) {
        Ok(n) => n,
        Err(why) => {
            eprintln!("SKIP: this test needs root and iproute2 (network namespaces): {why}");
            return;
        }
    };
    let cluster = Cluster::start_with(3, Some(net), "causal_wait_ms = 300\n");
    cluster.wait_connected(Duration::from_secs(20));
    let (va, fr) = (cluster.node(0), cluster.node(1));
    let add = |sku: &str| serde_json::json!({"sku": sku, "quantity": 1});

    let (s, _, v) = call(
        reqwest::Method::POST,
        &va.url("/carts/ryw/items"),
        &[],
        Some(add("tea")),
    );
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let (s, _, v) = call(
        reqwest::Method::GET,
        &fr.url("/carts/ryw"),
        &[("Causal-Token", &token)],
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["lines"][0]["sku"], "tea",
        "frankfurt shows virginia's write: {v}"
    );
    cluster.say("frankfurt served virginia's token with virginia's write");

    // Cut frankfurt off; virginia writes again.
    cluster.net.as_ref().unwrap().cut(1);
    let (s, _, v) = call(
        reqwest::Method::POST,
        &va.url("/carts/ryw/items"),
        &[],
        Some(add("pen")),
    );
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let (s, h, v) = call(
            reqwest::Method::GET,
            &fr.url("/carts/ryw"),
            &[("Causal-Token", &token)],
            None,
        );
        assert_eq!(s, 503, "a stale read must not be served: {v}");
        assert!(h.get("retry-after").is_some(), "{h:?}");
        assert_eq!(v["error"]["code"], "causal_wait_timeout", "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("virginia"),
            "the error names the region waited on: {msg}"
        );
    }
    cluster.say("cut off: 503 causal_wait_timeout naming virginia, never stale");

    cluster.net.as_ref().unwrap().heal(1);
    let (_, t) = cluster.wait_for(
        "frankfurt serves the token after the heal",
        Duration::from_secs(30),
        || {
            let (s, _, v) = call(
                reqwest::Method::GET,
                &fr.url("/carts/ryw"),
                &[("Causal-Token", &token)],
                None,
            );
            if s != 200 {
                return Err(format!("{s}: {v}"));
            }
            let skus: Vec<&str> = v["lines"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|l| l["sku"].as_str())
                .collect();
            if skus == ["pen", "tea"] {
                Ok(())
            } else {
                Err(format!("a 200 without the write: {v}"))
            }
        },
    );
    cluster.say(&format!(
        "healed: served with both writes {:.2} s later",
        t.as_secs_f64()
    ));
}

/// A checkout retried with the same `Idempotency-Key` in another region, after the first
/// has replicated, replays the first order: same body, `Idempotent-Replayed: true`, and no
/// second order. The same key with another request is refused there too.
#[test]
fn an_idempotent_checkout_retried_in_another_region_replays_the_first_order() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    cluster.wait_connected(Duration::from_secs(20));
    let (va, to) = (cluster.node(0), cluster.node(2));
    va.write(&Op::add("pay", "tea", 2));
    va.write(&Op::add("pay", "pen", 1));
    let key = [("Idempotency-Key", "checkout-pay-1")];
    let (s, h, first) = call(
        reqwest::Method::POST,
        &va.url("/carts/pay/checkout"),
        &key,
        None,
    );
    assert_eq!(s, 200, "{first}");
    assert!(h.get("idempotent-replayed").is_none());
    cluster.wait_caught_up(Duration::from_secs(20));

    // The client timed out after the charge and retries in tokyo.
    let (s, h, again) = call(
        reqwest::Method::POST,
        &to.url("/carts/pay/checkout"),
        &key,
        None,
    );
    assert_eq!(s, 200, "{again}");
    assert_eq!(
        h.get("idempotent-replayed").map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(
        again["order"], first["order"],
        "the same order: {again} vs {first}"
    );
    assert_eq!(again["lines"], first["lines"]);
    // No second order: the cart stays empty (a second checkout of an empty cart would be
    // a 409), and nothing new was written in tokyo.
    assert!(to.cart("pay").is_empty());
    let tokyo_seq = to.replication()["applied"]["3"].as_u64().unwrap_or(0);
    assert_eq!(tokyo_seq, 0, "tokyo made no write of its own");
    // The same key with another request: refused in tokyo too.
    let (s, _, v) = call(
        reqwest::Method::POST,
        &to.url("/carts/pay/items"),
        &key,
        Some(serde_json::json!({"sku": "cup", "quantity": 1})),
    );
    assert_eq!(s, 422, "{v}");
    cluster.say("tokyo replayed virginia's order; a different request with the key is refused");
}

/// One write's request id appears in every region's log: at the origin when it commits,
/// and in each other region when it applies it.
#[test]
fn a_request_id_follows_a_write_into_every_region_log() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    cluster.wait_connected(Duration::from_secs(20));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("trace-{:x}", nanos ^ u128::from(std::process::id()));
    let (s, h, v) = call(
        reqwest::Method::POST,
        &cluster.node(1).url("/carts/traced/items"),
        &[("X-Request-Id", &id)],
        Some(serde_json::json!({"sku": "tea", "quantity": 1})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.get("x-request-id").unwrap().to_str().unwrap(), id);
    cluster.wait_for(
        "every region logs the request id",
        Duration::from_secs(20),
        || {
            for n in &cluster.nodes {
                let log = n.log_tail(1 << 20);
                let lines: Vec<&str> = log.lines().filter(|l| l.contains(&id)).collect();
                let want = if n.region == "frankfurt" {
                    "write committed"
                } else {
                    "write applied from another region"
                };
                if !lines.iter().any(|l| l.contains(want)) {
                    return Err(format!(
                        "{}: no {want:?} line with {id}: {lines:?}",
                        n.region
                    ));
                }
            }
            Ok(())
        },
    );
    for n in &cluster.nodes {
        for l in n.log_tail(1 << 20).lines().filter(|l| l.contains(&id)) {
            cluster.say(&format!(
                "{}: {}",
                n.region,
                l.chars().take(220).collect::<String>()
            ));
        }
    }
}
