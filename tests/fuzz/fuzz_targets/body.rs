//! Request bodies and query strings through the real router and handlers: every endpoint
//! that decodes a body, and a few whose query parameters carry values (filters, durations,
//! flags, blocking-query indexes). The first byte picks the endpoint, the bytes up to the
//! first newline are the query string, the rest is the body.
//!
//! The `Server` is a client agent's that knows no servers, so a request that passes
//! validation fails at once with 500 instead of writing; the agent's local operations parse
//! service and check definitions with the agent's own parser and keep nothing. Every 4xx
//! must say why in its body.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request};
use futures::future::BoxFuture;
use libfuzzer_sys::fuzz_target;
use muster_agent::defs::{parse_check, parse_service, Ctx};
use muster_api::types::Member;
use muster_api::{AgentControl, ApiState, LocalAgent, LocalError};
use muster_server::model::{Check, HealthStatus, Service};
use serde_json::Value;
use tower::ServiceExt;

const ROUTES: &[(Method, &str)] = &[
    (Method::PUT, "/v1/catalog/register"),
    (Method::PUT, "/v1/catalog/deregister"),
    (Method::PUT, "/v1/session/create"),
    (Method::PUT, "/v1/txn"),
    (Method::PUT, "/v1/kv/some/key"),
    (Method::PUT, "/v1/agent/service/register"),
    (Method::PUT, "/v1/agent/check/register"),
    (Method::PUT, "/v1/agent/check/update/c1"),
    (Method::PUT, "/v1/agent/check/pass/c1"),
    (Method::PUT, "/v1/agent/maintenance"),
    (Method::PUT, "/v1/agent/service/maintenance/web"),
    (Method::GET, "/v1/agent/services"),
    (Method::GET, "/v1/agent/checks"),
    (Method::GET, "/v1/catalog/nodes"),
    (Method::GET, "/v1/health/service/web"),
    (Method::GET, "/v1/kv/some/key"),
    (Method::DELETE, "/v1/kv/some/key"),
    (Method::PUT, "/v1/session/renew/x"),
];

struct Control;

impl AgentControl for Control {
    fn members(&self) -> Vec<Member> {
        Vec::new()
    }
    fn self_info(&self) -> Value {
        Value::Null
    }
    fn join(&self, _: String) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("not in a fuzz run".to_string()) })
    }
    fn leave(&self) {}
    fn force_leave(&self, _: String) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("not in a fuzz run".to_string()) })
    }
    fn datacenter(&self) -> String {
        "dc1".into()
    }
    fn node_name(&self) -> String {
        "fuzz".into()
    }
}

/// Parses definitions as the agent's `Local` does before it touches any state.
struct Defs;

fn ctx(origin: &str) -> Ctx<'_> {
    Ctx {
        origin,
        warnings: Vec::new(),
        consul_errors: true,
    }
}

impl LocalAgent for Defs {
    fn services(&self) -> Vec<Service> {
        Vec::new()
    }
    fn checks(&self) -> Vec<Check> {
        Vec::new()
    }
    fn register_service(&self, def: &Value, _: bool) -> Result<(), LocalError> {
        parse_service(&mut ctx("service definition"), def)
            .map(drop)
            .map_err(|e| LocalError::Invalid(e.to_string()))
    }
    fn deregister_service(&self, id: &str) -> Result<(), LocalError> {
        Err(LocalError::NotFound(format!("Unknown service ID {id:?}")))
    }
    fn register_check(&self, def: &Value) -> Result<(), LocalError> {
        parse_check(&mut ctx("check definition"), def, None, None)
            .map(drop)
            .map_err(|e| LocalError::Invalid(e.to_string()))
    }
    fn deregister_check(&self, id: &str) -> Result<(), LocalError> {
        Err(LocalError::NotFound(format!("Unknown check ID {id:?}")))
    }
    fn update_check(&self, id: &str, _: HealthStatus, _: String) -> Result<(), LocalError> {
        Err(LocalError::NotFound(format!("Unknown check ID {id:?}")))
    }
    fn maintenance(
        &self,
        _: Option<&str>,
        _: bool,
        _: String,
        _: Option<std::time::Duration>,
    ) -> Result<(), LocalError> {
        Ok(())
    }
    fn reload(&self) -> Result<(), String> {
        Ok(())
    }
}

fn router() -> axum::Router {
    static R: OnceLock<axum::Router> = OnceLock::new();
    R.get_or_init(|| {
        let state = ApiState::new(muster_server::Server::client(), Arc::new(Control))
            .with_local(Arc::new(Defs));
        muster_api::router(state)
    })
    .clone()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// `raw` as a query string: bytes a URI cannot hold are percent-encoded, the rest (`%`,
/// `&`, `=` included) left as sent.
fn query(raw: &[u8]) -> String {
    let mut q = String::with_capacity(raw.len());
    for &b in raw {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    q
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (method, path) = &ROUTES[usize::from(pick) % ROUTES.len()];
    let (q, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let uri = format!("{path}?{}", query(q));
    let Ok(req) = Request::builder()
        .method(method.clone())
        .uri(&uri)
        .body(Body::from(body.to_vec()))
    else {
        return;
    };
    runtime().block_on(async {
        let resp = router().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let text = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("a buffered body");
        assert!(
            !status.is_client_error() || !text.is_empty(),
            "{status} without a reason for {method} {uri}"
        );
    });
});
