//! A Consul 1.x `state.bin` (`agent/consul/fsm/snapshot_oss.go`): a msgpack header, then
//! records, each a type byte (`structs.MessageType`) and one msgpack value. Read into the
//! tables a restore writes: nodes, services and checks (from `Register` records), KV,
//! sessions, tombstones, ACL tokens, policies and roles. Every other record type is counted
//! and named as skipped.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use rmpv::Value as Mp;
use serde_json::Value;

use super::SnapshotError;
use crate::acl::builtin::rfc3339;
use crate::codec::encode;
use crate::model::{
    AclPolicy, AclRole, AclToken, Check, HealthStatus, KvEntry, Node, RestoreState, Service,
    Session, SessionBehavior,
};
use crate::store::mem::TableId;
use crate::store::tables::*;

/// A Consul state read: what a restore writes, the counts per Consul record type, and the
/// record types skipped with their counts.
pub(crate) struct ConsulState {
    pub(crate) state: RestoreState,
    pub(crate) counts: Vec<(String, u64, u64)>,
    pub(crate) skipped: Vec<(String, u64)>,
}

/// Consul's names for its record types (`structs.MessageType`'s `String`).
fn type_name(t: u8) -> String {
    const NAMES: [&str; 35] = [
        "Register",
        "Deregister",
        "KVS",
        "Session",
        "ACL",
        "Tombstone",
        "CoordinateBatchUpdate",
        "PreparedQuery",
        "Txn",
        "Autopilot",
        "Area",
        "ACLBootstrap",
        "Intention",
        "ConnectCA",
        "ConnectCAProviderState",
        "ConnectCAConfig",
        "Index",
        "ACLToken",
        "ACLTokenDelete",
        "ACLPolicy",
        "ACLPolicyDelete",
        "ConnectCALeaf",
        "ConfigEntry",
        "ACLRole",
        "ACLRoleDelete",
        "ACLBindingRule",
        "ACLBindingRuleDelete",
        "ACLAuthMethod",
        "ACLAuthMethodDelete",
        "ChunkingState",
        "FederationState",
        "SystemMetadata",
        "ServiceVirtualIP",
        "FreeVirtualIP",
        "KindServiceName",
    ];
    NAMES
        .get(t as usize)
        .map_or_else(|| format!("Unknown({t})"), |n| n.to_string())
}

const REGISTER: u8 = 0;
const KVS: u8 = 2;
const SESSION: u8 = 3;
const TOMBSTONE: u8 = 5;
const INDEX: u8 = 16;
const ACL_TOKEN: u8 = 17;
const ACL_POLICY: u8 = 19;
const ACL_ROLE: u8 = 23;

fn field<'a>(v: &'a Mp, name: &str) -> Option<&'a Mp> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(_, v)| v)
}

