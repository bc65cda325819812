//! The JSON request bodies (`*In` types) every endpoint reads, and the one list of their
//! field names that [`crate::body`] folds case-insensitively. A new body type is added here
//! and to [`field_names`], so the folding knows its fields.
//!
//! Serde puts a type's name in its decode errors ("expected struct OpIn"), and those reach the
//! client in the 400's text: renaming a type changes an answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use muster_server::model::{HealthStatus, Service};
use serde::de::{self, DeserializeOwned, Visitor};
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WeightsIn {
    pub(crate) passing: Option<u32>,
    pub(crate) warning: Option<u32>,
}

/// A service, in a catalog registration or a transaction's service operation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
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
}

impl ServiceIn {
    /// The service it describes; its ID defaults to its name, its weights to 1.
    pub(crate) fn into_service(self) -> ApiResult<Service> {
        let name = self.service.unwrap_or_default();
        if name.is_empty() {
            return Err(ApiError::BadRequest("Must provide service name".into()));
        }
        let w = self.weights.unwrap_or(WeightsIn {
            passing: None,
            warning: None,
        });
        Ok(Service {
            id: self
                .id
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| name.clone()),
            name,
            tags: self.tags.unwrap_or_default(),
            address: self.address.unwrap_or_default(),
            port: self.port.unwrap_or(0),
            meta: self.meta.unwrap_or_default(),
            weight_passing: w.passing.unwrap_or(1),
            weight_warning: w.warning.unwrap_or(1),
            enable_tag_override: self.enable_tag_override.unwrap_or(false),
            ..Default::default()
        })
    }
}

/// A health check, in a catalog registration or a transaction's check operation (Consul's
/// `HealthCheck` in both).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
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
}

impl CheckIn {
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
#[serde(rename_all = "PascalCase")]
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
}

/// `PUT /v1/catalog/deregister`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeregisterIn {
    pub(crate) node: Option<String>,
    #[serde(rename = "ServiceID")]
    pub(crate) service_id: Option<String>,
    #[serde(rename = "CheckID")]
    pub(crate) check_id: Option<String>,
    pub(crate) datacenter: Option<String>,
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

/// A transaction's KV operation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KvIn {
    pub(crate) verb: String,
    pub(crate) key: Option<String>,
    pub(crate) value: Option<String>,
    pub(crate) flags: Option<u64>,
    pub(crate) index: Option<u64>,
    pub(crate) session: Option<String>,
}

/// A node, in a transaction's node operation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeIn {
    #[serde(rename = "ID")]
    pub(crate) id: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) tagged_addresses: Option<BTreeMap<String, String>>,
    pub(crate) meta: Option<BTreeMap<String, String>>,
    pub(crate) modify_index: Option<u64>,
}

/// A transaction's node operation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeOpIn {
    pub(crate) verb: String,
    pub(crate) node: NodeIn,
}

/// A transaction's service operation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceOpIn {
    pub(crate) verb: String,
    pub(crate) node: String,
    pub(crate) service: ServiceIn,
}

/// A transaction's check operation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CheckOpIn {
    pub(crate) verb: String,
    pub(crate) check: CheckIn,
}

/// `PUT /v1/agent/check/update/<id>`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CheckUpdateIn {
    pub(crate) status: Option<String>,
    pub(crate) output: Option<String>,
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
