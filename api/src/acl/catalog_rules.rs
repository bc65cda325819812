//! The rules that depend on what the catalog or this agent already holds, as Consul's
//! `vetRegisterWithACL`, `vetDeregisterWithACL` and `vetCheckRegister`: a check is judged
//! by the name of the service it belongs to (its `ServiceID` names an instance, not a
//! service), and a registration that only re-posts a node's unchanged details needs no
//! `node:write`.

use muster_server::acl::{Access, Authorizer, Resource};
use muster_server::model::{Consistency, Node, Query, QueryResult, Service};
use serde_json::Value;

use super::rules::{at, Checks};
use super::{field, str_field};
use crate::ApiState;
use Access::Write;

/// Which catalog write a body is.
#[derive(Clone, Copy)]
pub(crate) enum CatalogOp {
    Register,
    Deregister,
}

/// The checks a `/v1/catalog/register` or `/deregister` body needs, given the node as the
/// catalog holds it now.
pub(super) async fn catalog(st: &ApiState, authz: &Authorizer, op: CatalogOp, v: &Value) -> Checks {
    let node = str_field(v, "Node");
    let existing = match st
        .server
        .read(Consistency::Default, Query::Node { name: node.clone() })
        .await
    {
        Ok((QueryResult::Node(n), _)) => n,
        _ => None,
    };
    match op {
        CatalogOp::Register => register(v, &node, existing),
        // `node:write` may remove anything on the node (an agent whose token lost the
        // service's rights can still clean up after it).
        CatalogOp::Deregister if authz.allowed(Resource::Node, &node, Write) => Vec::new(),
        CatalogOp::Deregister => {
            let services = existing.map(|(_, s)| s).unwrap_or_default();
            let service_id = str_field(v, "ServiceID");
            let check_id = str_field(v, "CheckID");
            let owner = if !service_id.is_empty() {
                Some(service_id)
            } else if !check_id.is_empty() {
                check_service(st, &node, &check_id).await
            } else {
                None
            };
            vec![owned_by(&services, owner.as_deref(), &node)]
        }
    }
}

/// The service ID a catalog check belongs to, if any.
async fn check_service(st: &ApiState, node: &str, check_id: &str) -> Option<String> {
    let q = Query::NodeChecks {
        name: node.to_string(),
    };
    match st.server.read(Consistency::Default, q).await {
        Ok((QueryResult::Checks(l), _)) => l
            .into_iter()
            .find(|c| c.id == check_id)
            .map(|c| c.service_id)
            .filter(|s| !s.is_empty()),
        _ => None,
    }
}

/// What writing something that belongs to `service_id` (none: the node itself) needs:
/// `service:write` on that instance's service, else `node:write` (an unknown instance is
/// the node's to answer for).
fn owned_by(
    services: &[Service],
    service_id: Option<&str>,
    node: &str,
) -> (Resource, String, Access) {
    match service_id.and_then(|id| services.iter().find(|s| s.id == id)) {
        Some(s) => (Resource::Service, s.name.clone(), Write),
        None => (Resource::Node, node.to_string(), Write),
    }
}

fn register(v: &Value, node: &str, existing: Option<(Node, Vec<Service>)>) -> Checks {
    let mut out = Vec::new();
    let (current, services) = match existing {
        Some((n, s)) => (Some(n), s),
        None => (None, Vec::new()),
    };
    let skip_node = field(v, "SkipNodeUpdate").and_then(Value::as_bool) == Some(true);
    if current
        .as_ref()
        .is_none_or(|n| !skip_node && changes_node(v, n))
    {
        out.push((Resource::Node, node.to_string(), Write));
    }
    let service = field(v, "Service").filter(|s| s.is_object());
    let mut service_id = None;
    if let Some(svc) = service {
        let name = str_field(svc, "Service");
        let id = Some(str_field(svc, "ID"))
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| name.clone());
        // Re-using an instance ID of another service takes that one over: both are written.
        if let Some(old) = services.iter().find(|s| s.id == id && s.name != name) {
            out.push((Resource::Service, old.name.clone(), Write));
        }
        out.push((Resource::Service, name, Write));
        service_id = Some(id);
    }
    let checks = field(v, "Check").into_iter().chain(
        field(v, "Checks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten(),
    );
    for c in checks.filter(|c| c.is_object()) {
        let sid = at(c, "ServiceID").filter(|s| !s.is_empty());
        if sid.is_some() && sid == service_id.as_deref() {
            continue;
        }
        out.push(owned_by(&services, sid, node));
    }
    out.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    out.dedup();
    out
}