fn string(v: &Mp, name: &str) -> String {
    match field(v, name) {
        Some(Mp::String(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(Mp::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

fn bytes(v: &Mp, name: &str) -> Vec<u8> {
    match field(v, name) {
        Some(Mp::String(s)) => s.as_bytes().to_vec(),
        Some(Mp::Binary(b)) => b.clone(),
        _ => Vec::new(),
    }
}

fn uint(v: &Mp, name: &str) -> u64 {
    field(v, name)
        .and_then(|x| x.as_u64().or_else(|| x.as_i64().map(|i| i.max(0) as u64)))
        .unwrap_or(0)
}

fn strings(v: &Mp, name: &str) -> Vec<String> {
    field(v, name)
        .and_then(Mp::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn string_map(v: &Mp, name: &str) -> BTreeMap<String, String> {
    field(v, name)
        .and_then(Mp::as_map)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A Go `time.Time` in its binary form (version 1: seconds since year 1, nanoseconds, zone),
/// as Unix milliseconds; `None` for the zero time.
fn go_time(v: &Mp) -> Option<u64> {
    let b = match v {
        Mp::Ext(_, b) | Mp::Binary(b) => b.as_slice(),
        _ => return None,
    };
    let b: &[u8; 15] = b.get(..15)?.try_into().ok()?;
    let secs = i64::from_be_bytes(b[1..9].try_into().ok()?);
    let nanos = u32::from_be_bytes(b[9..13].try_into().ok()?);
    let unix = secs.checked_sub(62_135_596_800)?;
    (unix > 0).then(|| unix as u64 * 1000 + u64::from(nanos) / 1_000_000)
}

/// A msgpack value as JSON: byte strings as text, times as RFC 3339, the zero time dropped.
fn json(v: &Mp) -> Value {
    match v {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(*b),
        Mp::Integer(i) => i
            .as_u64()
            .map(Value::from)
            .or_else(|| i.as_i64().map(Value::from))
            .unwrap_or(Value::Null),
        Mp::F32(f) => Value::from(f64::from(*f)),
        Mp::F64(f) => Value::from(*f),
        Mp::String(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Mp::Binary(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Mp::Array(a) => Value::Array(a.iter().map(json).collect()),
        Mp::Map(m) => Value::Object(
            m.iter()
                .filter_map(|(k, v)| {
                    let k = k.as_str()?.to_string();
                    let v = match v {
                        Mp::Ext(..) => Value::String(rfc3339(go_time(v)?)),
                        v => json(v),
                    };
                    Some((k, v))
                })
                .collect(),
        ),
        Mp::Ext(..) => go_time(v).map_or(Value::Null, |ms| Value::String(rfc3339(ms))),
    }
}

/// A Consul ACL record as Muster keeps its definition: Consul's JSON, without the indexes
/// and hash the state machine keeps itself.
fn acl_definition(v: &Mp) -> String {
    let mut d = json(v);
    if let Some(o) = d.as_object_mut() {
        for k in ["CreateIndex", "ModifyIndex", "Hash", "RaftIndex"] {
            o.remove(k);
        }
    }
    d.to_string()
}

type Rows = BTreeMap<String, Vec<u8>>;

struct Import {
    tables: BTreeMap<&'static str, Rows>,
    indexes: BTreeMap<String, u64>,
}

impl Import {
    fn put<T: serde::Serialize>(
        &mut self,
        t: TableId,
        key: String,
        row: &T,
    ) -> Result<(), SnapshotError> {
        let b = encode(row).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        self.tables.entry(t.name).or_default().insert(key, b);
        Ok(())
    }

    fn register(&mut self, v: &Mp) -> Result<(), SnapshotError> {
        let node = Node {
            name: string(v, "Node"),
            id: string(v, "ID"),
            address: string(v, "Address"),
            datacenter: string(v, "Datacenter"),
            tagged_addresses: string_map(v, "TaggedAddresses"),
            meta: string_map(v, "NodeMeta"),
            create_index: uint(v, "CreateIndex"),
            modify_index: uint(v, "ModifyIndex"),
        };
        let name = node.name.clone();
        self.put(NODES, name.clone(), &node)?;
        if let Some(s) = field(v, "Service").filter(|s| !s.is_nil()) {
            let mut meta = string_map(s, "Meta");
            let mut extra = serde_json::Map::new();
            if let Some(t) = field(s, "TaggedAddresses")
                .map(json)
                .filter(|t| t.as_object().is_some_and(|o| !o.is_empty()))
            {
                extra.insert("TaggedAddresses".into(), t);
            }
            let kind = string(s, "Kind");
            if !kind.is_empty() {
                extra.insert("Kind".into(), Value::String(kind));
            }
            if !extra.is_empty() {
                meta.insert(
                    Service::EXTRA_META_KEY.into(),
                    Value::Object(extra).to_string(),
                );
            }
            let weights = field(s, "Weights");
            let svc = Service {
                id: string(s, "ID"),
                name: string(s, "Service"),
                tags: strings(s, "Tags"),
                address: string(s, "Address"),
                port: u16::try_from(uint(s, "Port")).unwrap_or(0),
                meta,
                weight_passing: weights.map_or(1, |w| uint(w, "Passing") as u32),
                weight_warning: weights.map_or(1, |w| uint(w, "Warning") as u32),
                enable_tag_override: field(s, "EnableTagOverride")
                    .and_then(Mp::as_bool)
                    .unwrap_or(false),
                create_index: uint(s, "CreateIndex"),
                modify_index: uint(s, "ModifyIndex"),
            };
            self.tables
                .entry(SERVICE_NAMES.name)
                .or_default()
                .insert(format!("{}\0{}\0{}", svc.name, name, svc.id), Vec::new());
            self.put(SERVICES, node_key(&name, &svc.id), &svc)?;
        }
        let mut checks: Vec<&Mp> = field(v, "Check")
            .filter(|c| !c.is_nil())
            .into_iter()
            .collect();
        if let Some(a) = field(v, "Checks").and_then(Mp::as_array) {
            checks.extend(a.iter());
        }
        for c in checks {
            let check = Check {
                node: name.clone(),
                id: string(c, "CheckID"),
                name: string(c, "Name"),
                status: HealthStatus::parse(&string(c, "Status")).unwrap_or_default(),
                notes: string(c, "Notes"),
                output: string(c, "Output"),
                service_id: string(c, "ServiceID"),
                service_name: string(c, "ServiceName"),
                create_index: uint(c, "CreateIndex"),
                modify_index: uint(c, "ModifyIndex"),
                kind: string(c, "Type"),
                interval: string(c, "Interval"),
                timeout: string(c, "Timeout"),
                exposed_port: u16::try_from(uint(c, "ExposedPort")).unwrap_or(0),
                definition: String::new(),
            };
            self.put(CHECKS, node_key(&name, &check.id), &check)?;
        }
        Ok(())
    }

    fn kv(&mut self, v: &Mp) -> Result<(), SnapshotError> {
        let session = string(v, "Session");
        let e = KvEntry {
            key: string(v, "Key"),
            value: bytes(v, "Value"),
            flags: uint(v, "Flags"),
            session: (!session.is_empty()).then_some(session),
            create_index: uint(v, "CreateIndex"),
            modify_index: uint(v, "ModifyIndex"),
            lock_index: uint(v, "LockIndex"),
        };
        self.put(KV, e.key.clone(), &e)
    }

    fn session(&mut self, v: &Mp) -> Result<(), SnapshotError> {
        let mut node_checks = strings(v, "NodeChecks");
        if field(v, "NodeChecks").is_none_or(Mp::is_nil) {
            node_checks = strings(v, "Checks");
        }
        let service_checks = field(v, "ServiceChecks")
            .and_then(Mp::as_array)
            .map(|a| a.iter().map(|c| string(c, "ID")).collect())
            .unwrap_or_default();
        let s = Session {
            id: string(v, "ID"),
            name: string(v, "Name"),
            node: string(v, "Node"),
            lock_delay_ms: uint(v, "LockDelay") / 1_000_000,
            behavior: if string(v, "Behavior") == "delete" {
                SessionBehavior::Delete
            } else {
                SessionBehavior::Release
            },
            ttl_ms: crate::go_duration(&string(v, "TTL")).map_or(0, |d| d.as_millis() as u64),
            node_checks,
            service_checks,
            create_index: uint(v, "CreateIndex"),
            modify_index: uint(v, "ModifyIndex"),
        };
        self.put(SESSIONS, s.id.clone(), &s)
    }

    fn acl(&mut self, t: u8, v: &Mp) -> Result<(), SnapshotError> {
        let (create_index, modify_index) = (uint(v, "CreateIndex"), uint(v, "ModifyIndex"));
        match t {
            ACL_TOKEN => {
                let tok = AclToken {
                    accessor_id: string(v, "AccessorID"),
                    secret_id: string(v, "SecretID"),
                    definition: acl_definition(v),
                    expires_unix_ms: field(v, "ExpirationTime").and_then(go_time).unwrap_or(0),
                    create_index,
                    modify_index,
                };
                self.tables
                    .entry(ACL_SECRETS.name)
                    .or_default()
                    .insert(tok.secret_id.clone(), tok.accessor_id.clone().into_bytes());
                self.put(ACL_TOKENS, tok.accessor_id.clone(), &tok)
            }
            ACL_POLICY => {
                let p = AclPolicy {
                    id: string(v, "ID"),
                    name: string(v, "Name"),
                    definition: acl_definition(v),
                    create_index,
                    modify_index,
                };
                self.put(ACL_POLICIES, p.id.clone(), &p)
            }
            _ => {
                let r = AclRole {
                    id: string(v, "ID"),
                    name: string(v, "Name"),
                    definition: acl_definition(v),
                    create_index,
                    modify_index,
                };
                self.put(ACL_ROLES, r.id.clone(), &r)
            }
        }
    }

    /// Consul's index names as Muster's (`kvs` is `kv`, `service.NAME` is `svc:NAME`).
    fn index(&mut self, v: &Mp) {
        let key = string(v, "Key");
        let name = match key.as_str() {
            "kvs" => IDX_KV.to_string(),
            "nodes" | "services" | "checks" | "sessions" => key,
            k => match k.strip_prefix("service.") {
                Some(s) => svc_index(s),
                None => return,
            },
        };
        self.indexes.insert(name, uint(v, "Value"));
    }
}

/// Reads a Consul `state.bin`.
pub(crate) fn read(b: &[u8]) -> Result<ConsulState, SnapshotError> {
    let bad = |why: String| SnapshotError::Corrupt(format!("state.bin: {why}"));
    let mut c = Cursor::new(b);
    let header = rmpv::decode::read_value(&mut c)
        .map_err(|e| bad(format!("neither Muster's format nor Consul's ({e})")))?;
    if field(&header, "LastIndex").is_none() {
        return Err(bad(
            "neither Muster's format nor Consul's (no LastIndex header)".into(),
        ));
    }
    let mut imp = Import {
        tables: BTreeMap::new(),
        indexes: BTreeMap::new(),
    };
    let mut counts: BTreeMap<u8, (u64, u64)> = BTreeMap::new();
    while (c.position() as usize) < b.len() {
        let start = c.position();
        let mut t = [0u8];
        c.read_exact(&mut t).map_err(|e| bad(e.to_string()))?;
        let v = rmpv::decode::read_value(&mut c)
            .map_err(|e| bad(format!("a {} record does not decode: {e}", type_name(t[0]))))?;
        let n = counts.entry(t[0]).or_default();
        n.0 += 1;
        n.1 += c.position() - start;
        match t[0] {
            REGISTER => imp.register(&v)?,
            KVS => imp.kv(&v)?,
            SESSION => imp.session(&v)?,
            TOMBSTONE => {
                let idx = encode(&uint(&v, "Index")).map_err(|e| bad(e.to_string()))?;
                imp.tables
                    .entry(KV_TOMBS.name)
                    .or_default()
                    .insert(string(&v, "Key"), idx);
            }
            INDEX => imp.index(&v),
            ACL_TOKEN | ACL_POLICY | ACL_ROLE => imp.acl(t[0], &v)?,
            _ => {}
        }
    }
    let imported = [
        REGISTER, KVS, SESSION, TOMBSTONE, INDEX, ACL_TOKEN, ACL_POLICY, ACL_ROLE,
    ];
    let skipped = counts
        .iter()
        .filter(|(t, _)| !imported.contains(t))
        .map(|(t, (n, _))| (type_name(*t), *n))
        .collect();
    let counts = counts
        .iter()
        .map(|(t, (n, size))| (type_name(*t), *n, *size))
        .collect();
    let state = RestoreState {
        tables: imp
            .tables
            .into_iter()
            .map(|(name, rows)| (name.to_string(), rows.into_iter().collect()))
            .collect(),
        indexes: imp.indexes.into_iter().collect(),
    };
    Ok(ConsulState {
        state,
        counts,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_times_read_as_unix_milliseconds() {
        // 2036-12-03T14:31:43Z, as Go's MarshalBinary writes it (UTC).
        let t = Mp::Ext(
            5,
            vec![1, 0, 0, 0, 14, 245, 115, 107, 207, 0, 0, 0, 0, 255, 255],
        );
        assert_eq!(
            go_time(&t).map(rfc3339).as_deref(),
            Some("2036-12-03T14:31:43Z")
        );
        let zero = Mp::Ext(5, vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255]);
        assert_eq!(go_time(&zero), None);
    }
}
