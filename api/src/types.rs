//! Consul's JSON shapes, apart from the Raft model so either can change alone.

use std::collections::BTreeMap;

use base64::Engine;
use muster_server::model::{Check, KvEntry, Node, Service};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvPair {
    pub lock_index: u64,
    pub key: String,
    pub flags: u64,
    /// Base64; `null` for an empty value, as Consul.
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl From<KvEntry> for KvPair {
    fn from(e: KvEntry) -> Self {
        KvPair {
            lock_index: e.lock_index,
            key: e.key,
            flags: e.flags,
            value: (!e.value.is_empty())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&e.value)),
            session: e.session,
            create_index: e.create_index,
            modify_index: e.modify_index,
        }
    }
}

/// A gossip member, as `/v1/agent/members`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Member {
    pub name: String,
    pub addr: String,
    pub port: u16,
    pub tags: BTreeMap<String, String>,
    /// 1 alive, 2 leaving, 3 left, 4 failed.
    pub status: u8,
    pub protocol_min: u8,
    pub protocol_max: u8,
    pub protocol_cur: u8,
    pub delegate_min: u8,
    pub delegate_max: u8,
    pub delegate_cur: u8,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogNode {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    /// `null` when empty, as Consul stores a node registered without them.
    #[serde(serialize_with = "null_if_empty")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(serialize_with = "null_if_empty")]
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl From<Node> for CatalogNode {
    fn from(n: Node) -> Self {
        CatalogNode {
            id: n.id,
            node: n.name,
            address: n.address,
            datacenter: n.datacenter,
            tagged_addresses: n.tagged_addresses,
            meta: n.meta,
            create_index: n.create_index,
            modify_index: n.modify_index,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

/// The fields a service was registered with that Muster keeps but does not act on (Connect's,
/// and Consul 1.17's `Locality`), kept in its `meta` under
/// [`Service::EXTRA_META_KEY`] and returned under their own names (absent when not given).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceExtra {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// Consul 1.17's `{"Region", "Zone"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<serde_json::Value>,
    /// The service's own tagged addresses (`{"lan": {"Address", "Port"}, ...}`), for the
    /// `TaggedAddresses` of service objects.
    #[serde(skip)]
    pub tagged_addresses: Option<serde_json::Value>,
}

impl ServiceExtra {
    /// Consul's catalog shows `Proxy` and `Connect` on every service, empty when not set.
    fn with_connect_defaults(&mut self) {
        self.proxy.get_or_insert_with(
            || serde_json::json!({"Mode": "", "MeshGateway": {}, "Expose": {}}),
        );
        self.connect.get_or_insert_with(|| serde_json::json!({}));
    }

    /// Takes the reserved key out of a service's meta and reads the fields kept under it.
    pub fn split(meta: &mut BTreeMap<String, String>) -> ServiceExtra {
        let Some(raw) = meta.remove(Service::EXTRA_META_KEY) else {
            return ServiceExtra::default();
        };
        let mut m = match serde_json::from_str(&raw) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return ServiceExtra::default(),
        };
        let text = |v: Option<serde_json::Value>| v.and_then(|v| v.as_str().map(str::to_string));
        ServiceExtra {
            kind: text(m.remove("Kind")),
            proxy: m.remove("Proxy"),
            connect: m.remove("Connect"),
            socket_path: text(m.remove("SocketPath")),
            locality: m.remove("Locality"),
            tagged_addresses: m.remove("TaggedAddresses"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub address: String,
    /// `null` when empty, as Consul's catalog returns it.
    #[serde(serialize_with = "null_if_empty")]
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    /// The ones it was registered with.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub weights: Weights,
    pub enable_tag_override: bool,
    #[serde(flatten)]
    pub extra: ServiceExtra,
    pub create_index: u64,
    pub modify_index: u64,
}

impl From<Service> for AgentService {
    fn from(mut s: Service) -> Self {
        let mut extra = ServiceExtra::split(&mut s.meta);
        extra.with_connect_defaults();
        let tagged_addresses = registered_addresses(extra.tagged_addresses.as_ref());
        AgentService {
            id: s.id,
            service: s.name,
            tags: s.tags,
            address: s.address,
            meta: s.meta,
            port: s.port,
            weights: Weights {
                passing: s.weight_passing,
                warning: s.weight_warning,
            },
            tagged_addresses,
            enable_tag_override: s.enable_tag_override,
            extra,
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub status: String,
    pub notes: String,
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    /// `ttl`, `http`, `tcp`, `script`, `maintenance`; empty for `serfHealth` and for checks the
    /// catalog was given without one.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Go durations for a check registered on its own; empty for a service's checks.
    pub interval: String,
    pub timeout: String,
    pub exposed_port: u16,
    /// What the registrant gave as `Definition`; `{}` for the agent's own checks, as in
    /// Consul.
    pub definition: serde_json::Map<String, serde_json::Value>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl From<Check> for HealthCheck {
    fn from(c: Check) -> Self {
        HealthCheck {
            node: c.node,
            check_id: c.id,
            name: c.name,
            status: c.status.as_str().to_string(),
            notes: c.notes,
            output: c.output,
            service_id: c.service_id,
            service_name: c.service_name,
            service_tags: Vec::new(),
            kind: c.kind,
            interval: c.interval,
            timeout: c.timeout,
            exposed_port: c.exposed_port,
            // Written by this crate from a JSON object, or empty.
            definition: serde_json::from_str(&c.definition).unwrap_or_default(),
            create_index: c.create_index,
            modify_index: c.modify_index,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeServices {
    pub node: CatalogNode,
    pub services: BTreeMap<String, AgentService>,
}

/// `/v1/catalog/service/<name>` entries.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogService {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    #[serde(serialize_with = "null_if_empty")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(serialize_with = "null_if_empty")]
    pub node_meta: BTreeMap<String, String>,
    pub service_kind: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub service_address: String,
    pub service_weights: Weights,
    pub service_meta: BTreeMap<String, String>,
    pub service_port: u16,
    pub service_enable_tag_override: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_proxy: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_connect: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub service_tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub service_socket_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_locality: Option<serde_json::Value>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl CatalogService {
    pub fn new(n: Node, mut s: Service) -> Self {
        let mut extra = ServiceExtra::split(&mut s.meta);
        extra.with_connect_defaults();
        let service_tagged_addresses = registered_addresses(extra.tagged_addresses.as_ref());
        CatalogService {
            id: n.id,
            node: n.name,
            address: n.address,
            datacenter: n.datacenter,
            tagged_addresses: n.tagged_addresses,
            node_meta: n.meta,
            service_kind: extra.kind.unwrap_or_default(),
            service_id: s.id,
            service_name: s.name,
            service_tags: s.tags,
            service_address: s.address,
            service_weights: Weights {
                passing: s.weight_passing,
                warning: s.weight_warning,
            },
            service_meta: s.meta,
            service_port: s.port,
            service_enable_tag_override: s.enable_tag_override,
            service_proxy: extra.proxy,
            service_connect: extra.connect,
            service_tagged_addresses,
            service_socket_path: extra.socket_path.unwrap_or_default(),
            service_locality: extra.locality,
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

/// `/v1/health/service/<name>` entries.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    pub node: CatalogNode,
    pub service: AgentService,
    pub checks: Vec<HealthCheck>,
}

/// A session as Consul reports it: `LockDelay` in nanoseconds, `TTL` as a duration string.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionOut {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay: u64,
    pub behavior: String,
    #[serde(rename = "TTL")]
    pub ttl: String,
    pub node_checks: Vec<String>,
    /// `null` when empty, as Consul's (a nil slice).
    #[serde(serialize_with = "null_if_no_items")]
    pub service_checks: Vec<ServiceCheckRef>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceCheckRef {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub namespace: String,
}

impl From<muster_server::model::Session> for SessionOut {
    fn from(s: muster_server::model::Session) -> Self {
        SessionOut {
            id: s.id,
            name: s.name,
            node: s.node,
            lock_delay: s.lock_delay_ms * 1_000_000,
            behavior: match s.behavior {
                muster_server::model::SessionBehavior::Release => "release".into(),
                muster_server::model::SessionBehavior::Delete => "delete".into(),
            },
            ttl: if s.ttl_ms == 0 {
                String::new()
            } else {
                format!("{}s", s.ttl_ms / 1000)
            },
            node_checks: s.node_checks,
            service_checks: s
                .service_checks
                .into_iter()
                .map(|id| ServiceCheckRef {
                    id,
                    namespace: String::new(),
                })
                .collect(),
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

// Samples for `?filter=` selector checks: every field present, maps empty, one element in
// each list of structs.
impl crate::filter::Filterable for CatalogNode {
    fn sample() -> Self {
        Node::default().into()
    }
}

impl crate::filter::Filterable for AgentService {
    fn sample() -> Self {
        Service::default().into()
    }
}

impl crate::filter::Filterable for HealthCheck {
    fn sample() -> Self {
        Check::default().into()
    }
}

impl crate::filter::Filterable for CatalogService {
    fn sample() -> Self {
        CatalogService::new(Node::default(), Service::default())
    }
}

impl crate::filter::Filterable for ServiceEntry {
    fn sample() -> Self {
        ServiceEntry {
            node: Node::default().into(),
            service: Service::default().into(),
            checks: vec![Check::default().into()],
        }
    }
}

/// Serializes an empty map as `null`, as Consul returns maps a registration left out.
fn null_if_no_items<S: serde::Serializer, T: Serialize>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        v.serialize(s)
    }
}

fn null_if_empty<S: serde::Serializer>(
    m: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    if m.is_empty() {
        s.serialize_none()
    } else {
        m.serialize(s)
    }
}

/// An address and port a service is reachable at (`TaggedAddresses` values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceAddress {
    pub address: String,
    pub port: u16,
}

/// A service of the agent's own, as `/v1/agent/services` and `/v1/agent/service/<id>` show it:
/// no indexes, the agent's datacenter, and its tagged addresses (those it was registered with,
/// and the `lan_ipv4`/`wan_ipv4` ones the agent derives from its address when it registers it).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OwnService {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    pub address: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub weights: Weights,
    pub enable_tag_override: bool,
    #[serde(flatten)]
    pub extra: ServiceExtra,
    /// Only on `/v1/agent/service/<id>`, where `?hash=` blocks on it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub content_hash: String,
    pub datacenter: String,
}

/// The tagged addresses a service was registered with (`{"lan": {"Address", "Port"}}`).
fn registered_addresses(v: Option<&serde_json::Value>) -> BTreeMap<String, ServiceAddress> {
    let Some(serde_json::Value::Object(m)) = v else {
        return BTreeMap::new();
    };
    let field = |a: &serde_json::Value, k: &str| {
        a.as_object()
            .and_then(|o| o.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)))
            .map(|(_, v)| v.clone())
    };
    m.iter()
        .map(|(tag, a)| {
            let address = field(a, "Address")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let port = field(a, "Port")
                .and_then(|v| v.as_u64())
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0);
            (tag.clone(), ServiceAddress { address, port })
        })
        .collect()
}

impl OwnService {
    pub fn new(mut s: Service, datacenter: String) -> Self {
        let extra = ServiceExtra::split(&mut s.meta);
        let tagged_addresses = registered_addresses(extra.tagged_addresses.as_ref());
        OwnService {
            id: s.id,
            service: s.name,
            tags: s.tags,
            meta: s.meta,
            port: s.port,
            address: s.address,
            tagged_addresses,
            weights: Weights {
                passing: s.weight_passing,
                warning: s.weight_warning,
            },
            enable_tag_override: s.enable_tag_override,
            extra,
            content_hash: String::new(),
            datacenter,
        }
    }

    /// Sets `ContentHash`: a hash of everything else, which changes when the service does.
    pub fn with_hash(mut self) -> Self {
        use std::hash::{Hash, Hasher};
        self.content_hash.clear();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&self)
            .expect("strings and numbers serialize")
            .hash(&mut h);
        self.content_hash = format!("{:016x}", h.finish());
        self
    }
}

impl crate::filter::Filterable for OwnService {
    fn sample() -> Self {
        OwnService::new(Service::default(), String::new())
    }
}

/// A duration as Go's `time.Duration.String` writes it (`1h0m0s`, `2s`, `1.5s`, `500ms`,
/// `0s`): how Consul reports check intervals and timeouts.
pub fn go_duration_string(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        let (unit, div) = match ns {
            n if n < 1_000 => ("ns", 1),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", decimal(ns, div));
    }
    let (h, rest) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, s) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", decimal(s, 1_000_000_000)));
    out
}

/// `n / div` in decimal, without trailing zeros after the point.
fn decimal(n: u128, div: u128) -> String {
    let (whole, rest) = (n / div, n % div);
    if rest == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// `/v1/catalog/node-services/<node>`: the node and a list of its services; both `null` when
/// the node is unknown.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeServiceList {
    pub node: Option<CatalogNode>,
    pub services: Option<Vec<serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::go_duration_string as s;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(s(Duration::ZERO), "0s");
        assert_eq!(s(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(s(Duration::from_secs(2)), "2s");
        assert_eq!(s(Duration::from_secs(90)), "1m30s");
        assert_eq!(s(Duration::from_millis(1500)), "1.5s");
        assert_eq!(s(Duration::from_millis(500)), "500ms");
        assert_eq!(s(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(s(Duration::from_nanos(42)), "42ns");
        assert_eq!(s(Duration::from_secs(3600 * 26 + 61)), "26h1m1s");
    }
}

/// One server of `/v1/operator/raft/configuration` (Consul's `RaftServer`), as the API writes
/// it and `muster operator raft list-peers` reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftServer {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub leader: bool,
    pub voter: bool,
    pub protocol_version: String,
}

/// `/v1/operator/raft/configuration` (Consul's `RaftConfigurationResponse`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftConfiguration {
    pub servers: Vec<RaftServer>,
    pub index: u64,
}
