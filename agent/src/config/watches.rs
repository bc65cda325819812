//! The `watches` key: each entry checked as Consul's agent checks it when it starts its
//! watch plans (`handler_type`, no `connect_*` types, the type's parameters, exactly one
//! handler), with Consul's messages after the file, the key and the entry's position.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::watch::{types, HandlerDef, HttpHandlerConfig, WatchDef};
use crate::{Error, Result};

/// Consul's `watch.DefaultTimeout` for an HTTP handler.
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses a file's `watches` value (a list of objects, or one object) into `out`.
pub(super) fn apply_watches(
    out: &mut Vec<WatchDef>,
    v: &Value,
    file: &str,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let items: Vec<&Value> = match v {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![v],
        _ => {
            return Err(Error::Config(format!(
                "config file {file}: key \"watches\": expected a list of objects"
            )))
        }
    };
    for (i, item) in items.into_iter().enumerate() {
        let at = |why: String| {
            Error::Config(format!(
                "config file {file}: key \"watches\": watches[{i}]: {why}"
            ))
        };
        let Value::Object(params) = item else {
            return Err(at("expected an object".into()));
        };
        let (def, warning) = parse_entry(params.clone()).map_err(at)?;
        if let Some(w) = warning {
            warnings.push(format!("config file {file}: watches[{i}]: {w}"));
        }
        out.push(def);
    }
    Ok(())
}

/// Watch plans read the agent's HTTP API, so it must be on (Consul: "watch plans require an
/// HTTP or HTTPS endpoint"; Muster's plans use the plain HTTP listener).
pub(super) fn check_endpoint(cfg: &super::Config) -> Result<()> {
    if !cfg.watches.is_empty() && cfg.http_port < 0 {
        return Err(Error::Config(
            "watch plans require an HTTP endpoint (ports.http is disabled)".into(),
        ));
    }
    Ok(())
}

/// One entry, as Consul's `reloadWatches` and `makeWatchPlan` check it; the second value is
/// the deprecation warning for `handler`.
fn parse_entry(mut params: Map<String, Value>) -> Result<(WatchDef, Option<String>), String> {
    match params.get("handler_type") {
        None => {
            params.insert("handler_type".into(), Value::String("script".into()));
        }
        Some(Value::String(t)) if t == "script" || t == "http" => {}
        Some(other) => {
            let shown = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_string);
            return Err(format!("Handler type '{shown}' not recognized"));
        }
    }
    if let Some(t) = params.get("type").and_then(Value::as_str) {
        if t.starts_with("connect_") {
            return Err(format!("Watch type {t} is not allowed in agent config"));
        }
    }
    let spec = types::parse(params, &["handler", "args"])
        .map_err(|e| format!("Failed to parse watch: {e}"))?;
    let handler = spec.exempt.get("handler");
    let args = spec.exempt.get("args");
    let http = spec.handler_type == "http";
    let mut warning = None;
    if handler.is_some() {
        warning = Some(
            "The 'handler' field in watches has been deprecated and replaced with the 'args' \
             field. See https://www.consul.io/docs/agent/watches.html"
                .to_string(),
        );
    }
    let handler = match handler {
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("Watch handler must be a string".into()),
        None => None,
    };
    let args = args.map(parse_args).transpose()?;
    if (handler.is_some() && args.is_some()) || (http && (handler.is_some() || args.is_some())) {
        return Err("Only one watch handler allowed".into());
    }
    let def = match (handler, args) {
        _ if http => HandlerDef::Http(parse_http_config(
            spec.exempt
                .get("http_handler_config")
                .unwrap_or(&Value::Null),
        )?),
        (Some(line), _) => HandlerDef::Shell(line),
        (_, Some(args)) => HandlerDef::Args(args),
        (None, None) => return Err("Must define a watch handler".into()),
    };
    Ok((WatchDef { spec, handler: def }, warning))
}

