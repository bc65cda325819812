//! The one enforcement layer: every route in `router.rs` has a rule in `rules::RULES`; the
//! middleware [`enforce`] resolves the request's token, checks the route's rule, and filters
//! the reply. A route without a rule is refused, so a new route cannot be forgotten (a test
//! checks that every route in `router.rs` has one).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::body::{to_bytes, Body};
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use muster_server::acl::{Access, Authorizer, ResolveError, Resource};
use muster_server::model::{Consistency, Query, QueryResult};
use serde_json::Value;

use super::rules::{at, Checks, Filter, Name, Need, Rule, RULES};
use super::RequestToken;
use crate::params::Params;
use crate::{ApiState, MAX_VALUE_SIZE};
use Access::{Read, Write};
use Filter::{Items, MapKeys, MapValues};
use Resource::{Node, Service, Session};

/// The secret a request presents: `X-Consul-Token`, `Authorization: Bearer`, `?token=`.
pub(crate) fn request_secret(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(t) = headers.get("x-consul-token").and_then(|v| v.to_str().ok()) {
        return Some(t.trim().to_string());
    }
    if let Some(a) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let a = a.trim();
        if a.len() > 7 && a[..7].eq_ignore_ascii_case("bearer ") {
            return Some(a[7..].trim().to_string());
        }
    }
    Params::parse(query).get("token").map(str::to_string)
}

fn forbidden(msg: String) -> Response {
    (StatusCode::FORBIDDEN, msg).into_response()
}

/// The rule for a route: the one for its method, else its `*` rule. Looked up in a map
/// built once: a scan of `RULES` on every request cost more than the rest of the check.
pub(crate) fn rule_for(method: &Method, path: &str) -> Option<&'static Rule> {
    static BY_ROUTE: LazyLock<HashMap<(&'static str, &'static str), &'static Rule>> =
        LazyLock::new(|| {
            let mut m = HashMap::with_capacity(RULES.len());
            for r in RULES {
                m.entry((r.path, r.method)).or_insert(r);
            }
            m
        });
    BY_ROUTE
        .get(&(path, method.as_str()))
        .or_else(|| BY_ROUTE.get(&(path, "*")))
        .copied()
}

/// The middleware: resolve the token, check the route's rule, run the handler, filter.
pub(crate) async fn enforce(
    State(st): State<ApiState>,
    matched: Option<MatchedPath>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    if !st.acl.enabled() || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let Some(matched) = matched else {
        return next.run(req).await;
    };
    let Some(rule) = rule_for(req.method(), matched.as_str()) else {
        let why = format!(
            "Permission denied: no ACL rule for {} {}",
            req.method(),
            matched.as_str()
        );
        return forbidden(why);
    };
    if matches!((rule.need, rule.filter), (Need::Open, Filter::None)) {
        return next.run(req).await;
    }
    let secret = request_secret(req.headers(), req.uri().query());
    let authz = match st.acl.resolve(secret.as_deref()).await {
        Ok(a) => a,
        Err(ResolveError::NotFound) => return forbidden("ACL not found".into()),
        Err(ResolveError::Server(e)) => return crate::ApiError::Server(e).into_response(),
    };
    // Parameters that do not decode are the handler's to refuse; checked, they name nothing.
    let params: Vec<(String, String)> = params
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let (req, checks) = match needs(&st, &authz, rule.need, req, &params).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    if let Err(denied) = pass(&authz, &checks) {
        return forbidden(denied);
    }
    // A single key was checked above; only KV listings (no checks) need their reply filtered.
    let filter = match (rule.need, checks.is_empty()) {
        (Need::Kv, false) => Filter::None,
        _ => rule.filter,
    };
    let blocking = Params::parse(req.uri().query()).has("index");
    let mut req = req;
    req.extensions_mut().insert(RequestToken {
        authz: authz.clone(),
    });
    let resp = next.run(req).await;
    // A blocking query may have waited minutes: the token is checked again as it wakes
    // (deleted, expired or changed meanwhile), and the reply filtered as it now reads.
    let authz = if blocking {
        match st.acl.resolve(secret.as_deref()).await {
            Ok(a) => a,
            Err(_) => return forbidden("ACL not found".into()),
        }
    } else {
        authz
    };
    if blocking {
        if let Err(denied) = pass(&authz, &checks) {
            return forbidden(denied);
        }
    }
    filter_reply(resp, filter, &authz).await
}

