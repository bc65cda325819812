//! `/v1/acl/binding-rule[/…]` and `/v1/acl/binding-rules`: binding rules, checked as Consul's
//! `ACL.BindingRuleSet` checks them. Selectors are Consul's filter expressions (the one
//! evaluator in `filter.rs`) over `value.<name>` and `list.<name>`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use muster_server::acl::binder::{check_bind_name, Identity};
use muster_server::model::{AclBindingRule, Command, Consistency, Query, QueryResult};
use serde::Serialize;
use serde_json::{json, Value};

use super::auth_method::{indexed, methods};
use super::{bad, disabled, str_field};
use crate::body::json_value;
use crate::error::{ApiError, ApiResult};
use crate::filter::{self, Expr, Filterable};
use crate::params::Params;
use crate::reply::json;
use crate::ApiState;

/// What a selector may name: Consul's `fieldDetails` of a `jwt` identity.
#[derive(Serialize)]
struct Selectable {
    value: BTreeMap<String, String>,
    list: BTreeMap<String, Vec<String>>,
}

impl Filterable for Selectable {
    fn sample() -> Self {
        Selectable {
            value: BTreeMap::new(),
            list: BTreeMap::new(),
        }
    }
}

/// A selector parsed and checked; `None` for the empty selector, which matches every login.
pub(super) fn selector(s: &str) -> Result<Option<Expr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    filter::parse_for::<Selectable>(s).map(Some)
}

/// Whether a rule's selector matches a login's identity (one that does not parse matches
/// nothing, as in Consul).
pub(super) fn matches(selector_text: &str, identity: &Identity) -> bool {
    match selector(selector_text) {
        Ok(None) => true,
        Ok(Some(e)) => e.matches(&identity.selectable()),
        Err(_) => false,
    }
}

/// Every binding rule, read consistently, and the ACL index.
pub(super) async fn rules(st: &ApiState) -> ApiResult<(Vec<AclBindingRule>, u64)> {
    let (res, meta) = st
        .server
        .read(Consistency::Default, Query::AclBindingRules)
        .await?;
    match res {
        QueryResult::AclBindingRules(r) => Ok((r, meta.index)),
        _ => Ok((Vec::new(), meta.index)),
    }
}