/// Whether a registration would change the node's own details (Consul's `ChangesNode`).
fn changes_node(v: &Value, n: &Node) -> bool {
    let map = |k: &str| -> std::collections::BTreeMap<String, String> {
        field(v, k)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    str_field(v, "ID") != n.id
        || str_field(v, "Address") != n.address
        || map("TaggedAddresses") != n.tagged_addresses
        || map("NodeMeta") != n.meta
}

/// This agent's service instances, as (ID, name) pairs in `Service` form.
fn local_services(st: &ApiState) -> Vec<Service> {
    st.local.as_ref().map_or_else(Vec::new, |l| {
        l.services()
            .into_iter()
            .map(|s| Service {
                id: s.id,
                name: s.name,
                ..Service::default()
            })
            .collect()
    })
}

/// `/v1/agent/check/register`: write on the owner of the local instance the check names
/// (its service, else this node), and on the owner of any check it replaces (Consul's
/// `vetCheckRegister`: a service's token must not overwrite the node's checks).
pub(super) fn agent_check(st: &ApiState, v: &Value) -> Checks {
    let agent = st.agent.node_name();
    let services = local_services(st);
    let sid = at(v, "ServiceID").filter(|s| !s.is_empty());
    let mut out = vec![owned_by(&services, sid, &agent)];
    let id = ["ID", "CheckID", "Name"]
        .iter()
        .find_map(|k| at(v, k).filter(|s| !s.is_empty()));
    let replaced = id.and_then(|id| {
        let l = st.local.as_ref()?;
        l.checks().into_iter().find(|c| c.id == id)
    });
    if let Some(c) = replaced {
        let owner = Some(c.service_id.as_str()).filter(|s| !s.is_empty());
        out.push(owned_by(&services, owner, &agent));
    }
    out.dedup();
    out
}

/// `/v1/agent/service/register`: `service:write` on its name, and on the service of a local
/// instance its ID would replace (Consul's `vetServiceRegister`).
pub(super) fn agent_service(st: &ApiState, v: &Value) -> Checks {
    let name = str_field(v, "Name");
    let id = Some(str_field(v, "ID"))
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| name.clone());
    let mut out = vec![(Resource::Service, name.clone(), Write)];
    if let Some(old) = local_services(st)
        .into_iter()
        .find(|s| s.id == id && s.name != name)
    {
        out.push((Resource::Service, old.name, Write));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> Node {
        Node {
            name: "n1".into(),
            address: "10.0.0.1".into(),
            ..Node::default()
        }
    }

    fn svc(id: &str, name: &str) -> Service {
        Service {
            id: id.into(),
            name: name.into(),
            ..Service::default()
        }
    }

    fn names(c: &Checks) -> Vec<String> {
        c.iter()
            .map(|(r, n, _)| format!("{}:{n}", r.as_str()))
            .collect()
    }

    #[test]
    fn registrations_need_what_consul_vets() {
        let existing = Some((node(), vec![svc("web-1", "web"), svc("db-1", "db")]));
        // Re-posting the node unchanged with a service and its check: the service alone.
        let v = json!({"Node": "n1", "Address": "10.0.0.1",
            "Service": {"ID": "web-2", "Service": "web"},
            "Check": {"CheckID": "c", "ServiceID": "web-2"}});
        assert_eq!(
            names(&register(&v, "n1", existing.clone())),
            ["service:web"]
        );
        // A check on another existing instance: that instance's service, by name.
        let v = json!({"Node": "n1", "Address": "10.0.0.1",
            "Checks": [{"CheckID": "c", "ServiceID": "db-1"}]});
        assert_eq!(names(&register(&v, "n1", existing.clone())), ["service:db"]);
        // A node-level check, a changed address, or a new node: the node.
        let v = json!({"Node": "n1", "Address": "10.0.0.1", "Check": {"CheckID": "c"}});
        assert_eq!(names(&register(&v, "n1", existing.clone())), ["node:n1"]);
        let v = json!({"Node": "n1", "Address": "10.0.0.9", "Service": {"Service": "web"}});
        assert_eq!(
            names(&register(&v, "n1", existing.clone())),
            ["node:n1", "service:web"]
        );
        let v = json!({"Node": "n1", "Address": "10.0.0.9", "SkipNodeUpdate": true,
            "Service": {"Service": "web"}});
        assert_eq!(
            names(&register(&v, "n1", existing.clone())),
            ["service:web"]
        );
        let v = json!({"Node": "n2", "Address": "10.0.0.1", "Service": {"Service": "web"}});
        assert_eq!(names(&register(&v, "n2", None)), ["node:n2", "service:web"]);
        // Taking over another service's instance ID needs both services.
        let v = json!({"Node": "n1", "Address": "10.0.0.1",
            "Service": {"ID": "db-1", "Service": "web"}});
        assert_eq!(
            names(&register(&v, "n1", existing)),
            ["service:db", "service:web"]
        );
    }

    #[test]
    fn an_instance_is_judged_by_its_service_name() {
        let services = [svc("web-1", "web")];
        let (r, n, _) = owned_by(&services, Some("web-1"), "n1");
        assert_eq!((r, n.as_str()), (Resource::Service, "web"));
        let (r, n, _) = owned_by(&services, Some("gone"), "n1");
        assert_eq!((r, n.as_str()), (Resource::Node, "n1"));
    }
}
