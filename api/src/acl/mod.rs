//! Consul's `/v1/acl/*` endpoints (`policy.rs`, `token.rs` with bootstrap, `role.rs`,
//! `auth_method.rs`, `binding_rule.rs`, `login.rs` with logout), and
//! the one enforcement layer every route passes through (`enforce.rs`: each route's rule,
//! the token a request presents, the 403, and the filtering of list results).
//!
//! With ACLs disabled the endpoints answer Consul's `401 ACL support disabled`.

mod agent_token;
mod auth_method;
mod binding_rule;
mod catalog_rules;
pub(crate) mod enforce;
mod login;
mod policy;
mod role;
mod rules;
mod shape;
mod templated;
mod token;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_server::acl::Authorizer;
use muster_server::model::{AclPolicy, AclRole, AclToken, Consistency, Query, QueryResult};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::ApiState;

pub(crate) use agent_token::*;
pub(crate) use auth_method::*;
pub(crate) use binding_rule::*;
pub(crate) use login::*;
pub(crate) use policy::*;
pub(crate) use role::*;
pub(crate) use templated::*;
pub(crate) use token::*;

/// What the enforcement layer found for a request, for the handlers that need it
/// (`/v1/acl/token/self`).
#[derive(Clone)]
pub(crate) struct RequestToken {
    pub(crate) authz: Arc<Authorizer>,
}

/// Consul's answer to any ACL endpoint when ACLs are off: `401 ACL support disabled`.
fn disabled(st: &ApiState) -> Option<Response> {
    (!st.acl.enabled()).then(|| (StatusCode::UNAUTHORIZED, "ACL support disabled").into_response())
}

/// A key as the agent's body parser compares keys: without case and `_` (`service_id` is
/// `ServiceID`).
fn folded(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// A field of a request body, by Consul's name or any spelling the handlers accept.
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let m = v.as_object()?;
    m.get(name).or_else(|| {
        let want = folded(name);
        m.iter().find(|(k, _)| folded(k) == want).map(|(_, v)| v)
    })
}

/// The first key of `v` (or of an object within it) that another key of the same object
/// also spells, ignoring case and `_`. The ACL check and the handler could read such a body
/// differently (`{"Name":"mine","name":"web"}`), so a body with one is refused. Maps of
/// names the client chooses (meta, headers, tagged addresses, proxy config) are not looked
/// into.
pub(crate) fn ambiguous_key(v: &Value) -> Option<String> {
    const FREE: &[&str] = &[
        "meta",
        "nodemeta",
        "servicemeta",
        "taggedaddresses",
        "header",
        "proxy",
        "connect",
    ];
    match v {
        Value::Object(m) => {
            let mut seen = std::collections::HashSet::new();
            for (k, inner) in m {
                let f = folded(k);
                if !seen.insert(f.clone()) {
                    return Some(k.clone());
                }
                if !FREE.contains(&f.as_str()) {
                    if let Some(found) = ambiguous_key(inner) {
                        return Some(found);
                    }
                }
            }
            None
        }
        Value::Array(l) => l.iter().find_map(ambiguous_key),
        _ => None,
    }
}

