//! Entry points for the fuzz targets in `tests/fuzz`: the crate's private parsers, reached
//! through the same functions the handlers call. Not an API; hidden from the docs.

use std::collections::BTreeMap;

use muster_server::model::{Check, HealthStatus, Node, Service};
use serde_json::Value;

use crate::filter;
use crate::types::{CatalogNode, HealthCheck, ServiceEntry};

/// A health service entry with something in every kind of field: maps with keys, lists of
/// strings and of structs, numbers and booleans.
fn entry() -> ServiceEntry {
    let meta = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    let node = Node {
        name: "web1".into(),
        id: "7f3c9c2e-1b1a-4f7e-9d2a-3c4b5d6e7f80".into(),
        address: "10.0.0.1".into(),
        datacenter: "dc1".into(),
        tagged_addresses: meta("lan", "10.0.0.1"),
        meta: meta("env", "prod"),
        create_index: 5,
        modify_index: 7,
    };
    let service = Service {
        id: "web-1".into(),
        name: "web".into(),
        tags: vec!["v2".into(), "primary".into()],
        address: String::new(),
        port: 8080,
        meta: meta("version", "2.1"),
        weight_passing: 1,
        weight_warning: 1,
        enable_tag_override: false,
        create_index: 6,
        modify_index: 6,
    };
    let check = |id: &str, status, service: &str| -> HealthCheck {
        Check {
            node: "web1".into(),
            id: id.into(),
            name: id.into(),
            status,
            notes: String::new(),
            output: "HTTP GET http://10.0.0.1:8080/: 200 OK".into(),
            service_id: service.into(),
            service_name: if service.is_empty() { "" } else { "web" }.into(),
            create_index: 8,
            modify_index: 9,
            ..Default::default()
        }
        .into()
    };
    ServiceEntry {
        node: node.into(),
        service: service.into(),
        checks: vec![
            check("serfHealth", HealthStatus::Passing, ""),
            check("service:web-1", HealthStatus::Warning, "web-1"),
        ],
    }
}

/// Runs `expr` as `?filter=` does on `/v1/health/service/*` and `/v1/catalog/nodes`
/// (parse, selector check against the result type, evaluation), then evaluates it without
/// the selector check against the same entry's JSON, so evaluation is reached by selectors
/// that no endpoint would accept too. Returns how many of the results matched, or the 400
/// reason.
pub fn filter(expr: &str) -> Result<usize, String> {
    let e = entry();
    let matched_nodes = filter::apply::<CatalogNode>(Some(expr), vec![e.node.clone()]);
    let json: Value = serde_json::to_value(&e).map_err(|e| e.to_string())?;
    let unchecked = filter::parse(expr).map(|x| x.matches(&json));
    let matched = filter::apply::<ServiceEntry>(Some(expr), vec![e])?;
    // The checked paths may refuse what the bare parser accepts, never the reverse (an
    // empty filter is no filter at all).
    assert!(
        unchecked.is_ok() || expr.is_empty(),
        "apply accepted what parse refused: {expr:?}"
    );
    Ok(matched.len() + matched_nodes.map_or(0, |m| m.len()))
}
