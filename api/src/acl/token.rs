//! `/v1/acl/bootstrap`, `/v1/acl/token[/…]` (with `self` and `clone`) and `/v1/acl/tokens`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::Extension;
use muster_server::acl::builtin::{establish, management_token, parse_rfc3339, rfc3339};
use muster_server::acl::{now_unix_ms, Access, Resource};
use muster_server::model::{AclToken, Command, Consistency, Query, QueryResult};
use muster_server::{go_duration, new_uuid};
use serde_json::{json, Value};

use super::{bad, disabled, field, identities, shape, str_field, write_or, AclState, RequestToken};
use crate::body::json_value;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::reply::json;
use crate::ApiState;

/// The reset index an operator left in `<data_dir>/acl-bootstrap-reset`, 0 if none.
fn reset_index(st: &ApiState) -> u64 {
    let Some(dir) = &st.acl.config().data_dir else {
        return 0;
    };
    std::fs::read_to_string(dir.join("acl-bootstrap-reset"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `PUT /v1/acl/bootstrap`: the first management token, once (again only with the reset
/// index in the data dir, as Consul).
pub(crate) async fn acl_bootstrap(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    establish(&st.server, st.acl.config()).await?;
    let token = management_token(
        new_uuid(),
        new_uuid(),
        "Bootstrap Token (Global Management)",
    );
    let accessor = token.accessor_id.clone();
    let reset = reset_index(&st);
    let cmd = Command::AclBootstrap {
        token: Box::new(token),
        reset_index: reset,
    };
    if !st.server.write(cmd).await?.success {
        let (res, _) = st.server.read(Consistency::Default, Query::AclMeta).await?;
        let current = match res {
            QueryResult::AclMeta(m) => m.bootstrap_index,
            _ => 0,
        };
        let why = if reset != 0 {
            format!("Invalid bootstrap reset index (specified {reset}, reset index: {current})")
        } else {
            format!("ACL bootstrap no longer allowed (reset index: {current})")
        };
        return Err(ApiError::Forbidden(format!("Permission denied: {why}")));
    }
    token_reply(&st, q, &accessor, true).await
}

pub(super) async fn token_reply(
    st: &ApiState,
    q: Option<String>,
    accessor: &str,
    show_secret: bool,
) -> ApiResult<Response> {
    let state = AclState::read(st).await?;
    let t = state
        .tokens
        .iter()
        .find(|t| t.accessor_id == accessor)
        .ok_or_else(|| ApiError::Forbidden("ACL not found".into()))?;
    Ok(state.indexed(json(
        &shape::token(t, &state, show_secret),
        Params::parse(q.as_deref()).pretty(),
    )))
}

/// Whether this request's token may see secrets (`acl:write`).
fn may_see_secrets(tok: &Option<Extension<RequestToken>>) -> bool {
    tok.as_ref()
        .is_none_or(|t| t.authz.allowed(Resource::Acl, "", Access::Write))
}

pub(crate) async fn acl_token_read(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    tok: Option<Extension<RequestToken>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    token_reply(&st, q, &id, may_see_secrets(&tok)).await
}

pub(crate) async fn acl_token_self(
    State(st): State<ApiState>,
    tok: Option<Extension<RequestToken>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let Some(Extension(tok)) = tok else {
        return Err(ApiError::Forbidden("ACL not found".into()));
    };
    token_reply(&st, q, tok.authz.accessor(), true).await
}

pub(crate) async fn acl_token_list(
    State(st): State<ApiState>,
    tok: Option<Extension<RequestToken>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let p = Params::parse(q.as_deref());
    let state = AclState::read(&st).await?;
    let links = |t: &AclToken, f: &str, id: &str| {
        serde_json::from_str::<Value>(&t.definition)
            .ok()
            .and_then(|d| d.get(f).cloned())
            .and_then(|l| l.as_array().cloned())
            .is_some_and(|l| l.iter().any(|x| x["ID"] == id))
    };
    let def_str = |t: &AclToken, f: &str| {
        let d: Value = serde_json::from_str(&t.definition).unwrap_or_default();
        d.get(f).and_then(Value::as_str).unwrap_or("").to_string()
    };
    let show = may_see_secrets(&tok);
    let list: Vec<Value> = state
        .tokens
        .iter()
        .filter(|t| p.get("policy").is_none_or(|id| links(t, "Policies", id)))
        .filter(|t| p.get("role").is_none_or(|id| links(t, "Roles", id)))
        .filter(|t| {
            p.get("authmethod")
                .is_none_or(|m| def_str(t, "AuthMethod") == m)
        })
        .map(|t| shape::token_stub(t, &state, show))
        .collect();
    Ok(state.indexed(json(&list, p.pretty())))
}

pub(crate) async fn acl_token_create(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    token_write(st, q, None, json_value(&body)?).await
}

pub(crate) async fn acl_token_update(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    token_write(st, q, Some(id), json_value(&body)?).await
}

/// `PUT /v1/acl/token/<id>/clone`: a new token with the same links.
pub(crate) async fn acl_token_clone(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let v = if body.is_empty() {
        json!({})
    } else {
        json_value(&body)?
    };
    let state = AclState::read(&st).await?;
    let Some(old) = state.tokens.iter().find(|t| t.accessor_id == id) else {
        return Err(ApiError::Forbidden("ACL not found".into()));
    };
    let mut def: Value = serde_json::from_str(&old.definition).unwrap_or_else(|_| json!({}));
    if def.get("AuthMethod").is_some_and(|m| m != "") {
        return Err(bad("Cannot clone a token created from an auth method"));
    }
    let desc = str_field(&v, "Description");
    if !desc.is_empty() {
        def["Description"] = json!(desc);
    }
    def["CreateTime"] = json!(rfc3339(now_unix_ms()));
    let t = AclToken {
        accessor_id: new_uuid(),
        secret_id: new_uuid(),
        definition: def.to_string(),
        expires_unix_ms: old.expires_unix_ms,
        ..AclToken::default()
    };
    let accessor = t.accessor_id.clone();
    st.server.write(Command::AclTokenSet(Box::new(t))).await?;
    token_reply(&st, q, &accessor, true).await
}

async fn token_write(
    st: ApiState,
    q: Option<String>,
    id: Option<String>,
    v: Value,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let state = AclState::read(&st).await?;
    let body_accessor = str_field(&v, "AccessorID");
    let secret = str_field(&v, "SecretID");
    let existing = match &id {
        Some(id) => {
            if !body_accessor.is_empty() && body_accessor != *id {
                return Err(bad("AccessorID in URL and payload do not match"));
            }
            let e = state.tokens.iter().find(|t| t.accessor_id == *id);
            let Some(e) = e else {
                return Err(bad(format!("Cannot find token {id:?}")));
            };
            if !secret.is_empty() && secret != e.secret_id {
                return Err(bad("Changing a tokens SecretID is not permitted"));
            }
            Some(e)
        }
        None => {
            if state.tokens.iter().any(|t| t.accessor_id == body_accessor) {
                return Err(bad("Invalid Token: AccessorID is already in use"));
            }
            if state.tokens.iter().any(|t| t.secret_id == secret) {
                return Err(bad("Invalid Token: SecretID is already in use"));
            }
            None
        }
    };
    let policies = state.links(field(&v, "Policies"), "policy")?;
    let roles = state.links(field(&v, "Roles"), "role")?;
    let (svc, node, templated) = identities(&v)?;
    let now = now_unix_ms();
    let old_def: Value = existing
        .and_then(|e| serde_json::from_str(&e.definition).ok())
        .unwrap_or_else(|| json!({}));
    let create_time = old_def
        .get("CreateTime")
        .cloned()
        .unwrap_or_else(|| json!(rfc3339(now)));
    let created_ms = create_time.as_str().and_then(parse_rfc3339).unwrap_or(now);
    let ttl = str_field(&v, "ExpirationTTL");
    let at = str_field(&v, "ExpirationTime");
    let expires = match (ttl.is_empty(), at.is_empty()) {
        (false, false) => return Err(bad("Expiration TTL and Expiration Time cannot both be set")),
        (false, true) => {
            let d =
                go_duration(&ttl).ok_or_else(|| bad(format!("invalid ExpirationTTL {ttl:?}")))?;
            created_ms + d.as_millis() as u64
        }
        (true, false) => {
            let t = parse_rfc3339(&at).ok_or_else(|| bad("invalid ExpirationTime"))?;
            if t <= now {
                return Err(bad("ExpirationTime cannot be in the past"));
            }
            t
        }
        (true, true) => existing.map_or(0, |e| e.expires_unix_ms),
    };
    if let Some(e) = existing {
        if e.expires_unix_ms != expires {
            return Err(bad("Cannot change expiration time"));
        }
    } else if expires != 0 {
        expiry_in_bounds(&st, expires.saturating_sub(created_ms))?;
    }
    let mut def = json!({
        "Description": str_field(&v, "Description"),
        "Policies": policies,
        "Roles": roles,
        "ServiceIdentities": svc,
        "NodeIdentities": node,
        "TemplatedPolicies": templated,
        "Local": field(&v, "Local").and_then(Value::as_bool).unwrap_or(false),
        "CreateTime": create_time,
    });
    if let Some(m) = old_def.get("AuthMethod") {
        def["AuthMethod"] = m.clone();
    }
    if expires != 0 {
        def["ExpirationTime"] = json!(rfc3339(expires));
        if !ttl.is_empty() {
            def["ExpirationTTL"] = json!(ttl);
        }
    }
    let accessor = match (&id, body_accessor.is_empty()) {
        (Some(id), _) => id.clone(),
        (None, false) => body_accessor,
        (None, true) => new_uuid(),
    };
    let secret = match existing {
        Some(e) => e.secret_id.clone(),
        None if !secret.is_empty() => secret,
        None => new_uuid(),
    };
    let t = AclToken {
        accessor_id: accessor.clone(),
        secret_id: secret,
        definition: def.to_string(),
        expires_unix_ms: expires,
        ..AclToken::default()
    };
    write_or(
        &st,
        Command::AclTokenSet(Box::new(t)),
        "Invalid Token: SecretID is already in use",
    )
    .await?;
    token_reply(&st, q, &accessor, true).await
}

pub(crate) async fn acl_token_delete(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    if id == muster_server::acl::ANONYMOUS_ACCESSOR {
        return Err(bad("Delete operation not permitted on the anonymous token"));
    }
    st.server
        .write(Command::AclTokenDelete { accessor_id: id })
        .await?;
    Ok(json(&true, false))
}

/// A new token's life (`ExpirationTime - CreateTime`) within the agent's bounds, refused in
/// Consul's words otherwise.
pub(crate) fn expiry_in_bounds(st: &ApiState, life_ms: u64) -> ApiResult<()> {
    let cfg = st.acl.config();
    let life = std::time::Duration::from_millis(life_ms);
    let say = crate::types::go_duration_string;
    if life > cfg.token_max_expiration_ttl {
        return Err(bad(format!(
            "ExpirationTime cannot be more than {} in the future (was {})",
            say(cfg.token_max_expiration_ttl),
            say(life)
        )));
    }
    if life < cfg.token_min_expiration_ttl {
        return Err(bad(format!(
            "ExpirationTime cannot be less than {} in the future (was {})",
            say(cfg.token_min_expiration_ttl),
            say(life)
        )));
    }
    Ok(())
}
