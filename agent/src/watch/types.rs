//! A watch's parameters, parsed as Consul's `watch.ParseExempt` parses them (`api/watch`):
//! the generic keys (`type`, `datacenter`, `token`, `handler_type`, `stale`), each type's own
//! keys, then the caller's exempt keys; whatever is left is an error. Both `muster watch` and
//! the `watches` config key build their parameters as a JSON object and come through here,
//! so they accept and refuse the same things with Consul's messages.

use serde_json::{Map, Value};

/// What a watch looks at, with the type's own parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchType {
    /// `key`: one KV entry (`GET /v1/kv/<key>`).
    Key { key: String },
    /// `keyprefix`: every entry under a prefix (`GET /v1/kv/<prefix>?recurse`).
    KeyPrefix { prefix: String },
    /// `services`: the catalog's service names and tags.
    Services,
    /// `nodes`: the catalog's nodes.
    Nodes,
    /// `service`: a service's instances with their node and checks.
    Service {
        service: String,
        tags: Vec<String>,
        passing_only: bool,
    },
    /// `checks`: the checks of a service, or the checks in a state (`any` when neither).
    Checks {
        service: Option<String>,
        state: Option<String>,
        tags: Vec<String>,
    },
    /// `event`: user events, optionally of one name (`GET /v1/event/list`).
    Event { name: String },
}

/// A parsed watch: what to read, and how to ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The `type` as given (`keyprefix`), for logs.
    pub type_name: String,
    pub kind: WatchType,
    /// `datacenter`: sent as `?dc=`.
    pub datacenter: Option<String>,
    /// `token`: sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// `stale`: read from any server (not for events, as in Consul).
    pub stale: bool,
    /// `handler_type`: `script` (the default) or `http`.
    pub handler_type: String,
    /// The exempt keys the caller asked to keep (`handler`, `args`, `http_handler_config`).
    pub exempt: Map<String, Value>,
}

impl Spec {
    /// The request path and query this watch reads, without the blocking `index`; segments
    /// and values percent-encoded by `url`, as the HTTP client would.
    pub fn path(&self) -> String {
        let mut url = reqwest::Url::parse("http://agent/").expect("a constant URL");
        let (segments, mut query): (Vec<&str>, Vec<(&str, &str)>) = match &self.kind {
            WatchType::Key { key } => (kv_segments(key), Vec::new()),
            WatchType::KeyPrefix { prefix } => (kv_segments(prefix), vec![("recurse", "")]),
            WatchType::Services => (vec!["v1", "catalog", "services"], Vec::new()),
            WatchType::Nodes => (vec!["v1", "catalog", "nodes"], Vec::new()),
            WatchType::Service {
                service,
                tags,
                passing_only,
            } => {
                let mut q: Vec<(&str, &str)> = tags.iter().map(|t| ("tag", t.as_str())).collect();
                if *passing_only {
                    q.push(("passing", "1"));
                }
                (vec!["v1", "health", "service", service], q)
            }
            WatchType::Checks {
                service: Some(s), ..
            } => (vec!["v1", "health", "checks", s], Vec::new()),
            WatchType::Checks { state, tags, .. } => {
                let state = state.as_deref().unwrap_or("any");
                let q = tags.iter().map(|t| ("tag", t.as_str())).collect();
                (vec!["v1", "health", "state", state], q)
            }
            WatchType::Event { name } => {
                let q = if name.is_empty() {
                    Vec::new()
                } else {
                    vec![("name", name.as_str())]
                };
                (vec!["v1", "event", "list"], q)
            }
        };
        if self.stale && !matches!(self.kind, WatchType::Event { .. }) {
            query.push(("stale", ""));
        }
        if let Some(dc) = &self.datacenter {
            query.push(("dc", dc));
        }
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().extend(segments);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                if v.is_empty() {
                    pairs.append_key_only(k);
                } else {
                    pairs.append_pair(k, v);
                }
            }
        }
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Whether a 404 is an empty result rather than an error (KV reads, as Consul's client
    /// turns them into a nil pair or list).
    pub fn not_found_is_empty(&self) -> bool {
        matches!(
            self.kind,
            WatchType::Key { .. } | WatchType::KeyPrefix { .. }
        )
    }
}

/// `/v1/kv/<key>`'s segments: the key's own slashes kept.
fn kv_segments(key: &str) -> Vec<&str> {
    let mut s = vec!["v1", "kv"];
    s.extend(key.split('/'));
    s
}