/// Whether `authz` passes every check; else Consul's denial for the first that fails.
fn pass(authz: &Authorizer, checks: &Checks) -> Result<(), String> {
    for (r, name, access) in checks {
        let ok = if *r == Resource::Key && *access == Access::Deny {
            // A recursive delete: write on every key under the prefix.
            authz.allowed_write_prefix(*r, name)
        } else {
            authz.allowed(*r, name, *access)
        };
        if !ok {
            let want = if *access == Access::Deny {
                Write
            } else {
                *access
            };
            let denied = muster_server::acl::Denied {
                accessor: authz.accessor().to_string(),
                resource: *r,
                access: want,
                name: name.clone(),
            };
            return Err(denied.to_string());
        }
    }
    Ok(())
}

/// The checks a rule asks for this request. A recursive KV delete is marked with
/// `Access::Deny` (write on the whole prefix); the request comes back whole.
async fn needs(
    st: &ApiState,
    authz: &Authorizer,
    need: Need,
    req: Request,
    params: &[(String, String)],
) -> Result<(Request, Checks), Response> {
    let param = |name: &str| -> String {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // The agent's name, only for the rules that ask for it (it is copied out of a lock).
    let agent = || st.agent.node_name();
    let name_of = |n: Name| match n {
        Name::None => String::new(),
        Name::Path(p) => param(p),
        Name::Agent => agent(),
        Name::Fixed(n) => n.to_string(),
        Name::LocalService(p) => {
            let id = param(p);
            st.local
                .as_ref()
                .and_then(|l| l.services().into_iter().find(|s| s.id == id))
                .map_or(id, |s| s.name)
        }
    };
    let checks = match need {
        Need::Open | Need::Token => Vec::new(),
        Need::Check(r, n, a) => vec![(r, name_of(n), a)],
        Need::Kv => {
            let key = param("key");
            let p = Params::parse(req.uri().query());
            match *req.method() {
                Method::GET if p.has("recurse") || p.has("keys") => Vec::new(),
                Method::GET => vec![(Resource::Key, key, Read)],
                Method::DELETE if p.has("recurse") => vec![(Resource::Key, key, Access::Deny)],
                _ => vec![(Resource::Key, key, Write)],
            }
        }
        Need::LocalCheck => {
            let id = param("id");
            let svc = st.local.as_ref().and_then(|l| {
                let c = l.checks().into_iter().find(|c| c.id == id)?;
                let s = l.services().into_iter().find(|s| s.id == c.service_id)?;
                Some(s.name)
            });
            match svc {
                Some(s) => vec![(Service, s, Write)],
                None => vec![(Node, agent(), Write)],
            }
        }
        Need::Session(a) => {
            let q = Query::Session { id: param("id") };
            match st.server.read(Consistency::Stale, q).await {
                Ok((QueryResult::Sessions(l), _)) => {
                    l.into_iter().map(|s| (Session, s.node, a)).collect()
                }
                _ => Vec::new(),
            }
        }
        Need::PreparedQuery(a) => {
            let id = param("id");
            let q = Query::PreparedQuery { id: id.clone() };
            let name = match st.server.read(Consistency::Stale, q).await {
                Ok((QueryResult::PreparedQueries(l), _)) => l.into_iter().next().map(|q| q.name),
                _ => None,
            };
            vec![(Resource::Query, name.unwrap_or(id), a)]
        }
        Need::Body(f) => {
            let (req, v) = json_body(req).await?;
            let checks = f(&v, &agent());
            return Ok((req, checks));
        }
        Need::Catalog(op) => {
            let (req, v) = json_body(req).await?;
            let checks = super::catalog_rules::catalog(st, authz, op, &v).await;
            return Ok((req, checks));
        }
        Need::AgentCheck => {
            let (req, v) = json_body(req).await?;
            let checks = super::catalog_rules::agent_check(st, &v);
            return Ok((req, checks));
        }
        Need::AgentService => {
            let (req, v) = json_body(req).await?;
            let checks = super::catalog_rules::agent_service(st, &v);
            return Ok((req, checks));
        }
    };
    Ok((req, checks))
}

/// The request's body as JSON (`null` when it is not: the handler refuses it), and the
/// request rebuilt with the same bytes; a body spelling one field twice is refused.
async fn json_body(req: Request) -> Result<(Request, Value), Response> {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_VALUE_SIZE * 2).await else {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "Request body too large").into_response());
    };
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Some(k) = super::ambiguous_key(&v) {
        let why = format!("Request decode failed: field {k:?} is given more than once");
        return Err((StatusCode::BAD_REQUEST, why).into_response());
    }
    Ok((Request::from_parts(parts, Body::from(bytes)), v))
}

