//! `/v1/acl/login` and `/v1/acl/logout` (Consul's `ACL.Login`/`ACL.Logout`): a bearer JWT
//! checked by its auth method, its claims run through the method's binding rules, and a
//! token made with what they bind; a token a login made can log itself out. Neither needs an
//! ACL permission: the JWT, or the token itself, is the credential.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use muster_server::acl::binder::{bind, Identity};
use muster_server::acl::builtin::rfc3339;
use muster_server::acl::now_unix_ms;
use muster_server::go_duration;
use muster_server::model::{AclToken, Command};
use muster_server::new_uuid;
use serde_json::{json, Value};

use super::auth_method::{definition, methods};
use super::binding_rule::{def_field, matches, rules};
use super::enforce::request_secret;
use super::{bad, disabled, field, str_field, token_reply, AclState};
use crate::body::json_value;
use crate::error::{ApiError, ApiResult};
use crate::reply::json;
use crate::ApiState;

/// Consul's `acl.ErrPermissionDenied`, the answer to a login no rule grants anything.
const DENIED: &str = "Permission denied";

fn forbidden(msg: impl Into<String>) -> ApiError {
    ApiError::Forbidden(msg.into())
}

/// The description of a login's token: Consul's prefix, and the login's `Meta` as JSON.
fn description(meta: Option<&Value>) -> ApiResult<String> {
    let mut d = "token created via login".to_string();
    let Some(meta) = meta.filter(|m| !m.is_null()) else {
        return Ok(d);
    };
    let Some(m) = meta.as_object() else {
        return Err(bad("Failed to decode request body: Meta must be an object"));
    };
    if m.values().any(|v| !v.is_string()) {
        return Err(bad(
            "Failed to decode request body: Meta values must be strings",
        ));
    }
    if !m.is_empty() {
        d.push_str(": ");
        d.push_str(&meta.to_string());
    }
    Ok(d)
}

/// `POST|PUT /v1/acl/login`: `{AuthMethod, BearerToken, Meta}` to a new token.
pub(crate) async fn acl_login(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let v = json_value(&body)?;
    if !v.is_object() {
        return Err(bad("Invalid Login request: Missing auth parameters"));
    }
    let name = str_field(&v, "AuthMethod");
    let desc = description(field(&v, "Meta"))?;
    let (all, _) = methods(&st).await?;
    let Some(method) = all.iter().find(|m| m.name == name) else {
        return Err(forbidden(format!(
            "ACL not found: auth method {name:?} not found"
        )));
    };
    let validator = st
        .acl
        .validators()
        .get(method)
        .map_err(|e| bad(format!("Invalid Auth Method: {e}")))?;
    let claims = validator
        .validate(&str_field(&v, "BearerToken"))
        .await
        .map_err(forbidden)?;
    let identity = Identity::from_claims(&claims, &validator.config).map_err(forbidden)?;
    let (all_rules, _) = rules(&st).await?;
    let matched: Vec<(String, String)> = all_rules
        .iter()
        .filter(|r| r.auth_method == name && matches(&def_field(r, "Selector"), &identity))
        .map(|r| (def_field(r, "BindType"), def_field(r, "BindName")))
        .collect();
    let state = AclState::read(&st).await?;
    let role_id = |n: &str| {
        state
            .roles
            .iter()
            .find(|r| r.name == n)
            .map(|r| r.id.clone())
    };
    let policy_id = |n: &str| {
        let p = state.policies.iter().find(|p| p.name == n);
        p.map(|p| p.id.clone())
    };
    let bindings = bind(&matched, &identity, role_id, policy_id).map_err(bad)?;
    if bindings.none() {
        return Err(forbidden(DENIED));
    }
    let mdef = definition(method);
    let now = now_unix_ms();
    let mut def = bindings.token_fields(&st.agent.datacenter());
    def["Description"] = json!(desc);
    def["Local"] = json!(mdef["TokenLocality"].as_str() != Some("global"));
    def["AuthMethod"] = json!(name);
    def["CreateTime"] = json!(rfc3339(now));
    let ttl = mdef["MaxTokenTTL"].as_str().and_then(go_duration);
    let expires = match ttl {
        Some(d) if !d.is_zero() => {
            let at = now + d.as_millis() as u64;
            def["ExpirationTime"] = json!(rfc3339(at));
            def["ExpirationTTL"] = mdef["MaxTokenTTL"].clone();
            at
        }
        _ => 0,
    };
    let token = AclToken {
        accessor_id: new_uuid(),
        secret_id: new_uuid(),
        definition: def.to_string(),
        expires_unix_ms: expires,
        ..AclToken::default()
    };
    let accessor = token.accessor_id.clone();
    let cmd = Command::AclTokenSet(Box::new(token));
    if !st.server.write(cmd).await?.success {
        // The method was deleted since it was read.
        return Err(forbidden(format!(
            "ACL not found: auth method {name:?} not found"
        )));
    }
    token_reply(&st, q, &accessor, true).await
}

/// `POST|PUT /v1/acl/logout`: deletes the token presented, if a login made it.
pub(crate) async fn acl_logout(
    State(st): State<ApiState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let not_found = || forbidden("ACL not found");
    let secret = request_secret(&headers, q.as_deref())
        .filter(|s| !s.is_empty())
        .ok_or_else(not_found)?;
    let state = AclState::read(&st).await?;
    let token = state
        .tokens
        .iter()
        .find(|t| t.secret_id == secret)
        .ok_or_else(not_found)?;
    let def: Value = serde_json::from_str(&token.definition).unwrap_or_default();
    if def["AuthMethod"].as_str().is_none_or(str::is_empty) {
        return Err(forbidden(DENIED));
    }
    st.server
        .write(Command::AclTokenDelete {
            accessor_id: token.accessor_id.clone(),
        })
        .await?;
    Ok(json(&true, false))
}