/// Parses watch parameters as Consul's `watch.ParseExempt` does; the `exempt` keys are
/// kept aside for the caller (the handler), and any other key left over is refused.
pub fn parse(mut params: Map<String, Value>, exempt: &[&str]) -> Result<Spec, String> {
    let datacenter = take_str(&mut params, "datacenter")?.filter(|s| !s.is_empty());
    let token = take_str(&mut params, "token")?.filter(|s| !s.is_empty());
    let type_name = take_str(&mut params, "type")?.unwrap_or_default();
    if type_name.is_empty() {
        return Err("Watch type must be specified".into());
    }
    let handler_type = take_str(&mut params, "handler_type")?.unwrap_or_default();
    let mut kept = Map::new();
    if handler_type == "http" {
        match params.remove("http_handler_config") {
            Some(v) => {
                kept.insert("http_handler_config".into(), v);
            }
            None => {
                return Err("Handler type 'http' requires 'http_handler_config' to be set".into())
            }
        }
    }
    // Consul reads `stale` in each type's factory; events ignore it but still consume it.
    let stale = take_bool(&mut params, "stale")?.unwrap_or(false);
    let kind = match type_name.as_str() {
        "key" => {
            let key = take_str(&mut params, "key")?.unwrap_or_default();
            if key.is_empty() {
                return Err("Must specify a single key to watch".into());
            }
            WatchType::Key { key }
        }
        "keyprefix" => {
            let prefix = take_str(&mut params, "prefix")?.unwrap_or_default();
            if prefix.is_empty() {
                return Err("Must specify a single prefix to watch".into());
            }
            WatchType::KeyPrefix { prefix }
        }
        "services" => WatchType::Services,
        "nodes" => WatchType::Nodes,
        "service" => {
            let service = take_str(&mut params, "service")?.unwrap_or_default();
            if service.is_empty() {
                return Err("Must specify a single service to watch".into());
            }
            let tags = take_strings(&mut params, "tag")?;
            let passing_only = take_bool(&mut params, "passingonly")?.unwrap_or(false);
            WatchType::Service {
                service,
                tags,
                passing_only,
            }
        }
        "checks" => {
            let service = take_str(&mut params, "service")?.filter(|s| !s.is_empty());
            let state = take_str(&mut params, "state")?.filter(|s| !s.is_empty());
            if service.is_some() && state.is_some() {
                return Err("Cannot specify service and state".into());
            }
            let tags = take_strings(&mut params, "tag")?;
            WatchType::Checks {
                service,
                state,
                tags,
            }
        }
        "event" => WatchType::Event {
            name: take_str(&mut params, "name")?.unwrap_or_default(),
        },
        other => return Err(format!("Unsupported watch type: {other}")),
    };
    for key in exempt {
        if let Some(v) = params.remove(*key) {
            kept.insert((*key).to_string(), v);
        }
    }
    if !params.is_empty() {
        let bad: Vec<&str> = params.keys().map(String::as_str).collect();
        return Err(format!("Invalid parameters: [{}]", bad.join(" ")));
    }
    Ok(Spec {
        type_name,
        kind,
        datacenter,
        token,
        stale,
        handler_type,
        exempt: kept,
    })
}

fn take_str(params: &mut Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match params.remove(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("Expecting {name} to be a string")),
    }
}

fn take_bool(params: &mut Map<String, Value>, name: &str) -> Result<Option<bool>, String> {
    match params.remove(name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(format!("Expecting {name} to be a boolean")),
    }
}

/// A string or a list of strings, as Consul's `assignValueStringSlice` takes `tag`.
fn take_strings(params: &mut Map<String, Value>, name: &str) -> Result<Vec<String>, String> {
    match params.remove(name) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                _ => Err(format!("Index {i} of {name} expected to be string")),
            })
            .collect(),
        Some(_) => Err(format!("Expecting {name} to be a string or []string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn parses_each_type_into_its_request() {
        let s = parse(params(json!({"type": "keyprefix", "prefix": "app/x"})), &[]).unwrap();
        assert_eq!(s.path(), "/v1/kv/app/x?recurse");
        let s = parse(
            params(
                json!({"type": "service", "service": "web", "tag": ["a", "b"],
                          "passingonly": true, "stale": true}),
            ),
            &[],
        )
        .unwrap();
        assert_eq!(
            s.path(),
            "/v1/health/service/web?tag=a&tag=b&passing=1&stale"
        );
        let s = parse(params(json!({"type": "checks"})), &[]).unwrap();
        assert_eq!(s.path(), "/v1/health/state/any");
        let s = parse(params(json!({"type": "event", "name": "deploy"})), &[]).unwrap();
        assert_eq!(s.path(), "/v1/event/list?name=deploy");
    }

    #[test]
    fn refuses_as_consul_does() {
        let err = |v: Value| parse(params(v), &["args"]).unwrap_err();
        assert_eq!(err(json!({})), "Watch type must be specified");
        assert_eq!(
            err(json!({"type": "key"})),
            "Must specify a single key to watch"
        );
        assert_eq!(err(json!({"type": "foo"})), "Unsupported watch type: foo");
        assert_eq!(
            err(json!({"type": "checks", "service": "a", "state": "passing"})),
            "Cannot specify service and state"
        );
        assert_eq!(
            err(json!({"type": "nodes", "key": "x"})),
            "Invalid parameters: [key]"
        );
        assert_eq!(
            err(json!({"type": "nodes", "handler_type": "http"})),
            "Handler type 'http' requires 'http_handler_config' to be set"
        );
        assert_eq!(
            err(json!({"type": "service", "service": "a", "passingonly": "yes"})),
            "Expecting passingonly to be a boolean"
        );
        let ok = parse(params(json!({"type": "nodes", "args": ["x"]})), &["args"]).unwrap();
        assert_eq!(ok.exempt["args"], json!(["x"]));
    }
}
