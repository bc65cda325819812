//! `/v1/acl/auth-method[/…]` and `/v1/acl/auth-methods`: auth methods of type `jwt`, checked
//! as Consul's `ACL.AuthMethodSet` checks them (a JWKS URL is fetched once on write).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use muster_server::acl::jwt::JwtValidator;
use muster_server::go_duration;
use muster_server::model::{AclAuthMethod, Command, Consistency, Query, QueryResult};
use serde_json::{json, Map, Value};

use super::{bad, disabled, field, str_field};
use crate::body::json_value;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::reply::json;
use crate::types::go_duration_string;
use crate::ApiState;

/// The types Muster has: Consul's `jwt` (`kubernetes`, `oidc` and `aws-iam` are not).
const TYPES: &[&str] = &["jwt"];
/// Consul's default `acl.token_max_expiration_ttl` and `token_min_expiration_ttl`.
const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const MIN_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Every auth method, read consistently, and the ACL index.
pub(super) async fn methods(st: &ApiState) -> ApiResult<(Vec<AclAuthMethod>, u64)> {
    let (res, meta) = st
        .server
        .read(Consistency::Default, Query::AclAuthMethods)
        .await?;
    match res {
        QueryResult::AclAuthMethods(m) => Ok((m, meta.index)),
        _ => Ok((Vec::new(), meta.index)),
    }
}

/// A stored method's definition.
pub(super) fn definition(m: &AclAuthMethod) -> Value {
    serde_json::from_str(&m.definition).unwrap_or_else(|_| json!({}))
}

/// A method as Consul answers it (`structs.ACLAuthMethod`), or its list stub.
fn shape(m: &AclAuthMethod, stub: bool) -> Value {
    let d = definition(m);
    let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut o = Map::new();
    o.insert("Name".into(), json!(m.name));
    o.insert("Type".into(), json!(text("Type")));
    for k in ["DisplayName", "Description", "MaxTokenTTL", "TokenLocality"] {
        let v = text(k);
        if !v.is_empty() || (k == "Description" && !stub) {
            o.insert(k.into(), json!(v));
        }
    }
    if !stub {
        o.insert(
            "Config".into(),
            d.get("Config").cloned().unwrap_or(json!({})),
        );
    }
    o.insert("CreateIndex".into(), json!(m.create_index));
    o.insert("ModifyIndex".into(), json!(m.modify_index));
    Value::Object(o)
}

/// The `X-Consul-Index` header on an ACL read.
pub(super) fn indexed(reply: Response, index: u64) -> Response {
    let mut reply = reply;
    if let Ok(v) = axum::http::HeaderValue::from_str(&index.to_string()) {
        reply.headers_mut().insert("X-Consul-Index", v);
    }
    reply
}

pub(crate) async fn acl_auth_method_list(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let (list, index) = methods(&st).await?;
    let list: Vec<Value> = list.iter().map(|m| shape(m, true)).collect();
    Ok(indexed(
        json(&list, Params::parse(q.as_deref()).pretty()),
        index,
    ))
}

pub(crate) async fn acl_auth_method_read(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    method_reply(&st, q, &name).await
}

async fn method_reply(st: &ApiState, q: Option<String>, name: &str) -> ApiResult<Response> {
    let (list, index) = methods(st).await?;
    let m = list
        .iter()
        .find(|m| m.name == name)
        .ok_or(ApiError::NotFound)?;
    Ok(indexed(
        json(&shape(m, false), Params::parse(q.as_deref()).pretty()),
        index,
    ))
}

pub(crate) async fn acl_auth_method_create(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    method_write(st, q, None, body).await
}

pub(crate) async fn acl_auth_method_update(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    method_write(st, q, Some(name), body).await
}

/// `MaxTokenTTL`: a Go duration string, or nanoseconds.
fn max_token_ttl(v: &Value) -> ApiResult<std::time::Duration> {
    let d = match field(v, "MaxTokenTTL") {
        None | Some(Value::Null) => return Ok(std::time::Duration::ZERO),
        Some(Value::String(s)) if s.is_empty() => return Ok(std::time::Duration::ZERO),
        Some(Value::String(s)) => go_duration(s),
        Some(Value::Number(n)) => n.as_u64().map(std::time::Duration::from_nanos),
        Some(_) => None,
    };
    let d = d.ok_or_else(|| bad("AuthMethod decoding failed: invalid MaxTokenTTL"))?;
    if d.is_zero() {
        return Ok(d);
    }
    if d > MAX_TTL {
        return Err(bad(format!(
            "MaxTokenTTL {} cannot be more than {}",
            go_duration_string(d),
            go_duration_string(MAX_TTL)
        )));
    }
    if d < MIN_TTL {
        return Err(bad(format!(
            "MaxTokenTTL {} cannot be less than {}",
            go_duration_string(d),
            go_duration_string(MIN_TTL)
        )));
    }
    Ok(d)
}

async fn method_write(
    st: ApiState,
    q: Option<String>,
    url_name: Option<String>,
    body: Bytes,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let v = json_value(&body)?;
    let mut name = str_field(&v, "Name");
    if let Some(u) = url_name {
        if !name.is_empty() && name != u {
            return Err(bad("AuthMethod Name in URL and payload do not match"));
        }
        name = u;
    }
    if name.is_empty() {
        return Err(bad("Invalid Auth Method: no Name is set"));
    }
    if !super::policy::valid_name(&name) {
        return Err(bad(
            "Invalid Auth Method: invalid Name. Only alphanumeric characters, '-' and '_' are \
             allowed",
        ));
    }
    let (list, _) = methods(&st).await?;
    let mut kind = str_field(&v, "Type");
    if let Some(old) = list.iter().find(|m| m.name == name) {
        let old_kind = definition(old)["Type"].as_str().unwrap_or("").to_string();
        if kind.is_empty() {
            kind = old_kind;
        } else if kind != old_kind {
            return Err(bad("the Type field of an Auth Method is immutable"));
        }
    }
    if !TYPES.contains(&kind.as_str()) {
        return Err(bad(format!(
            "Invalid Auth Method: Type should be one of: [{}]",
            TYPES.join(" ")
        )));
    }
    let ttl = max_token_ttl(&v)?;
    let locality = str_field(&v, "TokenLocality");
    if !matches!(locality.as_str(), "" | "local" | "global") {
        return Err(bad(
            "Invalid Auth Method: TokenLocality should be one of 'local' or 'global'",
        ));
    }
    let config = field(&v, "Config").cloned().unwrap_or_else(|| json!({}));
    let invalid = |e: String| bad(format!("Invalid Auth Method: {e}"));
    let validator = JwtValidator::new(&config).map_err(invalid)?;
    validator.check_remote_keys().await.map_err(invalid)?;
    let mut def = json!({
        "Type": kind,
        "DisplayName": str_field(&v, "DisplayName"),
        "Description": str_field(&v, "Description"),
        "TokenLocality": locality,
        "Config": config,
    });
    if !ttl.is_zero() {
        def["MaxTokenTTL"] = json!(go_duration_string(ttl));
    }
    let m = AclAuthMethod {
        name: name.clone(),
        definition: def.to_string(),
        ..AclAuthMethod::default()
    };
    st.server
        .write(Command::AclAuthMethodSet(Box::new(m)))
        .await?;
    method_reply(&st, q, &name).await
}

pub(crate) async fn acl_auth_method_delete(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    st.server
        .write(Command::AclAuthMethodDelete { name })
        .await?;
    Ok(json(&true, false))
}
