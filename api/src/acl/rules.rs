//! Every route's ACL rule, in one table ([`RULES`]): what the route needs (resource,
//! access, and where the name comes from: the path, the body, this agent, a lookup) and how
//! its reply is filtered. `enforce.rs` applies them.

use muster_server::acl::{Access, Resource};
use serde_json::Value;

pub(crate) use super::catalog_rules::CatalogOp;

/// The checks a request must pass: resource, name, access.
pub(crate) type Checks = Vec<(Resource, String, Access)>;

/// Where a checked name comes from.
#[derive(Clone, Copy)]
pub(crate) enum Name {
    /// No name (`operator`, `keyring`, `acl`).
    None,
    /// A path parameter.
    Path(&'static str),
    /// This agent's node name.
    Agent,
    /// The name of this agent's service whose ID is the path parameter.
    LocalService(&'static str),
    /// A name fixed by the route (`_rexec`).
    Fixed(&'static str),
}

/// What a request needs before its handler runs.
#[derive(Clone, Copy)]
pub(crate) enum Need {
    /// Nothing (status, datacenters, bootstrap): the token is not even resolved, unless the
    /// reply is filtered.
    Open,
    /// A token that resolves, and nothing more (`/v1/acl/token/self`).
    Token,
    Check(Resource, Name, Access),
    /// KV: read a key; write a key; write every key under a prefix (recursive delete).
    /// Listings (`?recurse`, `?keys`) are filtered instead.
    Kv,
    /// Checks read from the JSON body; the function gets the body and the agent's node.
    Body(fn(&Value, &str) -> Checks),
    /// A check of this agent's, by ID: write on its service, or on the node.
    LocalCheck,
    /// A session, by ID: this access on the session's node.
    Session(Access),
    /// A prepared query, by ID: this access on the query's name.
    PreparedQuery(Access),
    /// A catalog registration or deregistration: judged against the node as it is now.
    Catalog(CatalogOp),
    /// A check registered with this agent: write on its instance's service, or the node,
    /// and on the owner of a check it replaces.
    AgentCheck,
    /// A service registered with this agent: write on it, and on one its ID replaces.
    AgentService,
}

/// How a reply is filtered to what the token may read; removing anything sets
/// `X-Consul-Results-Filtered-By-ACLs: true`.
#[derive(Clone, Copy)]
pub(crate) enum Filter {
    None,
    /// KV entries (`Key`) or key names: `key:read` on each.
    Kv,
    /// A list of objects: each `(field path, resource)` must be readable (empty values skip).
    Items(&'static [(&'static str, Resource)]),
    /// An object keyed by name.
    MapKeys(Resource),
    /// An object whose values are checked as [`Filter::Items`].
    MapValues(&'static [(&'static str, Resource)]),
    /// One node and its services (`catalog/node`, `catalog/node-services`): `null` when the
    /// node may not be read, else its services filtered by `service:read`, as Consul does.
    NodeServices,
}

/// One route's rule: `method` (`*` for any) and the path exactly as `router.rs` writes it.
pub(crate) struct Rule {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) need: Need,
    pub(crate) filter: Filter,
}

const fn rule(method: &'static str, path: &'static str, need: Need, filter: Filter) -> Rule {
    Rule {
        method,
        path,
        need,
        filter,
    }
}

const fn check(r: Resource, n: Name, a: Access) -> Need {
    Need::Check(r, n, a)
}

use Access::{Read, Write};
use Filter::{Items, MapKeys, MapValues};
use Name::{Agent, LocalService, Path};
use Need::Open;
use Resource::{Acl, Keyring, Node, Operator, Service, Session};

