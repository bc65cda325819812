//! [`Query`]: one read, with the consistency it asks for, and its result and index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    AclAuthMethod, AclBindingRule, AclMeta, AclPolicy, AclResolved, AclRole, AclToken,
    AutopilotConfig, Check, HealthStatus, KvEntry, Node, NodeCoordinate, PreparedExecute,
    PreparedQuery, PreparedRun, Service, Session,
};

/// Read consistency, as Consul's query parameters choose it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Linearizable, as cheaply as possible: a leader inside its lease answers from its own
    /// state; otherwise (or on a follower) through the leader's read index.
    #[default]
    Default,
    /// Any server's local state; answers with no leader at all.
    Stale,
    /// Linearizable: the leader always confirms its leadership with a quorum first.
    Consistent,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Default => "leader",
            Consistency::Stale => "stale",
            Consistency::Consistent => "consistent",
        }
    }
}

/// What a read reports besides its data (Consul's `X-Consul-*` headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMeta {
    /// The index of the data read: `X-Consul-Index`.
    pub index: u64,
    /// Whether a leader is currently known: `X-Consul-KnownLeader`.
    pub known_leader: bool,
    /// Milliseconds since the serving server last heard from the leader (0 on the leader).
    pub last_contact_ms: u64,
}

/// A read that can be executed locally or shipped to a server (for client agents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    KvGet {
        key: String,
    },
    KvList {
        prefix: String,
    },
    KvKeys {
        prefix: String,
        separator: Option<String>,
    },
    Nodes,
    Node {
        name: String,
    },
    NodeChecks {
        name: String,
    },
    /// Every service name with the union of its instances' tags.
    Services,
    /// The instances of one service, with their nodes (not health-filtered).
    ServiceNodes {
        name: String,
    },
    /// The instances of one service with their nodes and all checks that apply to them.
    ServiceHealth {
        name: String,
    },
    /// The service-level checks of one service.
    ServiceChecks {
        name: String,
    },
    /// Checks in a state; `None` means any.
    ChecksInState {
        state: Option<HealthStatus>,
    },
    Session {
        id: String,
    },
    Sessions,
    NodeSessions {
        node: String,
    },
    /// As [`Query::Services`], counting only the services of nodes whose meta has every one
    /// of these pairs (`?node-meta=`).
    ServicesOnNodes {
        node_meta: Vec<(String, String)>,
    },
    /// Every service instance with its node, on nodes whose meta has every one of these
    /// pairs (none: every node): what `/v1/catalog/services?filter=` and the usage counts read.
    ServiceInstances {
        node_meta: Vec<(String, String)>,
    },
    /// Every prepared query.
    PreparedQueries,
    /// One prepared query, by ID.
    PreparedQuery {
        id: String,
    },
    /// The query an ID or name resolves to, rendered if a template (Consul's explain).
    PreparedQueryExplain {
        id_or_name: String,
    },
    /// Resolve and run a prepared query.
    PreparedQueryExecute(Box<PreparedExecute>),
    /// Every node's network coordinate, by node name.
    Coordinates,
    /// Every ACL policy.
    AclPolicies,
    /// Every ACL token.
    AclTokens,
    /// Every ACL role.
    AclRoles,
    /// The token with this secret, with its policies and roles (expired or not).
    AclResolve {
        secret: String,
    },
    /// The ACL system's state (the bootstrap index).
    AclMeta,
    /// Every auth method.
    AclAuthMethods,
    /// Every binding rule.
    AclBindingRules,
    /// The autopilot configuration, if one was written.
    AutopilotConfig,
}

/// One instance in a health query: its node, the service, and every check that applies
/// (node-level checks such as `serfHealth` and maintenance included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    pub node: Node,
    pub service: Service,
    pub checks: Vec<Check>,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryResult {
    Kv(Option<KvEntry>),
    KvList(Vec<KvEntry>),
    Keys(Vec<String>),
    Nodes(Vec<Node>),
    Node(Option<(Node, Vec<Service>)>),
    Checks(Vec<Check>),
    Services(BTreeMap<String, Vec<String>>),
    ServiceNodes(Vec<(Node, Service)>),
    ServiceHealth(Vec<ServiceHealth>),
    Sessions(Vec<Session>),
    PreparedQueries(Vec<PreparedQuery>),
    PreparedQueryRun(PreparedRun),
    Coordinates(Vec<NodeCoordinate>),
    AclPolicies(Vec<AclPolicy>),
    AclTokens(Vec<AclToken>),
    AclRoles(Vec<AclRole>),
    AclResolved(Option<Box<AclResolved>>),
    AclMeta(AclMeta),
    AclAuthMethods(Vec<AclAuthMethod>),
    AclBindingRules(Vec<AclBindingRule>),
    AutopilotConfig(Option<AutopilotConfig>),
}
