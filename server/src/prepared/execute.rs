//! Resolving a name to a query, and running it: Consul's `PreparedQueryResolve` and the
//! local half of `PreparedQuery.Execute` (health, tag and meta filters, shuffle, the node
//! sorted near, limit). There is no failover: Muster serves one datacenter.

use std::collections::{BTreeMap, HashSet};

use rand::seq::SliceRandom;

use super::{template, Definition};
use crate::id::is_uuid;
use crate::model::{HealthStatus, PreparedExecute, PreparedQuery, ServiceHealth};

/// The query `id_or_name` names: by ID (not a template), then by exact name (compared
/// case-insensitively), then the template with the longest name that prefixes it. A template
/// is rendered for the name asked. `Ok(None)`: no such query.
pub(crate) fn resolve(
    queries: &[PreparedQuery],
    id_or_name: &str,
) -> Result<Option<(PreparedQuery, Definition)>, String> {
    if id_or_name.is_empty() {
        return Err("Missing Query ID".into());
    }
    if is_uuid(id_or_name) {
        if let Some(q) = queries.iter().find(|q| q.id == id_or_name) {
            if q.template {
                return Err(
                    "prepared query templates can only be resolved up by name, not by ID".into(),
                );
            }
            return Ok(Some((q.clone(), Definition::of(q))));
        }
    }
    let lower = id_or_name.to_lowercase();
    let exact = queries
        .iter()
        .find(|q| !q.name.is_empty() && q.name.to_lowercase() == lower);
    let found = exact.or_else(|| {
        queries
            .iter()
            .filter(|q| q.template && lower.starts_with(&q.name.to_lowercase()))
            .max_by_key(|q| q.name.len())
    });
    let Some(q) = found else {
        return Ok(None);
    };
    let def = Definition::of(q);
    if !q.template {
        return Ok(Some((q.clone(), def)));
    }
    let rendered = template::compile(&def)?.render(id_or_name, "")?;
    let mut out = rendered.to_stored();
    out.create_index = q.create_index;
    out.modify_index = q.modify_index;
    Ok(Some((out, rendered)))
}

/// The instances a query selects from every instance of its service: none with a critical
/// check (with `OnlyPassing`, none with any check not passing), `IgnoreCheckIDs` aside; with
/// all of `NodeMeta` and `ServiceMeta`; with every tag of `Tags` and none of its `!tag`s
/// (compared case-insensitively).
pub(crate) fn select(def: &Definition, all: Vec<ServiceHealth>) -> Vec<ServiceHealth> {
    let s = &def.service;
    let ignore: HashSet<&str> = s
        .ignore_check_ids
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let (mut must, mut not) = (Vec::new(), Vec::new());
    for t in s.tags.iter().flatten() {
        let t = t.to_lowercase();
        match t.strip_prefix('!') {
            Some(n) => not.push(n.to_string()),
            None => must.push(t),
        }
    }
    let meta_ok = |want: &Option<BTreeMap<String, String>>, have: &BTreeMap<String, String>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.get(k).is_some_and(|h| h == v))
    };
    all.into_iter()
        .filter(|h| {
            h.checks.iter().all(|c| {
                ignore.contains(c.id.as_str())
                    || !(c.status == HealthStatus::Critical
                        || (s.only_passing && c.status != HealthStatus::Passing))
            })
        })
        .filter(|h| meta_ok(&s.node_meta, &h.node.meta))
        .filter(|h| meta_ok(&s.service_meta, &h.service.meta))
        .filter(|h| {
            let tags: HashSet<String> = h.service.tags.iter().map(|t| t.to_lowercase()).collect();
            must.iter().all(|t| tags.contains(t)) && !not.iter().any(|t| tags.contains(t))
        })
        .collect()
}

/// The node to sort near, as Consul picks it: the request's `?near`, else the query's
/// `Near`; `_agent` is the asking agent's node, `_ip` the node at the request's address.
pub(crate) fn source_node(
    req: &PreparedExecute,
    def: &Definition,
    node_at: impl Fn(&str) -> Option<String>,
) -> String {
    let near = if req.near.is_empty() {
        def.service.near.as_str()
    } else {
        req.near.as_str()
    };
    match near {
        "_agent" => req.agent_node.clone(),
        "_ip" if req.source_ip.is_empty() => String::new(),
        "_ip" => node_at(&req.source_ip).unwrap_or_default(),
        n => n.to_string(),
    }
}