/// Filters a successful JSON reply to what `authz` may read.
async fn filter_reply(resp: Response, filter: Filter, authz: &Arc<Authorizer>) -> Response {
    if matches!(filter, Filter::None) || resp.status() != StatusCode::OK || authz.is_management() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let readable = |v: &Value, fields: &[(&str, Resource)]| {
        fields.iter().all(|(path, r)| match at(v, path) {
            Some(name) if !name.is_empty() => authz.allowed(*r, name, Read),
            _ => true,
        })
    };
    let before = count(&v);
    match (filter, &mut v) {
        (Filter::Kv, Value::Array(l)) => l.retain(|e| {
            let key = e.as_str().or_else(|| at(e, "Key")).unwrap_or_default();
            authz.allowed(Resource::Key, key, Read)
        }),
        (Items(fields), Value::Array(l)) => l.retain(|e| readable(e, fields)),
        (MapKeys(r), Value::Object(m)) => m.retain(|k, _| authz.allowed(r, k, Read)),
        (MapValues(fields), Value::Object(m)) => m.retain(|_, e| readable(e, fields)),
        (Filter::NodeServices, Value::Object(m)) => {
            let node = m
                .get("Node")
                .and_then(|n| at(n, "Node"))
                .unwrap_or_default();
            if !authz.allowed(Node, node, Read) {
                return filtered(parts, Value::Null);
            }
            let service = |e: &Value| authz.allowed(Service, at(e, "Service").unwrap_or(""), Read);
            let before = m.get("Services").map_or(0, count);
            match m.get_mut("Services") {
                Some(Value::Object(s)) => s.retain(|_, e| service(e)),
                Some(Value::Array(l)) => l.retain(service),
                _ => {}
            }
            if m.get("Services").map_or(0, count) == before {
                return Response::from_parts(parts, Body::from(bytes));
            }
            return filtered(parts, v);
        }
        _ => {}
    }
    if count(&v) == before {
        return Response::from_parts(parts, Body::from(bytes));
    }
    // A KV listing with nothing left is Consul's 404.
    if matches!(filter, Filter::Kv) && count(&v) == 0 {
        let mut resp = filtered(parts, Value::Null);
        *resp.status_mut() = StatusCode::NOT_FOUND;
        *resp.body_mut() = Body::empty();
        return resp;
    }
    filtered(parts, v)
}

/// A reply with `v` as its body, marked as filtered by ACLs.
fn filtered(mut parts: axum::http::response::Parts, v: Value) -> Response {
    parts.headers.insert(
        "X-Consul-Results-Filtered-By-ACLs",
        HeaderValue::from_static("true"),
    );
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&v).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}

fn count(v: &Value) -> usize {
    match v {
        Value::Array(l) => l.len(),
        Value::Object(m) => m.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route `router.rs` declares has a rule for each method it takes.
    #[test]
    fn every_route_has_a_rule() {
        let src = include_str!("../router.rs");
        let mut seen = 0;
        for chunk in src.split(".route(").skip(1) {
            let Some(start) = chunk.find('"') else {
                continue;
            };
            let rest = &chunk[start + 1..];
            let Some(end) = rest.find('"') else { continue };
            let path = &rest[..end];
            // The handler expression up to the end of this `.route(...)` call.
            let expr = &rest[end..rest.find("\n        .").unwrap_or(rest.len())];
            let mut methods: Vec<Method> = Vec::new();
            for (word, m) in [
                ("get(", Method::GET),
                ("put(", Method::PUT),
                ("post(", Method::POST),
                ("delete(", Method::DELETE),
                ("any(", Method::PATCH),
                ("kv", Method::GET),
            ] {
                if expr.contains(word) {
                    methods.push(m);
                }
            }
            assert!(!methods.is_empty(), "no method found for {path}: {expr}");
            for m in methods {
                assert!(rule_for(&m, path).is_some(), "no ACL rule for {m} {path}");
                seen += 1;
            }
        }
        assert!(seen > 80, "router.rs read: {seen} routes");
        for r in RULES {
            assert!(
                src.contains(&format!("\"{}\"", r.path)),
                "rule for no route: {}",
                r.path
            );
        }
    }
}
