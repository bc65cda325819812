//! The JSON request bodies (`*In` types) every endpoint reads, and the one list of their
//! field names that [`crate::body`] folds case-insensitively. A new body type is added here
//! and to [`field_names`], so the folding knows its fields.
//!
//! Every type takes every field of the Consul 1.10 structure it stands for, and `null` for
//! any of them (Go clients send `"Checks": null`). The catalog bodies refuse an unknown field
//! as Consul's decoder does; the session and transaction bodies ignore one, as Consul's.
//! Fields Muster has no use for are read and dropped, except the Connect-only fields of a
//! service, which are kept (see [`ServiceIn::into_service`]).
//!
//! Serde puts a type's name in its decode errors ("expected struct OpIn"), and those reach the
//! client in the 400's text: renaming a type changes an answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use muster_server::model::{Check, HealthStatus, Service};
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::types::ServiceCheckRef;

/// Every field name of the request bodies, by its lowercase form.
pub(crate) fn field_names() -> &'static HashMap<String, &'static str> {
    static NAMES: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        all_field_names()
            .into_iter()
            .map(|n| (n.to_ascii_lowercase(), n))
            .collect()
    })
}

/// The field names of every request body type, as serde expects them.
fn all_field_names() -> Vec<&'static str> {
    [
        // /v1/catalog/register and /deregister
        fields::<WeightsIn>(),
        fields::<ServiceIn>(),
        fields::<CheckIn>(),
        fields::<RegisterIn>(),
        fields::<DeregisterIn>(),
        // /v1/session/create
        fields::<CreateIn>(),
        fields::<ServiceCheckRef>(),
        // /v1/txn
        fields::<OpIn>(),
        fields::<KvIn>(),
        fields::<NodeIn>(),
        fields::<NodeOpIn>(),
        fields::<ServiceOpIn>(),
        fields::<CheckOpIn>(),
        // /v1/agent/check/update
        fields::<CheckUpdateIn>(),
        // /v1/operator/autopilot/configuration
        fields::<AutopilotIn>(),
        // /v1/query
        fields::<muster_server::prepared::Definition>(),
        fields::<muster_server::prepared::Template>(),
        fields::<muster_server::prepared::ServiceQuery>(),
        fields::<muster_server::prepared::Failover>(),
        fields::<muster_server::prepared::Dns>(),
    ]
    .concat()
}

/// The field names serde expects for struct `T`, read off its `Deserialize` impl.
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut out: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut out));
    out
}

/// Reads `null` as the type's default, for fields whose absence already means the default.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WeightsIn {
    pub(crate) passing: Option<u32>,
    pub(crate) warning: Option<u32>,
}

/// A service, in a catalog registration or a transaction's service operation (Consul's
/// `NodeService`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct ServiceIn {
    #[serde(rename = "ID")]
    pub(crate) id: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) address: Option<String>,
    pub(crate) meta: Option<BTreeMap<String, String>>,
    pub(crate) port: Option<u16>,
    pub(crate) weights: Option<WeightsIn>,
    pub(crate) enable_tag_override: Option<bool>,
    /// Only read by transactions' `cas` verbs.
    pub(crate) modify_index: Option<u64>,
    // Kept as they are sent and returned with the service; Muster does not act on them.
    pub(crate) kind: Option<String>,
    pub(crate) proxy: Option<Value>,
    pub(crate) connect: Option<Value>,
    pub(crate) tagged_addresses: Option<BTreeMap<String, Value>>,
    pub(crate) socket_path: Option<String>,
    pub(crate) locality: Option<Value>,
    // Read and dropped: Enterprise scopes and the Raft index a client may echo back.
    #[serde(rename = "Namespace")]
    _namespace: Option<IgnoredAny>,
    #[serde(rename = "Partition")]
    _partition: Option<IgnoredAny>,
    #[serde(rename = "CreateIndex")]
    _create_index: Option<IgnoredAny>,
}