/// Orders the selected instances as Consul answers with them: shuffled, then sorted by
/// distance from `near` by `sort` (which may leave the shuffle as it is), the `near` node
/// itself first if among the first ten, then cut to `limit` (0: all).
pub(crate) fn arrange(
    mut nodes: Vec<ServiceHealth>,
    near: &str,
    limit: u64,
    sort: impl FnOnce(&str, &mut [ServiceHealth]),
) -> Vec<ServiceHealth> {
    nodes.shuffle(&mut rand::rng());
    if !near.is_empty() {
        sort(near, &mut nodes);
        if let Some(i) = nodes.iter().take(10).position(|h| h.node.name == near) {
            nodes.swap(0, i);
        }
    }
    if let Ok(limit) = usize::try_from(limit) {
        if limit > 0 {
            nodes.truncate(limit);
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Check, Node, Service};

    fn instance(node: &str, tags: &[&str], checks: &[(&str, HealthStatus)]) -> ServiceHealth {
        ServiceHealth {
            node: Node {
                name: node.into(),
                meta: [("rack".to_string(), node.to_string())].into(),
                ..Node::default()
            },
            service: Service {
                id: "web".into(),
                name: "web".into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ..Service::default()
            },
            checks: checks
                .iter()
                .map(|(id, status)| Check {
                    node: node.into(),
                    id: id.to_string(),
                    status: *status,
                    ..Check::default()
                })
                .collect(),
        }
    }

    fn names(v: &[ServiceHealth]) -> Vec<&str> {
        let mut n: Vec<&str> = v.iter().map(|h| h.node.name.as_str()).collect();
        n.sort();
        n
    }

    #[test]
    fn filters_health_tags_and_meta_as_consul() {
        use HealthStatus::*;
        let all = vec![
            instance("a", &["Primary"], &[("serfHealth", Passing)]),
            instance("b", &["primary", "canary"], &[("serfHealth", Passing)]),
            instance("c", &["primary"], &[("svc", Warning)]),
            instance("d", &["primary"], &[("svc", Critical)]),
            instance("e", &["primary"], &[("flaky", Critical), ("svc", Passing)]),
        ];
        let mut def = Definition::default();
        def.service.tags = Some(vec!["primary".into(), "!canary".into()]);
        def.service.ignore_check_ids = Some(vec!["flaky".into()]);
        assert_eq!(names(&select(&def, all.clone())), ["a", "c", "e"]);
        def.service.only_passing = true;
        assert_eq!(names(&select(&def, all.clone())), ["a", "e"]);
        def.service.node_meta = Some([("rack".to_string(), "e".to_string())].into());
        assert_eq!(names(&select(&def, all)), ["e"]);
    }

    #[test]
    fn resolves_by_id_then_name_then_longest_template_prefix() {
        let stored = |id: &str, name: &str, template: bool| {
            let mut d = Definition {
                id: id.into(),
                name: name.into(),
                ..Definition::default()
            };
            d.service.service = "${name.suffix}".into();
            if template {
                d.template.r#type = template::NAME_PREFIX_MATCH.into();
            }
            d.to_stored()
        };
        let id = "8f246b77-f3e1-ff88-5b48-8ec93abf3e05";
        let qs = vec![
            stored(id, "static", false),
            stored("6f246b77-f3e1-ff88-5b48-8ec93abf3e05", "", true),
            stored("7f246b77-f3e1-ff88-5b48-8ec93abf3e05", "geo-", true),
        ];
        let found = |n: &str| resolve(&qs, n).map(|r| r.map(|(q, d)| (q.id, d.service.service)));
        assert_eq!(
            found(id),
            Ok(Some((id.to_string(), "${name.suffix}".into())))
        );
        assert_eq!(
            found("STATIC").map(|r| r.map(|r| r.0)),
            Ok(Some(id.to_string()))
        );
        assert_eq!(
            found("geo-db"),
            Ok(Some((
                "7f246b77-f3e1-ff88-5b48-8ec93abf3e05".into(),
                "db".into()
            )))
        );
        assert_eq!(
            found("web"),
            Ok(Some((
                "6f246b77-f3e1-ff88-5b48-8ec93abf3e05".into(),
                "web".into()
            )))
        );
        assert!(found("7f246b77-f3e1-ff88-5b48-8ec93abf3e05").is_err());
        assert_eq!(resolve(&qs[..1], "other"), Ok(None));
    }

    #[test]
    fn arranges_near_node_first_and_limits() {
        let all: Vec<ServiceHealth> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| instance(n, &[], &[]))
            .collect();
        for _ in 0..20 {
            let out = arrange(all.clone(), "c", 2, |_, _| {});
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].node.name, "c");
        }
        assert_eq!(arrange(all, "", 0, |_, _| {}).len(), 4);
    }
}
