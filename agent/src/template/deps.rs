//! The data a template reads: one [`Dep`] per distinct query, parsed from a template
//! function's arguments with consul-template's syntax, the HTTP request it makes, and its
//! reply turned into the values consul-template hands its templates (`dependency/*.go`:
//! the same field names, sorting and health filtering).

use std::collections::BTreeMap;

use gotmpl::Value;
use serde_json::Value as Json;

use super::value::{from_json, list, map, string};

/// One query. Identical queries from any number of templates are one `Dep`, so one watcher.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dep {
    /// `key`, `keyOrDefault`, `keyExists`: one KV entry (absent is a value too).
    KvGet { key: String, dc: Option<String> },
    /// `ls`, `tree`, `safeLs`, `safeTree`: the entries under a prefix.
    KvList { prefix: String, dc: Option<String> },
    /// `service`: a service's instances from `/v1/health/service`, health-filtered.
    Service {
        name: String,
        tag: Option<String>,
        dc: Option<String>,
        /// Accepted statuses (`passing` alone by default; `any` accepts all).
        filter: Vec<String>,
    },
    /// `services`: the catalog's service names and tags.
    Services { dc: Option<String> },
    /// `node`: one node and its services; `None` is the local agent's node.
    Node {
        node: Option<String>,
        dc: Option<String>,
    },
    /// `nodes`: the catalog's nodes.
    Nodes { dc: Option<String> },
    /// `datacenters`.
    Datacenters,
    /// `file`: a local file's contents, polled.
    File(String),
}

/// `name[@dc]`, as consul-template splits a query on its last `@`.
fn split_dc(s: &str) -> (String, Option<String>) {
    match s.rsplit_once('@') {
        Some((name, dc)) if !dc.is_empty() => (name.to_string(), Some(dc.to_string())),
        _ => (s.to_string(), None),
    }
}

const STATUSES: [&str; 5] = ["passing", "warning", "critical", "maintenance", "any"];

impl Dep {
    pub fn kv_get(s: &str) -> Dep {
        let (key, dc) = split_dc(s);
        Dep::KvGet { key, dc }
    }

    pub fn kv_list(s: &str) -> Dep {
        let (prefix, dc) = split_dc(s);
        Dep::KvList { prefix, dc }
    }

    /// `[tag.]name[@dc][|status,…]`; further arguments are more statuses, as consul-template
    /// joins `service "web" "passing,warning"` with `|`.
    pub fn service(args: &[String]) -> Result<Dep, String> {
        let joined = args.join("|");
        let (query, filter) = match joined.split_once('|') {
            Some((q, f)) => (q, Some(f)),
            None => (joined.as_str(), None),
        };
        let (name_tag, dc) = split_dc(query);
        let (tag, name) = match name_tag.rsplit_once('.') {
            Some((t, n)) => (Some(t.to_string()), n.to_string()),
            None => (None, name_tag),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(format!("health.service: invalid format: {query:?}"));
        }
        let mut statuses = Vec::new();
        for s in filter.unwrap_or("").split([',', '|']) {
            let s = s.trim();
            if s.is_empty() {
                continue;
            }
            if !STATUSES.contains(&s) {
                return Err(format!(
                    "health.service: invalid filter: {s:?} in {joined:?}"
                ));
            }
            statuses.push(s.to_string());
        }
        if statuses.iter().any(|s| s == "any") && statuses.len() > 1 {
            return Err(format!(
                "health.service: cannot specify extra keys when using \"any\" in {joined:?}"
            ));
        }
        if statuses.is_empty() {
            statuses.push("passing".into());
        }
        Ok(Dep::Service {
            name,
            tag,
            dc,
            filter: statuses,
        })
    }

    /// What the operator reads in a log line or a check's output.
    pub fn display(&self) -> String {
        let at = |dc: &Option<String>| dc.as_ref().map(|d| format!("@{d}")).unwrap_or_default();
        match self {
            Dep::KvGet { key, dc } => format!("kv.get({key}{})", at(dc)),
            Dep::KvList { prefix, dc } => format!("kv.list({prefix}{})", at(dc)),
            Dep::Service {
                name,
                tag,
                dc,
                filter,
            } => {
                let tag = tag.as_ref().map(|t| format!("{t}.")).unwrap_or_default();
                format!("health.service({tag}{name}{}|{})", at(dc), filter.join(","))
            }
            Dep::Services { dc } => format!("catalog.services({})", at(dc)),
            Dep::Node { node, dc } => {
                format!("catalog.node({}{})", node.as_deref().unwrap_or(""), at(dc))
            }
            Dep::Nodes { dc } => format!("catalog.nodes({})", at(dc)),
            Dep::Datacenters => "catalog.datacenters".into(),
            Dep::File(p) => format!("file({p})"),
        }
    }