/// Keeps a service's Connect-only fields (`Kind`, `Proxy`, `Connect`, `TaggedAddresses`,
/// `SocketPath`, as named here) and its `Locality` in its `meta`, under [`Service::EXTRA_META_KEY`]; a field that
/// is null, an empty string or an empty object is left out. A client's own `Meta` may not use
/// that key.
pub fn keep_service_extra(
    meta: &mut BTreeMap<String, String>,
    fields: [(&str, Option<Value>); 6],
) -> Result<(), String> {
    if meta.contains_key(Service::EXTRA_META_KEY) {
        return Err(format!(
            "Meta key {:?} is reserved for internal use",
            Service::EXTRA_META_KEY
        ));
    }
    let extra: serde_json::Map<String, Value> = fields
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .map(|(k, v)| match (k.as_str(), v) {
            ("TaggedAddresses", Value::Object(t)) => (k, Value::Object(service_addresses(t))),
            ("Locality", Value::Object(l)) => (k, Value::Object(locality(l))),
            (_, v) => (k, v),
        })
        .filter(|(_, v)| match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        })
        .collect();
    if !extra.is_empty() {
        meta.insert(
            Service::EXTRA_META_KEY.to_string(),
            Value::Object(extra).to_string(),
        );
    }
    Ok(())
}

/// A locality with Consul's field names (`{"Region", "Zone"}`), whatever their case was when
/// sent; empty ones left out, as Consul's `omitempty`.
fn locality(l: serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    l.into_iter()
        .filter(|(_, v)| !v.is_null() && *v != Value::String(String::new()))
        .map(|(k, v)| match k.to_ascii_lowercase().as_str() {
            "region" => ("Region".to_string(), v),
            "zone" => ("Zone".to_string(), v),
            _ => (k, v),
        })
        .collect()
}

/// A service's tagged addresses with Consul's field names (`{"lan": {"Address", "Port"}}`),
/// whatever their case was when sent.
fn service_addresses(t: serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    t.into_iter()
        .filter(|(_, a)| !a.is_null())
        .map(|(tag, a)| match a {
            Value::Object(a) => {
                let a = a
                    .into_iter()
                    .map(|(k, v)| match k.to_ascii_lowercase().as_str() {
                        "address" => ("Address".to_string(), v),
                        "port" => ("Port".to_string(), v),
                        _ => (k, v),
                    })
                    .collect();
                (tag, Value::Object(a))
            }
            a => (tag, a),
        })
        .collect()
}

impl ServiceIn {
    /// The service it describes; its ID defaults to its name, its weights to 1.
    pub(crate) fn into_service(self) -> ApiResult<Service> {
        let name = self.service.unwrap_or_default();
        if name.is_empty() {
            return Err(ApiError::BadRequest(
                "Must provide service name with ID".into(),
            ));
        }
        let mut meta = self.meta.unwrap_or_default();
        keep_service_extra(
            &mut meta,
            [
                ("Kind", self.kind.map(Value::String)),
                ("Proxy", self.proxy),
                ("Connect", self.connect),
                (
                    "TaggedAddresses",
                    self.tagged_addresses
                        .map(|t| Value::Object(t.into_iter().collect())),
                ),
                ("SocketPath", self.socket_path.map(Value::String)),
                ("Locality", self.locality),
            ],
        )
        .map_err(ApiError::BadRequest)?;
        let w = self.weights.unwrap_or_default();
        Ok(Service {
            id: self
                .id
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| name.clone()),
            name,
            tags: self.tags.unwrap_or_default(),
            address: self.address.unwrap_or_default(),
            port: self.port.unwrap_or(0),
            meta,
            weight_passing: w.passing.unwrap_or(1),
            weight_warning: w.warning.unwrap_or(1),
            enable_tag_override: self.enable_tag_override.unwrap_or(false),
            ..Default::default()
        })
    }
}

/// A health check, in a catalog registration or a transaction's check operation (Consul's
/// `HealthCheck` in both).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct CheckIn {
    /// Only read by transactions: a registration's checks belong to its node.
    pub(crate) node: Option<String>,
    #[serde(rename = "CheckID")]
    pub(crate) check_id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) notes: Option<String>,
    pub(crate) status: Option<String>,
    #[serde(rename = "ServiceID")]
    pub(crate) service_id: Option<String>,
    pub(crate) output: Option<String>,
    /// Only read by transactions' `cas` verbs.
    pub(crate) modify_index: Option<u64>,
    /// Kept as given, as Consul's catalog keeps them: nothing runs a catalog-only check.
    #[serde(rename = "Type")]
    pub(crate) kind: Option<String>,
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) exposed_port: Option<u16>,
    pub(crate) definition: Option<serde_json::Map<String, serde_json::Value>>,
    // Read and dropped: what Consul derives itself (names and tags come from the service),
    // Enterprise scopes and the Raft index.
    #[serde(rename = "ServiceName")]
    _service_name: Option<IgnoredAny>,
    #[serde(rename = "ServiceTags")]
    _service_tags: Option<IgnoredAny>,
    #[serde(rename = "Namespace")]
    _namespace: Option<IgnoredAny>,
    #[serde(rename = "Partition")]
    _partition: Option<IgnoredAny>,
    #[serde(rename = "CreateIndex")]
    _create_index: Option<IgnoredAny>,
}

