//! The JSON Consul answers ACL requests with (`api/acl.go`): policies, tokens and roles,
//! whole or as list stubs.

use std::hash::{DefaultHasher, Hash, Hasher};

use base64::Engine;
use muster_server::model::{AclPolicy, AclRole, AclToken};
use serde_json::{json, Map, Value};

use super::AclState;

/// An opaque digest of a definition (Consul's `Hash`, which clients only compare).
pub(super) fn hash(parts: &[&str]) -> String {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    base64::engine::general_purpose::STANDARD.encode(h.finish().to_be_bytes())
}

fn def(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| json!({}))
}

fn get(d: &Value, k: &str) -> Value {
    d.get(k).cloned().unwrap_or(Value::Null)
}

pub(super) fn policy(p: &AclPolicy, stub: bool) -> Value {
    let d = def(&p.definition);
    let mut m = Map::new();
    m.insert("ID".into(), json!(p.id));
    m.insert("Name".into(), json!(p.name));
    m.insert(
        "Description".into(),
        json!(d.get("Description").and_then(Value::as_str).unwrap_or("")),
    );
    if !stub {
        m.insert(
            "Rules".into(),
            json!(d.get("Rules").and_then(Value::as_str).unwrap_or("")),
        );
    }
    let dcs = get(&d, "Datacenters");
    if !dcs.is_null() && dcs.as_array().is_some_and(|a| !a.is_empty()) {
        m.insert("Datacenters".into(), dcs);
    } else if stub {
        m.insert("Datacenters".into(), Value::Null);
    }
    m.insert("Hash".into(), json!(hash(&[&p.name, &p.definition])));
    m.insert("CreateIndex".into(), json!(p.create_index));
    m.insert("ModifyIndex".into(), json!(p.modify_index));
    Value::Object(m)
}

/// Inserts `k` unless `v` is an empty list or null (Go's `omitempty`).
fn put_nonempty(m: &mut Map<String, Value>, k: &str, v: Value) {
    let empty = v.is_null() || v.as_array().is_some_and(Vec::is_empty) || v == json!("");
    if !empty {
        m.insert(k.into(), v);
    }
}

/// A token; its secret shown only to tokens with `acl:write`.
pub(super) fn token(t: &AclToken, state: &AclState, show_secret: bool) -> Value {
    let d = def(&t.definition);
    let mut m = Map::new();
    m.insert("AccessorID".into(), json!(t.accessor_id));
    let secret = if show_secret {
        t.secret_id.as_str()
    } else {
        "<hidden>"
    };
    m.insert("SecretID".into(), json!(secret));
    m.insert(
        "Description".into(),
        json!(d.get("Description").and_then(Value::as_str).unwrap_or("")),
    );
    put_nonempty(&mut m, "Policies", state.named_links(&d, "Policies"));
    put_nonempty(&mut m, "Roles", state.named_links(&d, "Roles"));
    put_nonempty(&mut m, "ServiceIdentities", get(&d, "ServiceIdentities"));
    put_nonempty(&mut m, "NodeIdentities", get(&d, "NodeIdentities"));
    put_nonempty(&mut m, "TemplatedPolicies", get(&d, "TemplatedPolicies"));
    m.insert(
        "Local".into(),
        json!(d.get("Local").and_then(Value::as_bool).unwrap_or(false)),
    );
    put_nonempty(&mut m, "AuthMethod", get(&d, "AuthMethod"));
    put_nonempty(&mut m, "ExpirationTime", get(&d, "ExpirationTime"));
    put_nonempty(&mut m, "ExpirationTTL", get(&d, "ExpirationTTL"));
    m.insert("CreateTime".into(), get(&d, "CreateTime"));
    m.insert("Hash".into(), json!(hash(&[&t.definition])));
    m.insert("CreateIndex".into(), json!(t.create_index));
    m.insert("ModifyIndex".into(), json!(t.modify_index));
    Value::Object(m)
}

/// A token in `/v1/acl/tokens`: as [`token`], with `Legacy`, without `ExpirationTTL`.
pub(super) fn token_stub(t: &AclToken, state: &AclState, show_secret: bool) -> Value {
    let mut v = token(t, state, show_secret);
    if let Value::Object(m) = &mut v {
        m.remove("ExpirationTTL");
        m.insert("Legacy".into(), json!(false));
    }
    v
}

pub(super) fn role(r: &AclRole, state: &AclState) -> Value {
    let d = def(&r.definition);
    let mut m = Map::new();
    m.insert("ID".into(), json!(r.id));
    m.insert("Name".into(), json!(r.name));
    m.insert(
        "Description".into(),
        json!(d.get("Description").and_then(Value::as_str).unwrap_or("")),
    );
    put_nonempty(&mut m, "Policies", state.named_links(&d, "Policies"));
    put_nonempty(&mut m, "ServiceIdentities", get(&d, "ServiceIdentities"));
    put_nonempty(&mut m, "NodeIdentities", get(&d, "NodeIdentities"));
    put_nonempty(&mut m, "TemplatedPolicies", get(&d, "TemplatedPolicies"));
    m.insert("Hash".into(), json!(hash(&[&r.name, &r.definition])));
    m.insert("CreateIndex".into(), json!(r.create_index));
    m.insert("ModifyIndex".into(), json!(r.modify_index));
    Value::Object(m)
}