/// A rule's definition field.
pub(super) fn def_field(r: &AclBindingRule, k: &str) -> String {
    let d: Value = serde_json::from_str(&r.definition).unwrap_or_default();
    d.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// A rule as Consul answers it (`structs.ACLBindingRule`).
fn shape(r: &AclBindingRule) -> Value {
    json!({
        "ID": r.id,
        "Description": def_field(r, "Description"),
        "AuthMethod": r.auth_method,
        "Selector": def_field(r, "Selector"),
        "BindType": def_field(r, "BindType"),
        "BindName": def_field(r, "BindName"),
        "CreateIndex": r.create_index,
        "ModifyIndex": r.modify_index,
    })
}

pub(crate) async fn acl_binding_rule_list(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let p = Params::parse(q.as_deref());
    let (list, index) = rules(&st).await?;
    let method = p.get("authmethod").filter(|m| !m.is_empty());
    let list: Vec<Value> = list
        .iter()
        .filter(|r| method.is_none_or(|m| r.auth_method == m))
        .map(shape)
        .collect();
    Ok(indexed(json(&list, p.pretty()), index))
}

pub(crate) async fn acl_binding_rule_read(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    rule_reply(&st, q, &id).await
}

async fn rule_reply(st: &ApiState, q: Option<String>, id: &str) -> ApiResult<Response> {
    let (list, index) = rules(st).await?;
    let r = list.iter().find(|r| r.id == id).ok_or(ApiError::NotFound)?;
    Ok(indexed(
        json(&shape(r), Params::parse(q.as_deref()).pretty()),
        index,
    ))
}

pub(crate) async fn acl_binding_rule_create(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    rule_write(st, q, None, body).await
}

pub(crate) async fn acl_binding_rule_update(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    rule_write(st, q, Some(id), body).await
}

async fn rule_write(
    st: ApiState,
    q: Option<String>,
    url_id: Option<String>,
    body: Bytes,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let v = json_value(&body)?;
    let body_id = str_field(&v, "ID");
    let id = match url_id {
        Some(u) if !body_id.is_empty() && body_id != u => {
            return Err(bad("BindingRule ID in URL and payload do not match"))
        }
        Some(u) => u,
        None => body_id,
    };
    let mut method = str_field(&v, "AuthMethod");
    let (all, _) = rules(&st).await?;
    let id = if id.is_empty() {
        muster_server::new_uuid()
    } else {
        let Some(old) = all.iter().find(|r| r.id == id) else {
            return Err(bad(format!("cannot find binding rule {id}")));
        };
        if method.is_empty() {
            method.clone_from(&old.auth_method);
        } else if method != old.auth_method {
            return Err(bad("the AuthMethod field of an Binding Rule is immutable"));
        }
        id
    };
    if method.is_empty() {
        return Err(bad("Invalid Binding Rule: no AuthMethod is set"));
    }
    let (methods, _) = methods(&st).await?;
    let Some(m) = methods.iter().find(|m| m.name == method) else {
        return Err(bad(format!("cannot find auth method with name {method:?}")));
    };
    let validator = st
        .acl
        .validators()
        .get(m)
        .map_err(|e| bad(format!("Invalid Auth Method: {e}")))?;
    let sel = str_field(&v, "Selector");
    selector(&sel).map_err(|e| bad(format!("invalid Binding Rule: Selector is invalid: {e}")))?;
    let (bind_type, bind_name) = (str_field(&v, "BindType"), str_field(&v, "BindName"));
    if bind_type.is_empty() {
        return Err(bad("Invalid Binding Rule: no BindType is set"));
    }
    if bind_name.is_empty() {
        return Err(bad("Invalid Binding Rule: no BindName is set"));
    }
    if !matches!(bind_type.as_str(), "service" | "node" | "role" | "policy") {
        return Err(bad(format!(
            "Invalid Binding Rule: unknown BindType {bind_type:?}"
        )));
    }
    let vars: Vec<String> = Identity::blank(&validator.config)
        .projected()
        .into_keys()
        .collect();
    check_bind_name(&bind_type, &bind_name, &vars)
        .map_err(|e| bad(format!("Invalid Binding Rule: invalid BindName: {e}")))?;
    let def = json!({
        "Description": str_field(&v, "Description"),
        "Selector": sel,
        "BindType": bind_type,
        "BindName": bind_name,
    });
    let r = AclBindingRule {
        id: id.clone(),
        auth_method: method.clone(),
        definition: def.to_string(),
        ..AclBindingRule::default()
    };
    if !st
        .server
        .write(Command::AclBindingRuleSet(Box::new(r)))
        .await?
        .success
    {
        return Err(bad(format!("cannot find auth method with name {method:?}")));
    }
    rule_reply(&st, q, &id).await
}

pub(crate) async fn acl_binding_rule_delete(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    st.server
        .write(Command::AclBindingRuleDelete { id })
        .await?;
    Ok(json(&true, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_read_values_and_lists() {
        let id = Identity {
            values: [("name".to_string(), "web".to_string())].into(),
            lists: [(
                "groups".to_string(),
                vec!["admins".to_string(), "ops".into()],
            )]
            .into(),
        };
        assert!(matches("", &id), "the empty selector matches every login");
        assert!(matches(r#"value.name == "web""#, &id));
        assert!(!matches(r#"value.name == "db""#, &id));
        assert!(matches(r#""admins" in list.groups"#, &id));
        assert!(!matches(r#""dev" in list.groups"#, &id));
        assert!(matches(
            r#"value.name == web and "ops" in list.groups and not ("x" in list.groups)"#,
            &id
        ));
        assert!(
            !matches("value.name ==", &id),
            "a bad selector matches nothing"
        );
        let e = selector("other.name == x").expect_err("refused");
        assert!(e.contains("is not valid"), "{e}");
    }
}