    /// The HTTP path and query of one read (without `index`/`wait`), `None` for a file.
    /// `node` is the local agent's node name, for a `node` with no argument.
    pub fn path(&self, local_node: &str) -> Option<String> {
        let esc = crate::cli::url_escape;
        let mut q: Vec<String> = Vec::new();
        let path = match self {
            Dep::KvGet { key, .. } => format!("/v1/kv/{}", esc_path(key)),
            Dep::KvList { prefix, .. } => {
                q.push("recurse".into());
                format!("/v1/kv/{}", esc_path(prefix))
            }
            Dep::Service {
                name, tag, filter, ..
            } => {
                if let Some(t) = tag {
                    q.push(format!("tag={}", esc(t)));
                }
                if filter.len() == 1 && filter[0] == "passing" {
                    q.push("passing".into());
                }
                format!("/v1/health/service/{}", esc(name))
            }
            Dep::Services { .. } => "/v1/catalog/services".into(),
            Dep::Node { node, .. } => {
                format!(
                    "/v1/catalog/node/{}",
                    esc(node.as_deref().unwrap_or(local_node))
                )
            }
            Dep::Nodes { .. } => "/v1/catalog/nodes".into(),
            Dep::Datacenters => "/v1/catalog/datacenters".into(),
            Dep::File(_) => return None,
        };
        if let Some(dc) = self.dc() {
            q.push(format!("dc={}", esc(dc)));
        }
        Some(if q.is_empty() {
            path
        } else {
            format!("{path}?{}", q.join("&"))
        })
    }

    fn dc(&self) -> Option<&str> {
        match self {
            Dep::KvGet { dc, .. }
            | Dep::KvList { dc, .. }
            | Dep::Service { dc, .. }
            | Dep::Services { dc }
            | Dep::Node { dc, .. }
            | Dep::Nodes { dc } => dc.as_deref(),
            Dep::Datacenters | Dep::File(_) => None,
        }
    }

    /// Whether the agent can hold this read open until something changes; the others are
    /// polled.
    pub fn blocks(&self) -> bool {
        !matches!(self, Dep::Datacenters | Dep::File(_))
    }

    /// A reply into the value the template functions return: `status` 404 is an absent key
    /// (`Nil`) or an empty prefix, any other non-2xx is the agent's reason.
    pub fn decode(&self, status: u16, body: &[u8]) -> Result<Value, String> {
        if status == 404 && matches!(self, Dep::KvGet { .. } | Dep::KvList { .. }) {
            return Ok(match self {
                Dep::KvGet { .. } => Value::Nil,
                _ => list(Vec::new()),
            });
        }
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(body).trim().to_string();
            return Err(if status == 403 {
                format!("403 (permission denied: {text})")
            } else {
                format!("unexpected response code: {status} ({text})")
            });
        }
        let json: Json = serde_json::from_slice(body).map_err(|e| format!("bad reply: {e}"))?;
        Ok(match self {
            Dep::KvGet { .. } => json
                .get(0)
                .map(|e| string(&kv_value(e)))
                .unwrap_or(Value::Nil),
            Dep::KvList { prefix, .. } => key_pairs(prefix, &json),
            Dep::Service { filter, .. } => health_services(filter, &json),
            Dep::Services { .. } => services(&json),
            Dep::Node { .. } => catalog_node(&json),
            Dep::Nodes { .. } => list(
                sorted_by(json.as_array(), |n| s(n, "Node"))
                    .into_iter()
                    .map(node)
                    .collect(),
            ),
            Dep::Datacenters => {
                let mut dcs: Vec<String> = json
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|d| d.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                dcs.sort();
                list(dcs.iter().map(|d| string(d)).collect())
            }
            Dep::File(_) => string(&String::from_utf8_lossy(body)),
        })
    }
}

/// A KV path escaped segment by segment, its slashes kept.
fn esc_path(key: &str) -> String {
    key.split('/')
        .map(crate::cli::url_escape)
        .collect::<Vec<_>>()
        .join("/")
}

fn s(v: &Json, k: &str) -> String {
    v.get(k).and_then(Json::as_str).unwrap_or("").to_string()
}

fn u(v: &Json, k: &str) -> Value {
    Value::Uint(v.get(k).and_then(Json::as_u64).unwrap_or(0))
}

fn obj(v: &Json, k: &str) -> Value {
    match v.get(k) {
        Some(Json::Null) | None => map(BTreeMap::new()),
        Some(x) => from_json(x),
    }
}