impl CheckIn {
    /// The check, on `node` under `id`: the rest as given (no name is an empty name).
    pub(crate) fn into_check(self, node: String, id: String) -> ApiResult<Check> {
        Ok(Check {
            status: self.health_status()?,
            node,
            id,
            name: self.name.unwrap_or_default(),
            notes: self.notes.unwrap_or_default(),
            output: self.output.unwrap_or_default(),
            service_id: self.service_id.unwrap_or_default(),
            kind: self.kind.unwrap_or_default(),
            interval: self.interval.unwrap_or_default(),
            timeout: self.timeout.unwrap_or_default(),
            exposed_port: self.exposed_port.unwrap_or_default(),
            definition: self
                .definition
                .filter(|d| !d.is_empty())
                .map(|d| serde_json::Value::Object(d).to_string())
                .unwrap_or_default(),
            ..Default::default()
        })
    }

    /// The check's status; critical when none is given.
    pub(crate) fn health_status(&self) -> ApiResult<HealthStatus> {
        match self.status.as_deref().unwrap_or("") {
            "" => Ok(HealthStatus::Critical),
            s => HealthStatus::parse(s)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid check status {s:?}"))),
        }
    }
}

/// `PUT /v1/catalog/register`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct RegisterIn {
    #[serde(rename = "ID")]
    pub(crate) id: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) datacenter: Option<String>,
    pub(crate) tagged_addresses: Option<BTreeMap<String, String>>,
    pub(crate) node_meta: Option<BTreeMap<String, String>>,
    pub(crate) service: Option<ServiceIn>,
    pub(crate) check: Option<CheckIn>,
    pub(crate) checks: Option<Vec<CheckIn>>,
    pub(crate) skip_node_update: Option<bool>,
    // Read and dropped: the ACL token (also taken from the header), Enterprise scopes.
    #[serde(rename = "Token")]
    _token: Option<IgnoredAny>,
    #[serde(rename = "Namespace")]
    _namespace: Option<IgnoredAny>,
    #[serde(rename = "Partition")]
    _partition: Option<IgnoredAny>,
}

/// `PUT /v1/catalog/deregister`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct DeregisterIn {
    pub(crate) node: Option<String>,
    #[serde(rename = "ServiceID")]
    pub(crate) service_id: Option<String>,
    #[serde(rename = "CheckID")]
    pub(crate) check_id: Option<String>,
    pub(crate) datacenter: Option<String>,
    // Read and dropped, as in a registration.
    #[serde(rename = "Token")]
    _token: Option<IgnoredAny>,
    #[serde(rename = "Namespace")]
    _namespace: Option<IgnoredAny>,
    #[serde(rename = "Partition")]
    _partition: Option<IgnoredAny>,
}

/// `PUT /v1/session/create`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateIn {
    pub(crate) lock_delay: Option<Value>,
    pub(crate) node: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) checks: Option<Vec<String>>,
    pub(crate) node_checks: Option<Vec<String>>,
    pub(crate) service_checks: Option<Vec<ServiceCheckRef>>,
    pub(crate) behavior: Option<String>,
    #[serde(rename = "TTL")]
    pub(crate) ttl: Option<String>,
    // Read and dropped: the ID is the server's to choose; Enterprise scopes; the Raft index.
    #[serde(rename = "ID")]
    _id: Option<IgnoredAny>,
    #[serde(rename = "Namespace")]
    _namespace: Option<IgnoredAny>,
    #[serde(rename = "Partition")]
    _partition: Option<IgnoredAny>,
    #[serde(rename = "CreateIndex")]
    _create_index: Option<IgnoredAny>,
    #[serde(rename = "ModifyIndex")]
    _modify_index: Option<IgnoredAny>,
}

/// One operation of `PUT /v1/txn`: exactly one of its fields is set.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct OpIn {
    #[serde(rename = "KV")]
    pub(crate) kv: Option<KvIn>,
    pub(crate) node: Option<NodeOpIn>,
    pub(crate) service: Option<ServiceOpIn>,
    pub(crate) check: Option<CheckOpIn>,
}

