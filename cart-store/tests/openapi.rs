//! The OpenAPI document (`server::openapi`) against the code it describes: the committed
//! copy `docs/openapi.json`, the router's routes and methods, the error codes the server can
//! send, and the real answers' shapes. In-process (axum router over `MemStorage`).
//!
//! After changing the API, regenerate the committed copy with
//! `UPDATE_OPENAPI=1 cargo test -p meridian-cart-store --test openapi`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use meridian_cart_store::server::openapi::{
    document_json, ErrorBody, ErrorCode, Health, Replication, ID_PATTERN,
};
use meridian_cart_store::server::{Server, ServerSettings};
use meridian_cart_store::{CartView, MemStorage, Node, NodeConfig, OrderView, Storage};
use meridian_clocks::{ReplicaId, SystemClock};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn document() -> Value {
    serde_json::from_str(&document_json()).expect("the document is JSON")
}

/// `(METHOD, path template)` of every documented operation.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method.to_ascii_lowercase()).is_some() {
                ops.insert((method.to_owned(), path.clone()));
            }
        }
    }
    ops
}

struct App {
    _server: Server,
    router: Router,
}

fn app() -> App {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let node = Node::open(storage, SystemClock, NodeConfig::new(ReplicaId(1))).unwrap();
    let server = Server::with_node(
        node,
        ServerSettings {
            causal_wait: Duration::from_millis(50),
            ..ServerSettings::default()
        },
    );
    App {
        router: server.router(),
        _server: server,
    }
}

impl App {
    async fn call(&self, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let b = Request::builder().method(method).uri(uri);
        let req = match body {
            Some(json) => b
                .header("content-type", "application/json")
                .body(Body::from(json.to_owned())),
            None => b.body(Body::empty()),
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// A valid request body for an operation, from the document's own request body schema.
fn example_body(doc: &Value, op: &Value) -> Option<String> {
    let schema = op.pointer("/requestBody/content/application~1json/schema/$ref")?;
    let name = schema.as_str()?.rsplit('/').next()?;
    let props = doc["components"]["schemas"][name]["properties"]
        .as_object()
        .unwrap();
    let body: serde_json::Map<String, Value> = props
        .iter()
        .map(|(k, s)| {
            let v = match s["type"].as_str() {
                Some("integer") => Value::from(s["minimum"].as_u64().unwrap_or(0).max(1)),
                _ => Value::from("sku-1"),
            };
            (k.clone(), v)
        })
        .collect();
    Some(Value::Object(body).to_string())
}

#[tokio::test]
async fn the_router_serves_every_documented_operation_and_no_other_method() {
    let doc = document();
    let ops = documented_operations(&doc);
    let app = app();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = path.replace("{cart}", "c-1").replace("{sku}", "sku-1");
        for method in METHODS {
            // A line first, so that checkout has something to order.
            let (s, _) = app
                .call(
                    "POST",
                    "/carts/c-1/items",
                    Some(r#"{"sku":"sku-1","quantity":1}"#),
                )
                .await;
            assert_eq!(s, StatusCode::OK);
            let documented = ops.contains(&(method.to_owned(), path.clone()));
            let op = &item[method.to_ascii_lowercase()];
            let body = if documented {
                example_body(&doc, op)
            } else {
                None
            };
            let (status, answer) = app.call(method, &uri, body.as_deref()).await;
            if documented {
                assert!(
                    op["responses"].get(status.as_str()).is_some(),
                    "{method} {path} (as {uri}) answered {status}, which the document does not \
                     list for it: {answer}"
                );
                assert!(
                    status.is_success(),
                    "{method} {path}: a valid request answered {status}: {answer}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is not documented, but the router serves it: {answer}"
                );
            }
        }
    }
}

/// The path templates of `.route("…", …)` in the router's source: a new route must be
/// documented, or this test names it.
#[test]
fn every_route_in_the_router_is_documented() {
    let src = std::fs::read_to_string(manifest_dir().join("src/server/routes.rs")).unwrap();
    let routed: BTreeSet<String> = src
        .split(".route(")
        .skip(1)
        .map(|rest| {
            let rest = rest.trim_start();
            let rest = rest.strip_prefix('"').expect("a route path is a literal");
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect();
    let doc = document();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        routed, documented,
        "routes.rs and the OpenAPI document (server/openapi.rs) list different paths"
    );
}

/// Every `ApiError::new(StatusCode::…, "code", …)` in the server's source uses a code that
/// the document's `ErrorCode` enum lists.
#[test]
fn every_error_code_the_server_sends_is_documented() {
    let dir = manifest_dir().join("src/server");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        for call in src.split("ApiError::new(").skip(1) {
            // `StatusCode::X,` then the code literal.
            let Some(after_status) = call.split_once(',').map(|(_, r)| r.trim_start()) else {
                continue;
            };
            let Some(lit) = after_status.strip_prefix('"') else {
                continue; // not a literal (e.g. a helper's parameter)
            };
            found.insert((lit[..lit.find('"').unwrap()].to_owned(), file_name(&path)));
        }
    }
    assert!(found.len() >= 20, "the scan found too few codes: {found:?}");
    for (code, file) in &found {
        assert!(
            serde_json::from_value::<ErrorCode>(Value::from(code.as_str())).is_ok(),
            "{file} sends error code {code:?}, which ErrorCode in server/openapi.rs lacks"
        );
    }
    let doc = document();
    let documented = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        documented,
        found.iter().map(|(c, _)| c).collect::<BTreeSet<_>>().len(),
        "ErrorCode lists codes the server never sends: {found:?}"
    );
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Path parameters use the id syntax of `validate`.
#[test]
fn path_parameters_are_the_documented_id_syntax() {
    let doc = document();
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let names: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["schema"]["pattern"], ID_PATTERN, "{method} {path}");
                    seen += 1;
                    p["name"].as_str().unwrap()
                })
                .collect();
            let in_template: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(names, in_template, "{method} {path}");
        }
    }
    assert!(seen >= 8);
    let add = &doc["components"]["schemas"]["AddBody"]["properties"]["sku"]["pattern"];
    assert_eq!(add, ID_PATTERN);
}