fn sorted_by(a: Option<&Vec<Json>>, key: impl Fn(&Json) -> String) -> Vec<&Json> {
    let mut v: Vec<&Json> = a.map(|a| a.iter().collect()).unwrap_or_default();
    v.sort_by_key(|x| key(x));
    v
}

/// A KV entry's value, base64-decoded.
fn kv_value(e: &Json) -> String {
    use base64::Engine;
    let raw = e.get("Value").and_then(Json::as_str).unwrap_or("");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Tags copied and sorted, as consul-template's `deepCopyAndSortTags`.
fn sorted_tags(v: Option<&Json>) -> Value {
    let mut tags: Vec<String> = v
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    list(tags.iter().map(|t| string(t)).collect())
}

/// consul-template's `KeyPair`: `Key` relative to the prefix, `Path` the whole key.
fn key_pairs(prefix: &str, json: &Json) -> Value {
    let items = json.as_array().map(Vec::as_slice).unwrap_or(&[]);
    list(
        items
            .iter()
            .map(|e| {
                let path = s(e, "Key");
                let key = path
                    .strip_prefix(prefix)
                    .unwrap_or(&path)
                    .trim_start_matches('/')
                    .to_string();
                map(BTreeMap::from([
                    ("Path".into(), string(&path)),
                    ("Key".into(), string(&key)),
                    ("Value".into(), string(&kv_value(e))),
                    ("CreateIndex".into(), u(e, "CreateIndex")),
                    ("ModifyIndex".into(), u(e, "ModifyIndex")),
                    ("LockIndex".into(), u(e, "LockIndex")),
                    ("Flags".into(), u(e, "Flags")),
                    ("Session".into(), string(&s(e, "Session"))),
                ]))
            })
            .collect(),
    )
}

/// Consul api's `HealthChecks.AggregatedStatus`: maintenance wins, then critical, warning,
/// passing; no checks is passing.
fn aggregated_status(checks: Option<&Json>) -> &'static str {
    let (mut warning, mut critical, mut maint) = (false, false, false);
    for c in checks
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let id = s(c, "CheckID");
        if id == "_node_maintenance" || id.starts_with("_service_maintenance:") {
            maint = true;
            continue;
        }
        match s(c, "Status").as_str() {
            "warning" => warning = true,
            "critical" => critical = true,
            _ => {}
        }
    }
    if maint {
        "maintenance"
    } else if critical {
        "critical"
    } else if warning {
        "warning"
    } else {
        "passing"
    }
}

/// consul-template's `HealthService` list: filtered by status, sorted by node then ID.
fn health_services(filter: &[String], json: &Json) -> Value {
    let mut out: Vec<(String, String, Value)> = Vec::new();
    for e in json.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let (n, svc) = (&e["Node"], &e["Service"]);
        let status = aggregated_status(e.get("Checks"));
        if !(filter.iter().any(|f| f == "any" || f == status)) {
            continue;
        }
        let address = match s(svc, "Address") {
            a if a.is_empty() => s(n, "Address"),
            a => a,
        };
        let checks = e.get("Checks").map(from_json).unwrap_or(list(Vec::new()));
        let fields = BTreeMap::from([
            ("Node".into(), string(&s(n, "Node"))),
            ("NodeID".into(), string(&s(n, "ID"))),
            ("Kind".into(), string(&s(svc, "Kind"))),
            ("NodeAddress".into(), string(&s(n, "Address"))),
            ("NodeDatacenter".into(), string(&s(n, "Datacenter"))),
            ("NodeTaggedAddresses".into(), obj(n, "TaggedAddresses")),
            ("NodeMeta".into(), obj(n, "Meta")),
            ("ServiceMeta".into(), obj(svc, "Meta")),
            ("Address".into(), string(&address)),
            ("ServiceTaggedAddresses".into(), obj(svc, "TaggedAddresses")),
            ("ID".into(), string(&s(svc, "ID"))),
            ("Name".into(), string(&s(svc, "Service"))),
            ("Tags".into(), sorted_tags(svc.get("Tags"))),
            ("Checks".into(), checks),
            ("Status".into(), string(status)),
            ("Port".into(), u(svc, "Port")),
            ("Weights".into(), obj(svc, "Weights")),
            ("Namespace".into(), string(&s(svc, "Namespace"))),
        ]);
        out.push((s(n, "Node"), s(svc, "ID"), map(fields)));
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    list(out.into_iter().map(|(_, _, v)| v).collect())
}

/// consul-template's `CatalogSnippet` list (`services`), sorted by name.
fn services(json: &Json) -> Value {
    let mut names: Vec<(&String, &Json)> = json
        .as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    names.sort_by_key(|(n, _)| *n);
    list(
        names
            .into_iter()
            .map(|(name, tags)| {
                map(BTreeMap::from([
                    ("Name".into(), string(name)),
                    ("Tags".into(), sorted_tags(Some(tags))),
                ]))
            })
            .collect(),
    )
}

