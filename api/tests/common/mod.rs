//! An in-process single-node server and `oneshot` helpers for the HTTP tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use muster_api::{router, types, AgentControl, ApiState};
use muster_server::{Server, ServerConfig};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Only what these endpoints ask of the agent: its datacenter.
pub struct NoGossip;

impl AgentControl for NoGossip {
    fn members(&self) -> Vec<types::Member> {
        Vec::new()
    }
    fn self_info(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn join(&self, _: String) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("no gossip in this test".into()) })
    }
    fn leave(&self) {}
    fn force_leave(&self, _: String) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("no gossip in this test".into()) })
    }
    fn datacenter(&self) -> String {
        "dc1".into()
    }
    fn node_name(&self) -> String {
        "n1".into()
    }
}

pub struct Fixture {
    pub app: axum::Router,
    _dir: tempfile::TempDir,
    cancel: CancellationToken,
}

impl Fixture {
    /// A handle on another fixture's router (for requests from spawned tasks); it owns no
    /// server and stops nothing when dropped.
    pub fn borrowed(app: axum::Router) -> Fixture {
        Fixture {
            app,
            _dir: tempfile::tempdir().expect("tempdir"),
            cancel: CancellationToken::new(),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

/// A fixture whose server config `tune` adjusts first.
pub async fn fixture_with(tune: impl FnOnce(&mut ServerConfig)) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let cancel = CancellationToken::new();
    let mut cfg = ServerConfig::new("n1", "dc1", dir.path().to_path_buf(), &addr);
    tune(&mut cfg);
    let server = Server::start(cfg, listener, cancel.clone())
        .await
        .expect("start");
    let id = server.node_id().expect("id");
    server
        .bootstrap(BTreeMap::from([(id, addr)]))
        .await
        .expect("bootstrap");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.is_leader() {
        assert!(std::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let app = router(ApiState::new(server, Arc::new(NoGossip)));
    Fixture {
        app,
        _dir: dir,
        cancel,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn index(&self) -> u64 {
        self.headers["x-consul-index"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("number")
    }
}

pub async fn call(f: &Fixture, method: &str, uri: &str, body: impl Into<Body>) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .expect("request");
    let resp = f.app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn get(f: &Fixture, uri: &str) -> Reply {
    call(f, "GET", uri, Body::empty()).await
}
