//! `/v1/acl/templated-policies`, `/v1/acl/templated-policy/name/<name>` and
//! `/v1/acl/templated-policy/preview/<name>` (Consul 1.17): the built-in rule templates a
//! token or role may name, and the policy one renders to.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use muster_server::acl::templated::{render, template, Template, TEMPLATES};
use serde_json::{json, Map, Value};

use super::{bad, disabled, field, shape};
use crate::body::json_value;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::reply::json;
use crate::ApiState;

fn shown(t: &Template) -> Value {
    json!({"TemplateName": t.name, "Schema": t.schema, "Template": t.template})
}

fn named(name: &str) -> ApiResult<&'static Template> {
    template(name).ok_or_else(|| {
        ApiError::Missing(format!(
            "Invalid templated policy Name: {name:?} does not exist"
        ))
    })
}

pub(crate) async fn acl_templated_policy_list(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let all: Map<String, Value> = TEMPLATES
        .iter()
        .map(|t| (t.name.into(), shown(t)))
        .collect();
    Ok(json(&all, Params::parse(q.as_deref()).pretty()))
}

pub(crate) async fn acl_templated_policy_read(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    Ok(json(
        &shown(named(&name)?),
        Params::parse(q.as_deref()).pretty(),
    ))
}

/// The policy a template renders to with the body's `Name`, as Consul shows it: its ID is
/// the rules' bytes in hex followed by an empty FNV-128a sum (Consul's `hasher.Sum(rules)`
/// appends rather than hashes), its name `synthetic-policy-<ID>`.
pub(crate) async fn acl_templated_policy_preview(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let t = named(&name)?;
    let v = if body.is_empty() {
        json!({})
    } else {
        json_value(&body)?
    };
    let var = field(&v, "Name").and_then(Value::as_str);
    let rules = render(t.name, var).map_err(bad)?;
    const FNV128A_EMPTY: &str = "6c62272e07bb014262b821756295c58d";
    let id: String = rules
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        + FNV128A_EMPTY;
    let out = json!({
        "ID": id,
        "Name": format!("synthetic-policy-{id}"),
        "Description": format!("synthetic policy generated from templated policy: {}", t.name),
        "Rules": rules,
        "Hash": shape::hash(&[t.name, &rules]),
        "CreateIndex": 0,
        "ModifyIndex": 0,
    });
    Ok(json(&out, Params::parse(q.as_deref()).pretty()))
}
