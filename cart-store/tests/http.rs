//! The HTTP API in-process (axum router over `MemStorage`): every endpoint and every error
//! class, with the JSON error shape.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use meridian_cart_store::server::{Server, ServerSettings};
use meridian_cart_store::{
    Batch, Cf, Durability, MemStorage, Node, NodeConfig, Storage, StorageError, StorageErrorKind,
};
use meridian_clocks::{ReplicaId, SystemClock};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

fn settings() -> ServerSettings {
    ServerSettings {
        region: "virginia".into(),
        write_batch_max: 64,
        write_queue_max: 64,
        causal_wait: Duration::from_millis(100),
        ..ServerSettings::default()
    }
}

struct App {
    _server: Server,
    router: Router,
    storage: MemStorage,
}

fn app_with(node_config: NodeConfig, s: ServerSettings) -> App {
    let storage = MemStorage::new();
    let dyn_storage: Arc<dyn Storage> = Arc::new(storage.clone());
    let node = Node::open(dyn_storage, SystemClock, node_config).unwrap();
    let server = Server::with_node(node, s);
    App {
        router: server.router(),
        _server: server,
        storage,
    }
}

fn app() -> App {
    app_with(NodeConfig::new(ReplicaId(1)), settings())
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
}

impl App {
    async fn call(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    async fn send(&self, method: &str, uri: &str, body: Option<Value>) -> Resp {
        let b = Request::builder().method(method).uri(uri);
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        };
        self.call(req.unwrap()).await
    }

    async fn raw(&self, method: &str, uri: &str, ct: Option<&str>, body: &str) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        self.call(b.body(Body::from(body.to_owned())).unwrap())
            .await
    }
}

/// Asserts the JSON error shape, status and code; returns the message.
fn error(r: &Resp, status: u16, code: &str) -> String {
    assert_eq!(r.status.as_u16(), status, "body: {}", r.text);
    assert_eq!(r.body["error"]["code"], code, "body: {}", r.text);
    assert_eq!(
        r.headers["content-type"], "application/json",
        "body: {}",
        r.text
    );
    let m = r.body["error"]["message"].as_str().unwrap().to_owned();
    assert!(!m.is_empty());
    m
}

fn lines(r: &Resp) -> Value {
    r.body["lines"].clone()
}

#[tokio::test]
async fn health_and_replication() {
    let a = app();
    let r = a.send("GET", "/health", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "ok");
    assert_eq!(r.body["region"], "virginia");
    let r = a.send("GET", "/replication", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["peers"], json!([]));
    assert_eq!(r.body["node_id"], 1);
}

