//! `/v1/acl/policy[/…]` and `/v1/acl/policies`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use muster_server::acl::{Rules, MANAGEMENT_POLICY_ID};
use muster_server::model::{AclPolicy, Command};
use serde_json::{json, Value};

use super::{bad, disabled, field, shape, str_field, write_or, write_target, AclState};
use crate::body::json_value;
use crate::error::ApiResult;
use crate::params::Params;
use crate::reply::json;
use crate::ApiState;

/// Consul's policy and role names: letters, digits, `-` and `_`, at most 128.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub(crate) async fn acl_policy_list(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let state = AclState::read(&st).await?;
    let list: Vec<Value> = state
        .policies
        .iter()
        .map(|p| shape::policy(p, true))
        .collect();
    Ok(state.indexed(json(&list, Params::parse(q.as_deref()).pretty())))
}

pub(crate) async fn acl_policy_read(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    super::uuid_path("policy", &id)?;
    policy_read(st, q, |p| p.id.eq_ignore_ascii_case(&id)).await
}

pub(crate) async fn acl_policy_read_by_name(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    policy_read(st, q, |p| p.name == name).await
}

async fn policy_read(
    st: ApiState,
    q: Option<String>,
    pick: impl Fn(&AclPolicy) -> bool,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let state = AclState::read(&st).await?;
    let p = state
        .policies
        .iter()
        .find(|p| pick(p))
        .ok_or_else(|| super::not_found("policy"))?;
    Ok(state.indexed(json(
        &shape::policy(p, false),
        Params::parse(q.as_deref()).pretty(),
    )))
}

pub(crate) async fn acl_policy_create(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    policy_write(st, q, None, body).await
}

pub(crate) async fn acl_policy_update(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    policy_write(st, q, Some(id), body).await
}

async fn policy_write(
    st: ApiState,
    q: Option<String>,
    id: Option<String>,
    body: Bytes,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let v = json_value(&body)?;
    let (id, name) = write_target("Policy", id, &v)?;
    let state = AclState::read(&st).await?;
    if id == MANAGEMENT_POLICY_ID {
        if name != muster_server::acl::MANAGEMENT_POLICY_NAME {
            return Err(bad(
                "Changing the name of the builtin global-management policy is not permitted",
            ));
        }
        return Err(bad(
            "Changing the Rules for the builtin global-management policy is not permitted",
        ));
    }
    if state.policies.iter().any(|p| p.name == name && p.id != id) {
        return Err(bad(format!(
            "Invalid Policy: A Policy with Name \"{name}\" already exists"
        )));
    }
    let rules = str_field(&v, "Rules");
    Rules::parse(&rules).map_err(|e| bad(format!("Invalid Policy: {e}")))?;
    let definition = json!({
        "Description": str_field(&v, "Description"),
        "Rules": rules,
        "Datacenters": field(&v, "Datacenters").cloned().unwrap_or(Value::Null),
    });
    let p = AclPolicy {
        id: id.clone(),
        name,
        definition: definition.to_string(),
        ..AclPolicy::default()
    };
    write_or(
        &st,
        Command::AclPolicySet(Box::new(p)),
        "Invalid Policy: name already in use",
    )
    .await?;
    policy_read(st, q, |p| p.id == id).await
}

pub(crate) async fn acl_policy_delete(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    if id == MANAGEMENT_POLICY_ID {
        return Err(bad(
            "Delete operation not permitted on the builtin global-management policy",
        ));
    }
    st.server.write(Command::AclPolicyDelete { id }).await?;
    Ok(json(&true, false))
}