const NODE_SVC: &[(&str, Resource)] = &[("Node", Node), ("ServiceName", Service)];
const HEALTH: &[(&str, Resource)] = &[("Node.Node", Node), ("Service.Service", Service)];
const NODES: &[(&str, Resource)] = &[("Node", Node)];
const SESSIONS: &[(&str, Resource)] = &[("Node", Session)];
const MEMBERS: &[(&str, Resource)] = &[("Name", Node)];
const AGENT_SERVICES: &[(&str, Resource)] = &[("Service", Service)];
const QUERIES: &[(&str, Resource)] = &[("Name", Resource::Query)];
const EVENTS: &[(&str, Resource)] = &[("Name", Resource::Event)];

/// Every route's rule.
pub(crate) const RULES: &[Rule] = &[
    // The agent's root says what it is, to anyone (it is outside the ACL layer).
    rule("GET", "/", Open, Filter::None),
    rule("GET", "/v1/status/leader", Open, Filter::None),
    rule("GET", "/v1/status/peers", Open, Filter::None),
    rule("*", "/v1/kv/", Need::Kv, Filter::Kv),
    rule("*", "/v1/kv/{*key}", Need::Kv, Filter::Kv),
    rule("GET", "/v1/agent/members", Open, Items(MEMBERS)),
    rule(
        "GET",
        "/v1/agent/self",
        check(Resource::Agent, Agent, Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/join/{addr}",
        check(Resource::Agent, Agent, Write),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/leave",
        check(Resource::Agent, Agent, Write),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/force-leave/{node}",
        check(Operator, Name::None, Write),
        Filter::None,
    ),
    rule("GET", "/v1/agent/services", Open, MapValues(AGENT_SERVICES)),
    rule(
        "GET",
        "/v1/agent/service/{id}",
        check(Service, LocalService("id"), Read),
        Filter::None,
    ),
    rule("GET", "/v1/agent/checks", Open, MapValues(NODE_SVC)),
    rule(
        "PUT",
        "/v1/agent/service/register",
        Need::AgentService,
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/service/deregister/{id}",
        check(Service, LocalService("id"), Write),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/service/maintenance/{id}",
        check(Service, LocalService("id"), Write),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/check/register",
        Need::AgentCheck,
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/check/deregister/{id}",
        Need::LocalCheck,
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/check/pass/{id}",
        Need::LocalCheck,
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/check/warn/{id}",
        Need::LocalCheck,
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/check/fail/{id}",
        Need::LocalCheck,
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/check/update/{id}",
        Need::LocalCheck,
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/agent/health/service/name/{name}",
        check(Service, Path("name"), Read),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/agent/health/service/id/{id}",
        check(Service, LocalService("id"), Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/maintenance",
        check(Node, Agent, Write),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/reload",
        check(Resource::Agent, Agent, Write),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/catalog/register",
        Need::Catalog(CatalogOp::Register),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/catalog/deregister",
        Need::Catalog(CatalogOp::Deregister),
        Filter::None,
    ),
    rule("GET", "/v1/catalog/datacenters", Open, Filter::None),
    rule("GET", "/v1/catalog/nodes", Open, Items(NODES)),
    rule("GET", "/v1/catalog/node/{node}", Open, Filter::NodeServices),
    rule(
        "GET",
        "/v1/catalog/node-services/{node}",
        Open,
        Filter::NodeServices,
    ),
    rule(
        "GET",
        "/v1/catalog/connect/{service}",
        Open,
        Items(NODE_SVC),
    ),
    rule("GET", "/v1/catalog/services", Open, MapKeys(Service)),
    rule("GET", "/v1/catalog/service/{name}", Open, Items(NODE_SVC)),
    rule("GET", "/v1/catalog/service/", Open, Filter::None),
    rule("GET", "/v1/health/service/", Open, Filter::None),
    rule("GET", "/v1/health/node/{node}", Open, Items(NODE_SVC)),
    rule("GET", "/v1/health/checks/{service}", Open, Items(NODE_SVC)),
    rule("GET", "/v1/health/service/{name}", Open, Items(HEALTH)),
    rule("GET", "/v1/health/state/{state}", Open, Items(NODE_SVC)),
    rule("GET", "/v1/health/connect/{service}", Open, Items(HEALTH)),
    rule("GET", "/v1/health/ingress/{service}", Open, Items(HEALTH)),
    rule("GET", "/v1/coordinate/datacenters", Open, Filter::None),
    rule("GET", "/v1/coordinate/nodes", Open, Items(NODES)),
    rule(
        "GET",
        "/v1/coordinate/node/{node}",
        check(Node, Path("node"), Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/coordinate/update",
        Need::Body(coordinate_update),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/session/create",
        Need::Body(session_create),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/session/destroy/{id}",
        Need::Session(Write),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/session/renew/{id}",
        Need::Session(Write),
        Filter::None,
    ),
    rule("GET", "/v1/session/info/{id}", Open, Items(SESSIONS)),
    rule(
        "GET",
        "/v1/session/node/{node}",
        check(Session, Path("node"), Read),
        Filter::None,
    ),
    rule("GET", "/v1/session/info/", Open, Filter::None),
    rule("PUT", "/v1/session/renew/", Open, Filter::None),
    rule("PUT", "/v1/session/destroy/", Open, Filter::None),
    rule("GET", "/v1/session/node/", Open, Filter::None),
    rule("GET", "/v1/session/list", Open, Items(SESSIONS)),
    rule("PUT", "/v1/txn", Need::Body(txn), Filter::None),
    rule("GET", "/v1/query", Open, Items(QUERIES)),
    rule("POST", "/v1/query", Need::Body(query_create), Filter::None),
    rule(
        "GET",
        "/v1/query/{id}",
        Need::PreparedQuery(Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/query/{id}",
        Need::PreparedQuery(Write),
        Filter::None,
    ),
    rule(
        "DELETE",
        "/v1/query/{id}",
        Need::PreparedQuery(Write),
        Filter::None,
    ),
    // Consul runs a prepared query with the token it was stored with, else the caller's: the
    // handler filters its answer (`query.rs`).
    rule("GET", "/v1/query/{id}/execute", Open, Filter::None),
    rule(
        "GET",
        "/v1/query/{id}/explain",
        Need::PreparedQuery(Read),
        Filter::None,
    ),
    rule("PUT", "/v1/acl/bootstrap", Open, Filter::None),
    rule("GET", "/v1/acl/token/self", Need::Token, Filter::None),
    rule(
        "PUT",
        "/v1/agent/token/{kind}",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/policies",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/acl/policy",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/policy/{id}",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/policy/name/{name}",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/acl/policy/{id}",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "DELETE",
        "/v1/acl/policy/{id}",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/tokens",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/acl/token",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/token/{id}",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/acl/token/{id}",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "DELETE",
        "/v1/acl/token/{id}",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/acl/token/{id}/clone",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/roles",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/acl/role",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/role/{id}",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/role/name/{name}",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/acl/role/{id}",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "DELETE",
        "/v1/acl/role/{id}",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/templated-policies",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/templated-policy/name/{*name}",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "POST",
        "/v1/acl/templated-policy/preview/{*name}",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/auth-methods",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/acl/auth-method",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/auth-method/{name}",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "*",
        "/v1/acl/auth-method/{name}",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/binding-rules",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/acl/binding-rule",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/acl/binding-rule/{id}",
        check(Acl, Name::None, Read),
        Filter::None,
    ),
    rule(
        "*",
        "/v1/acl/binding-rule/{id}",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    // The JWT, or the token logging out, is the credential (as in Consul).
    rule("*", "/v1/acl/login", Open, Filter::None),
    rule("*", "/v1/acl/logout", Open, Filter::None),
    // Unknown ACL endpoints: Consul's 401 when disabled, 404 otherwise.
    rule("*", "/v1/acl/{*rest}", Open, Filter::None),
    rule(
        "GET",
        "/v1/operator/keyring",
        check(Keyring, Name::None, Read),
        Filter::None,
    ),
    rule(
        "*",
        "/v1/operator/keyring",
        check(Keyring, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/agent/monitor",
        check(Resource::Agent, Agent, Read),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/agent/metrics",
        check(Resource::Agent, Agent, Read),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/operator/raft/configuration",
        check(Operator, Name::None, Read),
        Filter::None,
    ),
    rule(
        "DELETE",
        "/v1/operator/raft/peer",
        check(Operator, Name::None, Write),
        Filter::None,
    ),
    rule(
        "POST",
        "/v1/operator/raft/transfer-leader",
        check(Operator, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/operator/usage",
        check(Operator, Name::None, Read),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/operator/autopilot/configuration",
        check(Operator, Name::None, Read),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/operator/autopilot/configuration",
        check(Operator, Name::None, Write),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/operator/autopilot/health",
        check(Operator, Name::None, Read),
        Filter::None,
    ),
    rule(
        "GET",
        "/v1/operator/autopilot/state",
        check(Operator, Name::None, Read),
        Filter::None,
    ),
    // Consul's `event_prefix`: write on the name fires it; a list shows what may be read.
    rule(
        "PUT",
        "/v1/event/fire/{name}",
        check(Resource::Event, Path("name"), Write),
        Filter::None,
    ),
    rule("PUT", "/v1/event/fire/", Open, Filter::None),
    // A snapshot holds every secret (and a restore replaces them): `acl:write`, as Consul's.
    rule(
        "*",
        "/v1/snapshot",
        check(Acl, Name::None, Write),
        Filter::None,
    ),
    // Serf queries: `query` write on the query's name. Remote exec: write on Consul's
    // `_rexec` event here, and `agent` write on each node that answers (checked as it does).
    rule(
        "PUT",
        "/v1/agent/query/{name}",
        check(Resource::Query, Path("name"), Write),
        Filter::None,
    ),
    rule(
        "PUT",
        "/v1/agent/exec",
        check(Resource::Event, Name::Fixed("_rexec"), Write),
        Filter::None,
    ),
    rule("GET", "/v1/event/list", Open, Items(EVENTS)),
];

/// A string at a dotted path in a JSON object, any case of each step.
pub(super) fn at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    let mut cur = v;
    for step in path.split('.') {
        cur = super::field(cur, step)?;
    }
    cur.as_str()
}

fn s(v: &Value, path: &str) -> String {
    at(v, path).unwrap_or_default().to_string()
}

fn coordinate_update(v: &Value, _: &str) -> Checks {
    vec![(Node, s(v, "Node"), Write)]
}

fn session_create(v: &Value, agent: &str) -> Checks {
    let node = at(v, "Node").filter(|n| !n.is_empty()).unwrap_or(agent);
    vec![(Session, node.to_string(), Write)]
}

fn query_create(v: &Value, _: &str) -> Checks {
    vec![(Resource::Query, s(v, "Name"), Write)]
}

/// Each operation of a transaction: KV reads need `key:read`, other KV verbs `key:write`,
/// catalog operations write on their node or service.
fn txn(v: &Value, _: &str) -> Checks {
    const KV_READS: &[&str] = &[
        "get",
        "get-tree",
        "check-index",
        "check-session",
        "check-not-exists",
    ];
    let mut out = Vec::new();
    for op in v.as_array().into_iter().flatten() {
        if let Some(kv) = super::field(op, "KV") {
            let verb = s(kv, "Verb");
            let access = if KV_READS.contains(&verb.as_str()) {
                Read
            } else {
                Write
            };
            out.push((Resource::Key, s(kv, "Key"), access));
        } else if let Some(n) = super::field(op, "Node") {
            out.push((Node, s(n, "Node.Node"), Write));
        } else if let Some(sv) = super::field(op, "Service") {
            out.push((Service, s(sv, "Service.Service"), Write));
        } else if let Some(c) = super::field(op, "Check") {
            out.push((Node, s(c, "Check.Node"), Write));
        }
    }
    out
}
