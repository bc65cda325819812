//! Prepared queries as Consul 1.10 has them: the definition ([`Definition`], Consul's JSON),
//! its checks before it is stored ([`validate`], [`check_set`]), templates
//! ([`template`]) and running a query (`execute`). The state machine stores queries in
//! `store/apply/prepared.rs`; reads resolve and run them in `store/prepared.rs`.

mod definition;
pub(crate) mod execute;
pub mod template;

pub use definition::{Connect, Definition, Dns, Failover, ServiceQuery, Template};

use crate::model::PreparedQuery;

/// Consul's `parseQuery`: what a definition must hold to be stored, with Consul's reasons
/// (the caller prefixes them with `Invalid prepared query: `). A template is also compiled.
pub fn validate(def: &Definition) -> Result<(), String> {
    if def.name.is_empty() && !def.is_template() && def.session.is_empty() {
        return Err("Must be bound to a session".into());
    }
    if def.token == "<hidden>" {
        return Err(format!(
            "Bad Token '{}', it looks like a query definition with a redacted token was submitted",
            def.token
        ));
    }
    if def.service.service.is_empty() {
        return Err("Must provide a Service name to query".into());
    }
    if def.service.failover.nearest_n < 0 {
        return Err(format!(
            "Bad NearestN '{}', must be >= 0",
            def.service.failover.nearest_n
        ));
    }
    for (k, v) in def.service.node_meta.iter().flatten() {
        meta_pair(k, v)
            .map_err(|why| format!("Couldn't load metadata pair ('{k}', '{v}'): {why}"))?;
    }
    if def.service.node_meta.as_ref().is_some_and(|m| m.len() > 64) {
        return Err("Node metadata cannot contain more than 64 key/value pairs".into());
    }
    let ttl = &def.dns.ttl;
    if !ttl.is_empty() {
        if ttl.trim_start().starts_with('-')
            && crate::go_duration(&ttl.replacen('-', "", 1)).is_some()
        {
            return Err(format!("DNS TTL '{ttl}', must be >=0"));
        }
        if crate::go_duration(ttl).is_none() {
            return Err(format!(
                "Bad DNS TTL '{ttl}': time: invalid duration \"{ttl}\""
            ));
        }
    }
    Ok(())
}

/// Consul's `validateMetaPair` for node metadata filters (`consul-` keys allowed).
fn meta_pair(k: &str, v: &str) -> Result<(), &'static str> {
    if k.is_empty() {
        return Err("Key cannot be blank");
    }
    if !k
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("Key contains invalid characters");
    }
    if k.len() > 128 {
        return Err("Key is too long (limit: 128 characters)");
    }
    if v.len() > 512 {
        return Err("Value is too long (limit: 512 characters)");
    }
    Ok(())
}

/// What the state must allow for `q` to be stored (Consul's `preparedQuerySetTxn`): its name
/// taken by no other query (compared case-insensitively), at most one template with an empty
/// name, no name that is another query's ID, and an existing session if it names one.
pub fn check_set(
    existing: &[PreparedQuery],
    q: &PreparedQuery,
    session_exists: bool,
) -> Result<(), String> {
    let others = || existing.iter().filter(|o| o.id != q.id);
    if !q.name.is_empty() {
        let lower = q.name.to_lowercase();
        if others().any(|o| o.name.to_lowercase() == lower) {
            return Err(format!("name '{}' aliases an existing query name", q.name));
        }
    } else if q.template && others().any(|o| o.template && o.name.is_empty()) {
        return Err("a query template with an empty name already exists".into());
    }
    if crate::id::is_uuid(&q.name) && existing.iter().any(|o| o.id == q.name) {
        return Err(format!("name '{}' aliases an existing query ID", q.name));
    }
    if !q.session.is_empty() && !session_exists {
        return Err(format!("invalid session {:?}", q.session));
    }
    Ok(())
}