/// The answers decode into the documented types (which refuse unknown fields).
#[tokio::test]
async fn answers_have_the_documented_shapes() {
    let app = app();
    let (s, v) = app.call("GET", "/health", None).await;
    assert_eq!(s, StatusCode::OK);
    serde_json::from_value::<Health>(v).unwrap();
    let (_, v) = app.call("GET", "/replication", None).await;
    serde_json::from_value::<Replication>(v).unwrap();
    let (_, v) = app
        .call(
            "POST",
            "/carts/a/items",
            Some(r#"{"sku":"b","quantity":2}"#),
        )
        .await;
    serde_json::from_value::<CartView>(v).unwrap();
    let (_, v) = app.call("POST", "/carts/a/checkout", None).await;
    serde_json::from_value::<OrderView>(v).unwrap();
    let (s, v) = app.call("POST", "/carts/a/checkout", None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let e: ErrorBody = serde_json::from_value(v).unwrap();
    assert_eq!(e.error.code, ErrorCode::EmptyCart);
    let (s, v) = app.call("GET", "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, document());
}

/// `docs/openapi.json` is the generated document, byte for byte.
#[test]
fn the_committed_copy_is_up_to_date() {
    let path = manifest_dir().join("../docs/openapi.json");
    let generated = document_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the document the code generates; regenerate it with\n\n    \
         UPDATE_OPENAPI=1 cargo test -p meridian-cart-store --test openapi\n\nand commit it"
    );
}

#[test]
fn the_request_id_pattern_matches_what_the_server_echoes() {
    let want = format!(
        "{{1,{}}}",
        meridian_cart_store::server::REQUEST_ID_BYTES_MAX
    );
    assert!(
        meridian_cart_store::server::openapi::REQUEST_ID_PATTERN.contains(&want),
        "REQUEST_ID_PATTERN must allow exactly 1..=REQUEST_ID_BYTES_MAX characters"
    );
}
