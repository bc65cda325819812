//! [`Definition`]: a prepared query as Consul 1.10's JSON has it (`structs.PreparedQuery`),
//! read from HTTP bodies and kept, as JSON, in [`PreparedQuery::definition`]. Every field
//! takes `null` for its default, as Go's decoder does; unknown fields are ignored, as
//! Consul's decoder ignores them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::model::PreparedQuery;

/// Reads `null` as the type's default.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A whole prepared query, in Consul's field order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Definition {
    #[serde(rename = "ID", default, deserialize_with = "nullable")]
    pub id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub session: String,
    #[serde(default, deserialize_with = "nullable")]
    pub token: String,
    #[serde(default, deserialize_with = "nullable")]
    pub template: Template,
    #[serde(default, deserialize_with = "nullable")]
    pub service: ServiceQuery,
    #[serde(rename = "DNS", default, deserialize_with = "nullable")]
    pub dns: Dns,
}

/// `Template`: set `Type` to make the query a template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Template {
    #[serde(default, deserialize_with = "nullable")]
    pub r#type: String,
    #[serde(default, deserialize_with = "nullable")]
    pub regexp: String,
    #[serde(default, deserialize_with = "nullable")]
    pub remove_empty_tags: bool,
}

/// `Service`: what the query selects. Lists and maps keep `null` apart from empty, as Consul
/// echoes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceQuery {
    #[serde(default, deserialize_with = "nullable")]
    pub service: String,
    #[serde(default, deserialize_with = "nullable")]
    pub failover: Failover,
    #[serde(default, deserialize_with = "nullable")]
    pub only_passing: bool,
    #[serde(rename = "IgnoreCheckIDs", default)]
    pub ignore_check_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub near: String,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub node_meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub service_meta: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "connect")]
    pub connect: Connect,
}

/// `Failover`: kept and echoed; Muster serves one datacenter, so it never fails over.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Failover {
    #[serde(rename = "NearestN", default, deserialize_with = "nullable")]
    pub nearest_n: i64,
    #[serde(default)]
    pub datacenters: Option<Vec<String>>,
}

/// `Connect`: `{"Enabled": true}` (Consul's structure), or a bare boolean (its API package's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Connect {
    pub enabled: bool,
}

fn connect<'de, D: Deserializer<'de>>(d: D) -> Result<Connect, D::Error> {
    let enabled = match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(Value::Object(m)) => match m.iter().find(|(k, _)| k.eq_ignore_ascii_case("enabled")) {
            None | Some((_, Value::Null)) => false,
            Some((_, Value::Bool(b))) => *b,
            Some((_, v)) => {
                return Err(serde::de::Error::custom(format!(
                    "json: cannot unmarshal {v} into Go struct field QueryConnect.Service.Connect.Enabled of type bool"
                )))
            }
        },
        Some(v) => {
            return Err(serde::de::Error::custom(format!(
                "json: cannot unmarshal {v} into Go struct field ServiceQuery.Service.Connect of type structs.QueryConnect"
            )))
        }
    };
    Ok(Connect { enabled })
}

/// `DNS`: options for answers over DNS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Dns {
    #[serde(rename = "TTL", default, deserialize_with = "nullable")]
    pub ttl: String,
}

impl Definition {
    /// Whether this is a template (any `Template.Type`, valid or not).
    pub fn is_template(&self) -> bool {
        !self.template.r#type.is_empty()
    }

    /// The stored form: ID, name and session apart, the rest as JSON.
    pub fn to_stored(&self) -> PreparedQuery {
        PreparedQuery {
            id: self.id.clone(),
            name: self.name.clone(),
            session: self.session.clone(),
            template: self.is_template(),
            definition: serde_json::to_string(self).unwrap_or_default(),
            create_index: 0,
            modify_index: 0,
        }
    }

    /// The definition of a stored query, with its own ID, name and session.
    pub fn of(q: &PreparedQuery) -> Definition {
        let mut d: Definition = serde_json::from_str(&q.definition).unwrap_or_default();
        d.id.clone_from(&q.id);
        d.name.clone_from(&q.name);
        d.session.clone_from(&q.session);
        d
    }

    /// Consul's JSON of a stored query: the definition with its Raft indexes.
    pub fn json_of(q: &PreparedQuery) -> Value {
        let mut v = serde_json::to_value(Definition::of(q)).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("CreateIndex".into(), q.create_index.into());
            m.insert("ModifyIndex".into(), q.modify_index.into());
        }
        v
    }
}