/// consul-template's `Node`.
fn node(n: &Json) -> Value {
    map(BTreeMap::from([
        ("ID".into(), string(&s(n, "ID"))),
        ("Node".into(), string(&s(n, "Node"))),
        ("Address".into(), string(&s(n, "Address"))),
        ("Datacenter".into(), string(&s(n, "Datacenter"))),
        ("TaggedAddresses".into(), obj(n, "TaggedAddresses")),
        ("Meta".into(), obj(n, "Meta")),
    ]))
}

/// consul-template's `CatalogNode`: the node and its services sorted by name; `Nil` for an
/// unknown node.
fn catalog_node(json: &Json) -> Value {
    if json.is_null() {
        return Value::Nil;
    }
    let svcs: Vec<&Json> = json
        .get("Services")
        .and_then(Json::as_object)
        .map(|m| m.values().collect())
        .unwrap_or_default();
    let mut svcs: Vec<(String, String, Value)> = svcs
        .into_iter()
        .map(|sv| {
            let v = map(BTreeMap::from([
                ("ID".into(), string(&s(sv, "ID"))),
                ("Service".into(), string(&s(sv, "Service"))),
                ("Tags".into(), sorted_tags(sv.get("Tags"))),
                ("Meta".into(), obj(sv, "Meta")),
                ("Port".into(), u(sv, "Port")),
                ("Address".into(), string(&s(sv, "Address"))),
            ]));
            (s(sv, "Service"), s(sv, "ID"), v)
        })
        .collect();
    svcs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    map(BTreeMap::from([
        ("Node".into(), node(&json["Node"])),
        (
            "Services".into(),
            list(svcs.into_iter().map(|(_, _, v)| v).collect()),
        ),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_queries_parse_as_consul_template() {
        let d = Dep::service(&["primary.redis@dc2|passing,warning".into()]).expect("parse");
        assert_eq!(
            d,
            Dep::Service {
                name: "redis".into(),
                tag: Some("primary".into()),
                dc: Some("dc2".into()),
                filter: vec!["passing".into(), "warning".into()],
            }
        );
        let d = Dep::service(&["web".into(), "any".into()]).expect("parse");
        assert!(matches!(d, Dep::Service { ref filter, .. } if filter == &["any"]));
        let d = Dep::service(&["web".into()]).expect("parse");
        assert_eq!(
            d.path("n").as_deref(),
            Some("/v1/health/service/web?passing")
        );
        assert!(Dep::service(&["web|bogus".into()]).is_err());
        assert!(Dep::service(&["web|any,passing".into()]).is_err());
    }

    #[test]
    fn health_filter_and_order() {
        let json = serde_json::json!([
            {"Node": {"Node": "b", "Address": "10.0.0.2"}, "Service": {"ID": "r1", "Service": "redis", "Port": 6379, "Tags": ["z", "a"]},
             "Checks": [{"CheckID": "serfHealth", "Status": "passing"}]},
            {"Node": {"Node": "a", "Address": "10.0.0.1"}, "Service": {"ID": "r2", "Service": "redis", "Address": "10.1.1.1", "Port": 6380},
             "Checks": [{"CheckID": "c", "Status": "warning"}]},
            {"Node": {"Node": "c", "Address": "10.0.0.3"}, "Service": {"ID": "r3", "Service": "redis"},
             "Checks": [{"CheckID": "_node_maintenance", "Status": "critical"}]}
        ]);
        let body = serde_json::to_vec(&json).expect("json");
        let d = Dep::service(&["redis|passing,warning".into()]).expect("parse");
        let v = d.decode(200, &body).expect("decode");
        let out = gotmpl::Template::new("t")
            .parse("{{range .}}{{.Node}} {{.Address}}:{{.Port}} {{.Status}} {{.Tags}}\n{{end}}")
            .and_then(|t| t.execute_to_string(&v))
            .expect("render");
        assert_eq!(
            out,
            "a 10.1.1.1:6380 warning []\nb 10.0.0.2:6379 passing [a z]\n"
        );
        let any = Dep::service(&["redis|any".into()]).expect("parse");
        let v = any.decode(200, &body).expect("decode");
        assert_eq!(v.len(), Some(3));
    }

    #[test]
    fn denied_reads_name_the_reason() {
        let d = Dep::kv_get("secret");
        let e = d.decode(403, b"Permission denied").expect_err("denied");
        assert!(e.contains("403") && e.contains("Permission denied"), "{e}");
        assert!(matches!(d.decode(404, b""), Ok(Value::Nil)));
    }
}
