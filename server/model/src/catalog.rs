//! Nodes, their services and checks, and a check's health status.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A machine in the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// Node ID (a UUID in Consul); empty when the registrant gave none.
    pub id: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A service instance on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    /// Empty means "use the node's address", as in Consul.
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
    pub weight_passing: u32,
    pub weight_warning: u32,
    pub enable_tag_override: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Service {
    /// The `meta` key under which a service keeps, as one JSON object, the fields of Consul's
    /// service definition that Muster stores and returns but does not act on: `Kind`, `Proxy`,
    /// `Connect`, `TaggedAddresses` and `SocketPath`. Keeping them in `meta` leaves the Raft
    /// log, the RPC frames and `state.redb` in the format they have, so existing data dirs
    /// and older servers still read every service. The HTTP API refuses the key in a
    /// client's `Meta` and never shows it there; it returns the fields under their own names.
    pub const EXTRA_META_KEY: &'static str = "consul-muster-extra";
}

/// `/v1/catalog/services`' map: every service name with the union of its instances' tags,
/// each tag once, in the order first seen.
pub fn tags_by_service(
    instances: impl IntoIterator<Item = (String, Vec<String>)>,
) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, instance_tags) in instances {
        let tags = map.entry(name).or_default();
        for t in instance_tags {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
    }
    map
}

/// Health of a check, ordered from best to worst so `max` gives the aggregate.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum HealthStatus {
    Passing,
    Warning,
    #[default]
    Critical,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Passing => "passing",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
        }
    }

    /// Parses Consul's spelling (`passing`, `warning`, `critical`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "passing" => Some(HealthStatus::Passing),
            "warning" => Some(HealthStatus::Warning),
            "critical" => Some(HealthStatus::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A health check, bound to a node and optionally to one of its services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub node: String,
    pub id: String,
    pub name: String,
    pub status: HealthStatus,
    pub notes: String,
    pub output: String,
    /// Empty for node-level checks such as `serfHealth`.
    pub service_id: String,
    pub service_name: String,
    pub create_index: u64,
    pub modify_index: u64,
    /// Consul's `Type`: `script`, `http`, `tcp`, `ttl`, `maintenance`; empty for `serfHealth`
    /// and for a check the catalog was given without one.
    pub kind: String,
    /// `Interval` and `Timeout` as Go durations (`10s`), empty where Consul leaves them empty.
    pub interval: String,
    pub timeout: String,
    pub exposed_port: u16,
    /// Consul's `Definition` object as JSON text; empty means `{}`. Kept as text so the
    /// fields Consul adds to it never change this type's binary format.
    pub definition: String,
}

/// A catalog registration: a node, optionally one service, and checks, applied together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub node: Node,
    /// Leave the node record as it is when it already exists (Consul's `SkipNodeUpdate`).
    pub skip_node_update: bool,
    pub service: Option<Service>,
    pub checks: Vec<Check>,
}