#[tokio::test]
async fn cart_lifecycle() {
    let a = app();
    let r = a.send("GET", "/carts/alice", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"cart": "alice", "lines": [], "token": "v1:1=0"})
    );
    assert_eq!(r.headers["causal-token"], "v1:1=0");

    let add = |sku: &str, q: u64| json!({"sku": sku, "quantity": q});
    let r = a
        .send("POST", "/carts/alice/items", Some(add("book", 2)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(lines(&r), json!([{"sku": "book", "quantity": 2}]));
    assert_eq!(r.body["token"], "v1:1=1");
    assert_eq!(r.headers["causal-token"], "v1:1=1");
    a.send("POST", "/carts/alice/items", Some(add("apple", 1)))
        .await;
    a.send("POST", "/carts/alice/items", Some(add("book", 1)))
        .await;
    let r = a.send("GET", "/carts/alice", None).await;
    assert_eq!(
        lines(&r),
        json!([{"sku": "apple", "quantity": 1}, {"sku": "book", "quantity": 3}])
    );

    let r = a
        .send(
            "PUT",
            "/carts/alice/items/book",
            Some(json!({"quantity": 7})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        lines(&r),
        json!([{"sku": "apple", "quantity": 1}, {"sku": "book", "quantity": 7}])
    );
    let r = a
        .send(
            "PUT",
            "/carts/alice/items/apple",
            Some(json!({"quantity": 0})),
        )
        .await;
    assert_eq!(lines(&r), json!([{"sku": "book", "quantity": 7}]));
    let r = a.send("DELETE", "/carts/alice/items/book", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(lines(&r), json!([]));

    a.send("POST", "/carts/alice/items", Some(add("pen", 4)))
        .await;
    let r = a.send("DELETE", "/carts/alice", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(lines(&r), json!([]));

    a.send("POST", "/carts/alice/items", Some(add("pen", 4)))
        .await;
    let r = a.send("POST", "/carts/alice/checkout", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["cart"], "alice");
    assert!(r.body["order"].as_str().unwrap().starts_with("order-1-"));
    assert_eq!(lines(&r), json!([{"sku": "pen", "quantity": 4}]));
    assert_eq!(r.headers["causal-token"], r.body["token"].as_str().unwrap());
    let r = a.send("GET", "/carts/alice", None).await;
    assert_eq!(lines(&r), json!([]));
    let r = a.send("POST", "/carts/alice/checkout", None).await;
    error(&r, 409, "empty_cart");
}

#[tokio::test]
async fn body_errors() {
    let a = app();
    let uri = "/carts/c/items";
    let ct = Some("application/json");
    let m = error(
        &a.raw("POST", uri, ct, "{\"sku\": ").await,
        400,
        "malformed_json",
    );
    assert!(m.contains("EOF") || m.contains("end of"), "{m}");
    error(
        &a.raw("POST", uri, ct, "not json").await,
        400,
        "malformed_json",
    );
    error(&a.raw("POST", uri, ct, "").await, 400, "malformed_json");
    let m = error(
        &a.raw(
            "POST",
            uri,
            Some("text/plain"),
            r#"{"sku":"a","quantity":1}"#,
        )
        .await,
        415,
        "unsupported_media_type",
    );
    assert!(m.contains("application/json"), "{m}");
    error(
        &a.raw("POST", uri, None, r#"{"sku":"a","quantity":1}"#)
            .await,
        415,
        "unsupported_media_type",
    );
    // Content-Type parameters are fine.
    let r = a
        .raw(
            "POST",
            uri,
            Some("application/json; charset=utf-8"),
            r#"{"sku":"a","quantity":1}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = error(
        &a.raw(
            "POST",
            uri,
            ct,
            r#"{"sku":"a","quantity":1,"colour":"red"}"#,
        )
        .await,
        422,
        "invalid_body",
    );
    assert!(m.contains("unknown field `colour`"), "{m}");
    let m = error(
        &a.raw("POST", uri, ct, r#"{"sku":"a"}"#).await,
        422,
        "invalid_body",
    );
    assert!(m.contains("missing field `quantity`"), "{m}");
    for overflow in [
        r#"{"sku":"a","quantity":99999999999999999999999}"#,
        r#"{"sku":"a","quantity":1e400}"#,
        r#"{"sku":"a","quantity":-1}"#,
        r#"{"sku":"a","quantity":"2"}"#,
        r#"{"sku":"a","quantity":1.5}"#,
    ] {
        let r = a.raw("POST", uri, ct, overflow).await;
        assert!(
            r.status == 422 || r.status == 400,
            "{overflow}: {} {}",
            r.status,
            r.text
        );
        assert!(r.body["error"]["message"].is_string(), "{}", r.text);
    }
    let m = error(
        &a.raw("POST", uri, ct, r#"{"sku":"a","quantity":0}"#).await,
        422,
        "invalid_quantity",
    );
    assert!(m.contains("1..=10000"), "{m}");
    error(
        &a.raw("POST", uri, ct, r#"{"sku":"a","quantity":10001}"#)
            .await,
        422,
        "invalid_quantity",
    );
    error(
        &a.raw("PUT", "/carts/c/items/a", ct, r#"{"quantity":10001}"#)
            .await,
        422,
        "invalid_quantity",
    );
    error(
        &a.raw("PUT", "/carts/c/items/a", ct, r#"{"quantity":1,"sku":"b"}"#)
            .await,
        422,
        "invalid_body",
    );
    error(
        &a.raw("POST", uri, ct, r#"{"sku":"a b","quantity":1}"#)
            .await,
        400,
        "invalid_id",
    );
    // Nothing above was applied except the one valid add.
    let r = a.send("GET", "/carts/c", None).await;
    assert_eq!(lines(&r), json!([{"sku": "a", "quantity": 1}]));
}

#[tokio::test]
async fn a_ten_megabyte_body_is_413() {
    let a = app();
    let big = format!(
        r#"{{"sku":"a","quantity":1,"pad":"{}"}}"#,
        "x".repeat(10 << 20)
    );
    let req = Request::builder()
        .method("POST")
        .uri("/carts/c/items")
        .header("content-type", "application/json")
        .header("content-length", big.len())
        .body(Body::from(big.clone()))
        .unwrap();
    let m = error(&a.call(req).await, 413, "body_too_large");
    assert!(m.contains("body_bytes_max"), "{m}");
    // Without a Content-Length (chunked), the limit holds too.
    let stream = futures_stream(big);
    let req = Request::builder()
        .method("POST")
        .uri("/carts/c/items")
        .header("content-type", "application/json")
        .body(stream)
        .unwrap();
    error(&a.call(req).await, 413, "body_too_large");
}

fn futures_stream(s: String) -> Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = s
        .into_bytes()
        .chunks(1 << 16)
        .map(|c| Ok(c.to_vec()))
        .collect();
    Body::from_stream(tokio_stream_iter(chunks))
}

fn tokio_stream_iter(
    v: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send {
    struct It(std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>);
    impl futures_core::Stream for It {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    It(v.into_iter())
}

#[tokio::test]
async fn path_errors() {
    let a = app();
    let m = error(&a.send("GET", "/carts/..", None).await, 400, "invalid_id");
    assert!(m.contains("path segment"), "{m}");
    let m = error(
        &a.send("GET", "/carts/%2e%2e", None).await,
        400,
        "invalid_id",
    );
    assert!(m.contains("percent-encoding"), "{m}");
    error(
        &a.send("GET", "/carts/%ff%fe", None).await,
        400,
        "invalid_id",
    );
    error(
        &a.send("DELETE", "/carts/a%2Fb/items/x", None).await,
        400,
        "invalid_id",
    );
    error(
        &a.send("DELETE", "/carts/c/items/..", None).await,
        400,
        "invalid_id",
    );
    let long = "x".repeat(129);
    error(
        &a.send("GET", &format!("/carts/{long}"), None).await,
        400,
        "invalid_id",
    );
    error(
        &a.send("GET", "/carts/a/../b", None).await,
        404,
        "not_found",
    );
    error(&a.send("GET", "/nope", None).await, 404, "not_found");
    error(
        &a.send("PATCH", "/carts/c", None).await,
        405,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn cart_line_limit_is_409() {
    let mut nc = NodeConfig::new(ReplicaId(1));
    nc.cart_lines_max = 2;
    let a = app_with(nc, settings());
    for sku in ["a", "b"] {
        let r = a
            .send(
                "POST",
                "/carts/c/items",
                Some(json!({"sku": sku, "quantity": 1})),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let m = error(
        &a.send(
            "POST",
            "/carts/c/items",
            Some(json!({"sku": "z", "quantity": 1})),
        )
        .await,
        409,
        "cart_full",
    );
    assert!(m.contains("2 lines"), "{m}");
}

async fn keyed(a: &App, key: &str, body: Value) -> Resp {
    let req = Request::builder()
        .method("POST")
        .uri("/carts/c/items")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .unwrap();
    a.call(req).await
}

#[tokio::test]
async fn idempotency_key_retries() {
    let a = app();
    let first = keyed(&a, "key-1", json!({"sku": "a", "quantity": 2})).await;
    assert_eq!(first.status, 200);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let retry = keyed(&a, "key-1", json!({"sku": "a", "quantity": 2})).await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.text, first.text);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(retry.headers["causal-token"], first.headers["causal-token"]);
    let r = a.send("GET", "/carts/c", None).await;
    assert_eq!(
        lines(&r),
        json!([{"sku": "a", "quantity": 2}]),
        "applied once"
    );
    let m = error(
        &keyed(&a, "key-1", json!({"sku": "a", "quantity": 3})).await,
        422,
        "idempotency_key_reused",
    );
    assert!(m.contains("key-1"), "{m}");
    error(
        &keyed(&a, "has space", json!({"sku": "a", "quantity": 3})).await,
        400,
        "invalid_idempotency_key",
    );
}

async fn with_token(a: &App, uri: &str, token: &str) -> Resp {
    let req = Request::builder()
        .uri(uri)
        .header("causal-token", token)
        .body(Body::empty())
        .unwrap();
    a.call(req).await
}

#[tokio::test]
async fn causal_tokens() {
    let a = app();
    let w = a
        .send(
            "POST",
            "/carts/c/items",
            Some(json!({"sku": "a", "quantity": 1})),
        )
        .await;
    let token = w.headers["causal-token"].to_str().unwrap().to_owned();
    let r = with_token(&a, "/carts/c", &token).await;
    assert_eq!(r.status, 200, "a covered token is served");
    assert_eq!(lines(&r), json!([{"sku": "a", "quantity": 1}]));
    let m = error(
        &with_token(&a, "/carts/c", "garbage").await,
        400,
        "invalid_causal_token",
    );
    assert!(m.contains("v1:"), "{m}");
    // A position this node has not reached, or another node's writes: 503 after the wait.
    for t in ["v1:1=99", "v1:1=1,2=5"] {
        let r = with_token(&a, "/carts/c", t).await;
        error(&r, 503, "causal_wait_timeout");
        assert_eq!(r.headers["retry-after"], "1");
    }
    // Writes wait too.
    let req = Request::builder()
        .method("DELETE")
        .uri("/carts/c")
        .header("causal-token", "v1:1=99")
        .body(Body::empty())
        .unwrap();
    error(&a.call(req).await, 503, "causal_wait_timeout");
}

#[tokio::test]
async fn slow_requests_get_504() {
    let mut s = settings();
    s.request_timeout = Duration::from_millis(50);
    s.causal_wait = Duration::from_secs(5);
    let a = app_with(NodeConfig::new(ReplicaId(1)), s);
    let m = error(&with_token(&a, "/carts/c", "v1:2=1").await, 504, "timeout");
    assert!(m.contains("50 ms"), "{m}");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let a = app();
    let req = Request::builder()
        .uri("/health")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    assert_eq!(a.call(req).await.headers["x-request-id"], "abc-123");
    let r = a.send("GET", "/carts/c", None).await;
    let first = r.headers["x-request-id"].to_str().unwrap().to_owned();
    let (prefix, n) = first.split_once('-').expect("PREFIX-COUNTER");
    assert_eq!(prefix.len(), 8, "{first}");
    assert!(n.parse::<u64>().is_ok(), "{first}");
    let r = a.send("GET", "/nope", None).await;
    let second = r.headers["x-request-id"].to_str().unwrap();
    assert_ne!(second, first, "generated ids are unique");
    // An id that could flood or forge a log line is replaced, not echoed.
    for bad in ["a b".to_owned(), "k".repeat(65), "x\ty".to_owned()] {
        let req = Request::builder()
            .uri("/health")
            .header("x-request-id", bad.as_str())
            .body(Body::empty())
            .unwrap();
        let got = a.call(req).await.headers["x-request-id"].clone();
        assert_ne!(got, bad.as_str());
        assert!(got.to_str().unwrap().split_once('-').is_some(), "{got:?}");
    }
}

#[tokio::test]
async fn a_corrupt_cart_is_a_500_and_the_node_stays_up() {
    let a = app();
    a.send(
        "POST",
        "/carts/bad/items",
        Some(json!({"sku": "a", "quantity": 1})),
    )
    .await;
    a.send(
        "POST",
        "/carts/good/items",
        Some(json!({"sku": "a", "quantity": 1})),
    )
    .await;
    let mut b = Batch::new();
    b.put(Cf::Carts, b"bad".to_vec(), vec![1, 0xff, 0xfe, 0xfd]);
    a.storage.write(&b, Durability::Process).unwrap();
    let m = error(
        &a.send("GET", "/carts/bad", None).await,
        500,
        "corrupt_data",
    );
    assert!(m.contains("\"bad\""), "{m}");
    error(
        &a.send(
            "POST",
            "/carts/bad/items",
            Some(json!({"sku": "a", "quantity": 1})),
        )
        .await,
        500,
        "corrupt_data",
    );
    assert_eq!(a.send("GET", "/health", None).await.status, 200);
    let r = a.send("GET", "/carts/good", None).await;
    assert_eq!(lines(&r), json!([{"sku": "a", "quantity": 1}]));
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let a = app();
    a.send(
        "POST",
        "/carts/c/items",
        Some(json!({"sku": "a", "quantity": 1})),
    )
    .await;
    a.send("GET", "/carts/c", None).await;
    a.send("GET", "/nope", None).await;
    let r = a.send("GET", "/metrics", None).await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for want in [
        r#"cart_store_http_requests_total{route="/carts/{cart}/items",method="POST",status="200"} 1"#,
        r#"cart_store_http_requests_total{route="/carts/{cart}",method="GET",status="200"} 1"#,
        r#"cart_store_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        "cart_store_http_request_duration_seconds_bucket{",
        "cart_store_storage_write_duration_seconds_count 1",
        "cart_store_carts_stored 1",
        "cart_store_write_batch_size_count 1",
    ] {
        assert!(r.text.contains(want), "missing {want:?} in\n{}", r.text);
    }
    // The write's log entry, or none: a node without peers trims its log every 100 ms.
    assert!(
        r.text.contains("cart_store_delta_log_length 1")
            || r.text.contains("cart_store_delta_log_length 0"),
        "{}",
        r.text
    );
}

/// A storage whose writes can be held at a gate, or made to fail.
#[derive(Clone, Default)]
struct GatedStorage {
    inner: MemStorage,
    state: Arc<(std::sync::Mutex<Gate>, std::sync::Condvar)>,
}

#[derive(Default)]
struct Gate {
    closed: bool,
    fail: bool,
    waiting: usize,
}

impl GatedStorage {
    fn set(&self, f: impl FnOnce(&mut Gate)) {
        let (m, cv) = &*self.state;
        f(&mut m.lock().unwrap());
        cv.notify_all();
    }

    fn waiting(&self) -> usize {
        self.state.0.lock().unwrap().waiting
    }
}

impl Storage for GatedStorage {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(cf, key)
    }
    fn write(&self, batch: &Batch, durability: Durability) -> Result<(), StorageError> {
        let (m, cv) = &*self.state;
        let mut g = m.lock().unwrap();
        g.waiting += 1;
        while g.closed {
            g = cv.wait(g).unwrap();
        }
        g.waiting -= 1;
        if g.fail {
            return Err(StorageError::new(StorageErrorKind::Io, "disk on fire"));
        }
        drop(g);
        self.inner.write(batch, durability)
    }
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        self.inner.scan(cf, start, f)
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.inner.sync()
    }
}

fn gated_app(write_queue_max: usize) -> (App, GatedStorage) {
    let mut s = settings();
    s.write_queue_max = write_queue_max;
    gated_app_with(s)
}

fn gated_app_with(s: ServerSettings) -> (App, GatedStorage) {
    let storage = GatedStorage::default();
    let dyn_storage: Arc<dyn Storage> = Arc::new(storage.clone());
    let node = Node::open(dyn_storage, SystemClock, NodeConfig::new(ReplicaId(1))).unwrap();
    let server = Server::with_node(node, s);
    let app = App {
        router: server.router(),
        _server: server,
        storage: storage.inner.clone(),
    };
    (app, storage)
}

fn add_request() -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri("/carts/c/items")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"sku":"a","quantity":1}"#))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_is_503_with_retry_after() {
    let (a, gate) = gated_app(1);
    gate.set(|g| g.closed = true);
    let r1 = a.router.clone();
    let first = tokio::spawn(async move { r1.oneshot(add_request()).await.unwrap() });
    // Wait until the writer holds the first write at the gate.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gate.waiting() == 0 {
        assert!(std::time::Instant::now() < deadline, "writer never wrote");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The second fills the queue (capacity 1); the third is refused.
    let r2 = a.router.clone();
    let second = tokio::spawn(async move { r2.oneshot(add_request()).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = a.call(add_request()).await;
    let m = error(&r, 503, "overloaded");
    assert!(m.contains("write_queue_max"), "{m}");
    assert_eq!(r.headers["retry-after"], "1");
    gate.set(|g| g.closed = false);
    assert_eq!(first.await.unwrap().status(), 200);
    assert_eq!(second.await.unwrap().status(), 200);
    let r = a.send("GET", "/carts/c", None).await;
    assert_eq!(lines(&r), json!([{"sku": "a", "quantity": 2}]));
}

#[tokio::test]
async fn a_failing_disk_is_503_and_nothing_is_applied() {
    let (a, gate) = gated_app(8);
    gate.set(|g| g.fail = true);
    let r = a.call(add_request()).await;
    let m = error(&r, 503, "storage_unavailable");
    assert!(m.contains("disk on fire"), "{m}");
    gate.set(|g| g.fail = false);
    let r = a.send("GET", "/carts/c", None).await;
    assert_eq!(lines(&r), json!([]));
    let r = a.call(add_request()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["token"], "v1:1=1",
        "the failed write used no sequence number"
    );
}

/// The writer holds the first write at the storage gate (taken into a batch) while the
/// second waits in the queue; both pass their deadline. The queued one is answered 504 and
/// never applied; the taken one answers 200 once its commit ends, late rather than 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_504_is_never_applied_and_a_committing_write_answers_late() {
    let mut s = settings();
    s.request_timeout = Duration::from_millis(200);
    let (a, gate) = gated_app_with(s);
    gate.set(|g| g.closed = true);
    let r1 = a.router.clone();
    let first = tokio::spawn(async move { r1.oneshot(add_request()).await.unwrap() });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gate.waiting() == 0 {
        assert!(std::time::Instant::now() < deadline, "writer never wrote");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let m = error(&a.call(add_request()).await, 504, "timeout");
    assert!(m.contains("nothing was applied"), "{m}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!first.is_finished(), "the taken write waits for its commit");
    gate.set(|g| g.closed = false);
    assert_eq!(first.await.unwrap().status(), 200);
    let r = a.send("GET", "/carts/c", None).await;
    assert_eq!(lines(&r), json!([{"sku": "a", "quantity": 1}]));
    let want = "cart_store_writes_expired_total 1";
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = a.send("GET", "/metrics", None).await.text;
        if metrics.contains(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(metrics.contains(want), "{metrics}");
}