/// `args`: a string or a list of strings (Consul's `parseWatchArgs`).
fn parse_args(v: &Value) -> Result<Vec<String>, String> {
    let bad = || "Watch args must be a list of strings".to_string();
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|a| a.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

/// `http_handler_config`, decoded as Consul decodes it (weakly: a header value may be one
/// string, `tls_skip_verify` the string `"true"`), with its defaults.
fn parse_http_config(v: &Value) -> Result<HttpHandlerConfig, String> {
    let fail = |why: &str| format!("Failed to parse 'http_handler_config': {why}");
    let Value::Object(m) = v else {
        return Err(fail("expected a map"));
    };
    let string = |key: &str| -> Result<String, String> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(fail(&format!("'{key}' expected a string"))),
        }
    };
    let path = string("path")?;
    if path.is_empty() {
        return Err(fail("Requires 'path' to be set"));
    }
    let mut method = string("method")?;
    if method.is_empty() {
        method = "POST".into();
    }
    let timeout = match string("timeout")?.as_str() {
        "" => DEFAULT_HTTP_TIMEOUT,
        raw => muster_api::go_duration(raw).ok_or_else(|| {
            fail(&format!(
                "Failed to parse timeout: invalid duration {raw:?}"
            ))
        })?,
    };
    let mut header = BTreeMap::new();
    match m.get("header") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (name, values) in h {
                let values = match values {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) => items
                        .iter()
                        .map(|x| x.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| fail(&format!("header {name:?}: expected strings")))?,
                    _ => return Err(fail(&format!("header {name:?}: expected strings"))),
                };
                header.insert(name.clone(), values);
            }
        }
        Some(_) => return Err(fail("'header' expected a map")),
    }
    let tls_skip_verify = match m.get("tls_skip_verify") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| fail("'tls_skip_verify' expected a boolean"))?,
        Some(_) => return Err(fail("'tls_skip_verify' expected a boolean")),
    };
    Ok(HttpHandlerConfig {
        path,
        method,
        header,
        timeout,
        tls_skip_verify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(v: Value) -> Result<Vec<WatchDef>> {
        let mut out = Vec::new();
        apply_watches(&mut out, &v, "w.json", &mut Vec::new())?;
        Ok(out)
    }

    fn err(v: Value) -> String {
        apply(v).unwrap_err().to_string()
    }

    #[test]
    fn reads_script_and_http_handlers() {
        let w = apply(json!([
            {"type": "keyprefix", "prefix": "app/", "args": ["/bin/true", "x"]},
            {"type": "nodes", "handler": "echo hi"},
            {"type": "service", "service": "web", "handler_type": "http",
             "http_handler_config": {"path": "http://127.0.0.1:1/x", "header": {"A": "b"},
                                     "timeout": "2s"}}
        ]))
        .unwrap();
        assert_eq!(
            w[0].handler,
            HandlerDef::Args(vec!["/bin/true".into(), "x".into()])
        );
        assert_eq!(w[1].handler, HandlerDef::Shell("echo hi".into()));
        let HandlerDef::Http(h) = &w[2].handler else {
            panic!("{:?}", w[2].handler)
        };
        assert_eq!(h.method, "POST");
        assert_eq!(h.timeout, Duration::from_secs(2));
        assert_eq!(h.header["A"], vec!["b".to_string()]);
    }

    #[test]
    fn refuses_bad_entries_naming_the_file_key_and_entry() {
        assert_eq!(
            err(json!([{"type": "key", "key": "a", "args": ["x"]}, {"type": "nodes"}])),
            "config file w.json: key \"watches\": watches[1]: Must define a watch handler"
        );
        assert!(err(json!([{"type": "key", "args": ["x"]}]))
            .ends_with("watches[0]: Failed to parse watch: Must specify a single key to watch"));
        assert!(
            err(json!([{"type": "nodes", "handler_type": "exec", "args": ["x"]}]))
                .ends_with("Handler type 'exec' not recognized")
        );
        assert!(err(json!([{"type": "connect_roots", "args": ["x"]}]))
            .ends_with("Watch type connect_roots is not allowed in agent config"));
        assert!(
            err(json!([{"type": "nodes", "args": ["x"], "handler": "y"}]))
                .ends_with("Only one watch handler allowed")
        );
        assert!(err(json!([{"type": "nodes", "args": [1]}]))
            .ends_with("Watch args must be a list of strings"));
        assert!(err(json!([{"type": "nodes", "handler_type": "http",
                            "http_handler_config": {"method": "PUT"}}]))
        .ends_with("Failed to parse 'http_handler_config': Requires 'path' to be set"));
    }
}