fn str_field(v: &Value, name: &str) -> String {
    field(v, name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// A policy or role that is not there: 404 in the words of later Consul versions (1.10
/// answered 403 "ACL not found"; the newer text keeps those words for clients that look for
/// them). A token that is not there is still 403 "ACL not found", as clients expect of it.
fn not_found(what: &str) -> ApiError {
    ApiError::Missing(format!("Requested {what} does not exist: ACL not found"))
}

/// A policy or role ID in a path: Consul looks IDs up in a UUID index, which refuses others.
fn uuid_path(what: &str, id: &str) -> ApiResult<()> {
    if muster_server::is_uuid(id) {
        Ok(())
    } else {
        Err(bad(format!("Invalid {what} ID {id:?}: not a UUID")))
    }
}

/// The ACL tables, read consistently (ACL writes are rare; a stale read right after one
/// would confuse the client that made it).
pub(crate) struct AclState {
    pub(crate) policies: Vec<AclPolicy>,
    pub(crate) tokens: Vec<AclToken>,
    pub(crate) roles: Vec<AclRole>,
    pub(crate) index: u64,
}

impl AclState {
    pub(crate) async fn read(st: &ApiState) -> ApiResult<AclState> {
        let mut out = AclState {
            policies: Vec::new(),
            tokens: Vec::new(),
            roles: Vec::new(),
            index: 0,
        };
        for q in [Query::AclPolicies, Query::AclTokens, Query::AclRoles] {
            let (res, meta) = st.server.read(Consistency::Default, q).await?;
            out.index = out.index.max(meta.index);
            match res {
                QueryResult::AclPolicies(p) => out.policies = p,
                QueryResult::AclTokens(t) => out.tokens = t,
                QueryResult::AclRoles(r) => out.roles = r,
                _ => {}
            }
        }
        Ok(out)
    }

    /// `reply` with `X-Consul-Index`: the ACL tables' index, as Consul's ACL reads report.
    fn indexed(&self, mut reply: Response) -> Response {
        if let Ok(v) = axum::http::HeaderValue::from_str(&self.index.to_string()) {
            reply.headers_mut().insert("X-Consul-Index", v);
        }
        reply
    }

    fn policy_name(&self, id: &str) -> Option<&str> {
        self.policies
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.name.as_str())
    }

    fn role_name(&self, id: &str) -> Option<&str> {
        self.roles
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.name.as_str())
    }

    /// Request links (`[{"ID": …}]` or `[{"Name": …}]`) as stored links (`[{"ID": …}]`).
    fn links(&self, v: Option<&Value>, what: &str) -> ApiResult<Value> {
        let mut out = Vec::new();
        for l in v.and_then(Value::as_array).into_iter().flatten() {
            let (id, name) = (str_field(l, "ID"), str_field(l, "Name"));
            let found = if what == "policy" {
                self.policies
                    .iter()
                    .find(|p| (!id.is_empty() && p.id == id) || (id.is_empty() && p.name == name))
                    .map(|p| p.id.clone())
            } else {
                self.roles
                    .iter()
                    .find(|r| (!id.is_empty() && r.id == id) || (id.is_empty() && r.name == name))
                    .map(|r| r.id.clone())
            };
            let Some(found) = found else {
                return Err(bad(if id.is_empty() {
                    format!("No such ACL {what} with name {name}")
                } else {
                    format!("No such ACL {what} with ID: {id}")
                }));
            };
            if !out.iter().any(|x: &Value| x["ID"] == found.as_str()) {
                out.push(serde_json::json!({ "ID": found }));
            }
        }
        Ok(Value::Array(out))
    }

    /// Stored links with their current names, as Consul answers them (links to deleted
    /// records are dropped).
    fn named_links(&self, def: &Value, field_name: &str) -> Value {
        let named: Vec<Value> = def
            .get(field_name)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|l| {
                let id = l.get("ID")?.as_str()?;
                let name = if field_name == "Policies" {
                    self.policy_name(id)?
                } else {
                    self.role_name(id)?
                };
                Some(serde_json::json!({ "ID": id, "Name": name }))
            })
            .collect();
        Value::Array(named)
    }
}

/// Writes `cmd`; a write the state machine refused (a name or secret already taken) is a
/// 400 saying `taken`.
async fn write_or(st: &ApiState, cmd: muster_server::model::Command, taken: &str) -> ApiResult<()> {
    if st.server.write(cmd).await?.success {
        Ok(())
    } else {
        Err(bad(taken))
    }
}

/// The ID a policy or role write (`kind`) goes to (the URL's, else a new one) and its
/// name, checked as Consul checks them.
fn write_target(kind: &str, url_id: Option<String>, v: &Value) -> ApiResult<(String, String)> {
    let body_id = str_field(v, "ID");
    let id = match url_id {
        Some(id) if !body_id.is_empty() && body_id != id => {
            return Err(bad(format!("{kind} ID in URL and payload do not match")))
        }
        Some(id) => id,
        None if !body_id.is_empty() => {
            return Err(bad(format!("{kind} ID is not allowed on create")))
        }
        None => muster_server::new_uuid(),
    };
    let name = str_field(v, "Name");
    if !policy::valid_name(&name) {
        return Err(bad(format!("Invalid {kind}: invalid Name")));
    }
    Ok((id, name))
}

/// Service identities, node identities and templated policies from a request, checked as
/// Consul checks them.
fn identities(body: &Value) -> ApiResult<(Value, Value, Value)> {
    let svc = field(body, "ServiceIdentities")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    for s in svc.as_array().into_iter().flatten() {
        if str_field(s, "ServiceName").is_empty() {
            return Err(bad(
                "Service identity is missing the service name field on this token",
            ));
        }
    }
    let node = field(body, "NodeIdentities")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    for n in node.as_array().into_iter().flatten() {
        if str_field(n, "NodeName").is_empty() {
            return Err(bad(
                "Node identity is missing the node name field on this token",
            ));
        }
    }
    let mut templated = Vec::new();
    for t in field(body, "TemplatedPolicies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        templated.push(templated_policy(t)?);
    }
    Ok((svc, node, Value::Array(templated)))
}

/// One templated policy of a token or role, in Consul's shape (`TemplateVariables` with a
/// lower-case `name`), once its template renders with it.
fn templated_policy(t: &Value) -> ApiResult<Value> {
    let template = str_field(t, "TemplateName");
    let name = field(t, "TemplateVariables")
        .and_then(|v| field(v, "name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    muster_server::acl::templated::render(&template, name).map_err(bad)?;
    let mut out = serde_json::json!({ "TemplateName": template });
    if let Some(n) = name {
        out["TemplateVariables"] = serde_json::json!({ "name": n });
    }
    if let Some(dcs) =
        field(t, "Datacenters").filter(|d| d.as_array().is_some_and(|a| !a.is_empty()))
    {
        out["Datacenters"] = dcs.clone();
    }
    Ok(out)
}