impl OpIn {
    /// Whether the operation changes state, by Consul's list: a transaction with none is
    /// answered as a read.
    pub(crate) fn writes(&self) -> bool {
        let catalog = |verb: &str| verb != "get";
        match (&self.kv, &self.node, &self.service, &self.check) {
            (Some(kv), ..) => matches!(
                kv.verb.as_str(),
                "set" | "delete" | "delete-cas" | "delete-tree" | "cas" | "lock" | "unlock"
            ),
            (_, Some(n), ..) => catalog(&n.verb),
            (_, _, Some(s), _) => catalog(&s.verb),
            (_, _, _, Some(c)) => catalog(&c.verb),
            _ => false,
        }
    }
}

/// A transaction's KV operation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KvIn {
    #[serde(default, deserialize_with = "nullable")]
    pub(crate) verb: String,
    pub(crate) key: Option<String>,
    pub(crate) value: Option<String>,
    pub(crate) flags: Option<u64>,
    pub(crate) index: Option<u64>,
    pub(crate) session: Option<String>,
    // Read and dropped: Enterprise scopes.
    #[serde(rename = "Namespace")]
    _namespace: Option<IgnoredAny>,
    #[serde(rename = "Partition")]
    _partition: Option<IgnoredAny>,
}

/// A node, in a transaction's node operation.
#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeIn {
    #[serde(rename = "ID")]
    pub(crate) id: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) tagged_addresses: Option<BTreeMap<String, String>>,
    pub(crate) meta: Option<BTreeMap<String, String>>,
    pub(crate) modify_index: Option<u64>,
    // Read and dropped: the datacenter is this one; Enterprise scopes; the Raft index.
    #[serde(rename = "Datacenter")]
    _datacenter: Option<IgnoredAny>,
    #[serde(rename = "Partition")]
    _partition: Option<IgnoredAny>,
    #[serde(rename = "CreateIndex")]
    _create_index: Option<IgnoredAny>,
}

/// A transaction's node operation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeOpIn {
    #[serde(default, deserialize_with = "nullable")]
    pub(crate) verb: String,
    #[serde(default, deserialize_with = "nullable")]
    pub(crate) node: NodeIn,
}

/// A transaction's service operation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceOpIn {
    #[serde(default, deserialize_with = "nullable")]
    pub(crate) verb: String,
    #[serde(default, deserialize_with = "nullable")]
    pub(crate) node: String,
    #[serde(default, deserialize_with = "nullable")]
    pub(crate) service: ServiceIn,
}

/// A transaction's check operation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CheckOpIn {
    #[serde(default, deserialize_with = "nullable")]
    pub(crate) verb: String,
    #[serde(default, deserialize_with = "nullable")]
    pub(crate) check: CheckIn,
}

/// `PUT /v1/agent/check/update/<id>`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CheckUpdateIn {
    pub(crate) status: Option<String>,
    pub(crate) output: Option<String>,
}

/// `PUT /v1/operator/autopilot/configuration`: Consul's `AutopilotConfiguration`. As in
/// Consul, the body replaces the whole configuration: a field left out takes Go's zero value.
/// Durations are Go duration strings, or numbers of nanoseconds.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct AutopilotIn {
    pub(crate) cleanup_dead_servers: bool,
    pub(crate) last_contact_threshold: Option<serde_json::Value>,
    pub(crate) max_trailing_logs: u64,
    pub(crate) min_quorum: u64,
    pub(crate) server_stabilization_time: Option<serde_json::Value>,
    pub(crate) redundancy_zone_tag: String,
    pub(crate) disable_upgrade_migration: bool,
    pub(crate) upgrade_version_tag: String,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "PascalCase")]
    struct Probe {
        #[serde(rename = "ServiceID")]
        service_id: String,
        node_meta: Option<HashMap<String, String>>,
    }

    #[test]
    fn request_field_names_are_unambiguous_but_for_case() {
        let mut seen: HashMap<String, &str> = HashMap::new();
        for n in all_field_names() {
            let prev = seen.insert(n.to_ascii_lowercase(), n);
            assert!(prev.is_none_or(|p| p == n), "{prev:?} and {n}");
        }
        assert!(seen.contains_key("skipnodeupdate") && seen.contains_key("ttl"));
    }

    #[test]
    fn reads_a_structs_field_names() {
        assert_eq!(fields::<Probe>(), ["ServiceID", "NodeMeta"]);
    }
}
