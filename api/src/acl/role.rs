//! `/v1/acl/role[/…]` and `/v1/acl/roles`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use muster_server::model::{AclRole, Command};
use serde_json::{json, Value};

use super::{bad, disabled, field, identities, shape, str_field, write_or, write_target, AclState};
use crate::body::json_value;
use crate::error::ApiResult;
use crate::params::Params;
use crate::reply::json;
use crate::ApiState;

pub(crate) async fn acl_role_list(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let p = Params::parse(q.as_deref());
    let state = AclState::read(&st).await?;
    let list: Vec<Value> = state
        .roles
        .iter()
        .map(|r| shape::role(r, &state))
        .filter(|r| {
            p.get("policy").is_none_or(|id| {
                r["Policies"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x["ID"] == id))
            })
        })
        .collect();
    Ok(state.indexed(json(&list, p.pretty())))
}

pub(crate) async fn acl_role_read(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    super::uuid_path("role", &id)?;
    role_read(st, q, |r| r.id.eq_ignore_ascii_case(&id)).await
}

pub(crate) async fn acl_role_read_by_name(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    role_read(st, q, |r| r.name == name).await
}

async fn role_read(
    st: ApiState,
    q: Option<String>,
    pick: impl Fn(&AclRole) -> bool,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let state = AclState::read(&st).await?;
    let r = state
        .roles
        .iter()
        .find(|r| pick(r))
        .ok_or_else(|| super::not_found("role"))?;
    Ok(state.indexed(json(
        &shape::role(r, &state),
        Params::parse(q.as_deref()).pretty(),
    )))
}

pub(crate) async fn acl_role_create(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    role_write(st, q, None, body).await
}

pub(crate) async fn acl_role_update(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    role_write(st, q, Some(id), body).await
}

async fn role_write(
    st: ApiState,
    q: Option<String>,
    id: Option<String>,
    body: Bytes,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let v = json_value(&body)?;
    let (id, name) = write_target("Role", id, &v)?;
    let state = AclState::read(&st).await?;
    if state.roles.iter().any(|r| r.name == name && r.id != id) {
        return Err(bad(format!(
            "Invalid Role: A Role with Name \"{name}\" already exists"
        )));
    }
    let (svc, node, templated) = identities(&v)?;
    let def = json!({
        "Description": str_field(&v, "Description"),
        "Policies": state.links(field(&v, "Policies"), "policy")?,
        "ServiceIdentities": svc,
        "NodeIdentities": node,
        "TemplatedPolicies": templated,
    });
    let r = AclRole {
        id: id.clone(),
        name,
        definition: def.to_string(),
        ..AclRole::default()
    };
    write_or(
        &st,
        Command::AclRoleSet(Box::new(r)),
        "Invalid Role: name already in use",
    )
    .await?;
    role_read(st, q, |r| r.id == id).await
}

pub(crate) async fn acl_role_delete(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    st.server.write(Command::AclRoleDelete { id }).await?;
    Ok(json(&true, false))
}
