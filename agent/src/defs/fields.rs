//! The field names of Consul's service and check definitions, and reading their values as
//! Consul's decoders do: a name matches in any case and with or without underscores
//! (`ServiceID`, `serviceid`, `service_id`), `null` is the same as absent, and a duration is
//! a Go duration string or a number of nanoseconds.

use std::collections::BTreeMap;
use std::time::Duration;

use muster_api::json_duration;
use serde_json::{Map, Value};

use super::Ctx;
use crate::{Error, Result};

/// Every field of Consul 1.10's check definition (`CheckDefinition` over HTTP, `CheckType`
/// inside a service), with the aliases its decoder takes, as snake_case.
pub(super) const CHECK_KEYS: &[&str] = &[
    "id",
    "check_id",
    "name",
    "args",
    "script_args",
    "interval",
    "timeout",
    "ttl",
    "http",
    "method",
    "header",
    "tcp",
    "notes",
    "service_id",
    "status",
    "success_before_passing",
    "failures_before_critical",
    "failures_before_warning",
    "deregister_critical_service_after",
    "output",
];
/// Check fields Consul has and Muster does not implement yet: accepted with a warning.
pub(super) const CHECK_UNSUPPORTED: &[&str] = &[
    "docker_container_id",
    "shell",
    "grpc",
    "grpc_use_tls",
    "h2ping",
    "h2ping_use_tls",
    "alias_node",
    "alias_service",
    "os_service",
    "udp",
    "body",
    "disable_redirects",
    "output_max_size",
    "tls_server_name",
    "tls_skip_verify",
    "token",
    "namespace",
    "partition",
    "tcp_use_tls",
    "definition",
    "type",
];

/// Every field of Consul 1.10's service definition that Muster reads, as snake_case. `kind`,
/// `proxy`, `connect`, `tagged_addresses` and `socket_path` are kept and returned as given.
pub(super) const SERVICE_KEYS: &[&str] = &[
    "id",
    "name",
    "tags",
    "address",
    "port",
    "meta",
    "weights",
    "enable_tag_override",
    "check",
    "checks",
    "kind",
    "proxy",
    "connect",
    "tagged_addresses",
    "socket_path",
    "locality",
];
/// Service fields Consul has and Muster does not implement yet: accepted with a warning.
pub(super) const SERVICE_UNSUPPORTED: &[&str] = &[
    "token",
    "namespace",
    "partition",
    "enable_tag_override_legacy",
];

/// Fields whose values are kept as sent: user maps, and what is parsed or stored apart.
const RAW: &[&str] = &[
    "meta",
    "header",
    "proxy",
    "connect",
    "tagged_addresses",
    "locality",
    "check",
    "checks",
];

/// Consul's field names, PascalCase or snake_case, as snake_case (`ServiceID` → `service_id`,
/// `TLSSkipVerify` → `tls_skip_verify`).
pub(super) fn snake(key: &str) -> String {
    let c: Vec<char> = key.chars().collect();
    let mut out = String::with_capacity(key.len() + 4);
    for (i, ch) in c.iter().enumerate() {
        if ch.is_uppercase() && i > 0 {
            let prev = c[i - 1];
            let next_lower = c.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.extend(ch.to_lowercase());
    }
    out
}

/// A field name without case or underscores: how Go's decoder matches `serviceid` to
/// `ServiceID`, and Consul's aliases match `service_id`.
fn folded(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Re-keys a definition to the snake_case names in `known` (a key that matches none stays as
/// sent, so an error names it as the client wrote it). Values of [`RAW`] fields stay as sent; other nested
/// objects (`weights`) are re-keyed to snake_case without their `null`s. `null` values are kept
/// here, so an unknown field is refused whatever its value; [`drop_nulls`] removes them after.
pub(super) fn normalize(v: &Value, known: &[&[&str]]) -> Map<String, Value> {
    let mut out = Map::new();
    let Value::Object(m) = v else {
        return out;
    };
    for (k, v) in m {
        let f = folded(k);
        let key = known
            .iter()
            .flat_map(|names| names.iter())
            .find(|n| folded(n) == f)
            .map_or_else(|| k.clone(), |n| n.to_string());
        let v = match v {
            Value::Object(inner) if !RAW.contains(&key.as_str()) => Value::Object(
                inner
                    .iter()
                    .filter(|(_, x)| !x.is_null())
                    .map(|(k, x)| (snake(k), x.clone()))
                    .collect(),
            ),
            v => v.clone(),
        };
        out.insert(key, v);
    }
    out
}

/// Removes the fields given as `null`: for Consul, the same as leaving them out.
pub(super) fn drop_nulls(m: &mut Map<String, Value>) {
    m.retain(|_, v| !v.is_null());
}

/// A field's name in Consul's Go structures (`service_id` → `ServiceID`), for its errors.
fn go_name(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| match w {
            "id" | "ttl" | "http" | "tcp" | "udp" | "tls" | "grpc" => w.to_ascii_uppercase(),
            w => {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            }
        })
        .collect()
}

/// A field of the wrong JSON type: `expected`, or Go's decode error naming the field's
/// `go_type`.
fn wrong_type(ctx: &Ctx, k: &str, v: &Value, expected: &str, go_type: &str) -> Error {
    ctx.field_err(k, expected, || {
        let got = match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        format!(
            "Request decode failed: json: cannot unmarshal {got} into Go struct field .{} of \
             type {go_type}",
            go_name(k)
        )
    })
}

pub(super) fn string(ctx: &Ctx, m: &Map<String, Value>, k: &str) -> Result<Option<String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(wrong_type(ctx, k, v, "expected a string", "string")),
    }
}

/// A duration field: a Go duration string (`"10s"`) or a number of nanoseconds; `""` is
/// absent.
pub(super) fn duration(ctx: &Ctx, m: &Map<String, Value>, k: &str) -> Result<Option<Duration>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(v @ (Value::String(_) | Value::Number(_))) => {
            json_duration(v).map(Some).ok_or_else(|| {
                ctx.field_err(
                    k,
                    &format!(
                        "invalid duration {v} (e.g. \"10s\", \"5m\", or a number of \
                         nanoseconds; at most 2562047h)"
                    ),
                    || format!("Request decode failed: time: invalid duration {v}"),
                )
            })
        }
        Some(v) => Err(wrong_type(
            ctx,
            k,
            v,
            "expected a duration (a string such as \"10s\" or a number of nanoseconds)",
            "time.Duration",
        )),
    }
}

pub(super) fn uint(ctx: &Ctx, m: &Map<String, Value>, k: &str) -> Result<Option<u64>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong_type(ctx, k, v, "expected a non-negative number", "int")),
    }
}

pub(super) fn strings(ctx: &Ctx, m: &Map<String, Value>, k: &str) -> Result<Vec<String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| wrong_type(ctx, k, x, "expected a list of strings", "string"))
            })
            .collect(),
        Some(v) => Err(wrong_type(
            ctx,
            k,
            v,
            "expected a list of strings",
            "[]string",
        )),
    }
}

pub(super) fn string_map(
    ctx: &Ctx,
    m: &Map<String, Value>,
    k: &str,
) -> Result<BTreeMap<String, String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(o)) => o
            .iter()
            .filter(|(_, b)| !b.is_null())
            .map(|(a, b)| {
                b.as_str()
                    .map(|s| (a.clone(), s.to_string()))
                    .ok_or_else(|| wrong_type(ctx, k, b, "values must be strings", "string"))
            })
            .collect(),
        Some(v) => Err(wrong_type(
            ctx,
            k,
            v,
            "expected an object",
            "map[string]string",
        )),
    }
}

/// An object field kept as sent (`proxy`, `connect`, `tagged_addresses`).
pub(super) fn object(ctx: &Ctx, m: &Map<String, Value>, k: &str) -> Result<Option<Value>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(v) => Err(wrong_type(ctx, k, v, "expected an object", "object")),
    }
}

/// Refuses a field that is neither in `known` nor in `unsupported`; warns about those in
/// `unsupported` that are given a value, which load but do nothing.
pub(super) fn check_keys(
    ctx: &mut Ctx,
    m: &Map<String, Value>,
    known: &[&str],
    unsupported: &[&str],
    what: &str,
) -> Result<()> {
    let mut ignored = Vec::new();
    for (k, v) in m {
        if known.contains(&k.as_str()) {
            continue;
        }
        if unsupported.contains(&k.as_str()) {
            if !v.is_null() {
                ignored.push(k.clone());
            }
            continue;
        }
        return Err(Error::Definition(if ctx.consul_errors {
            format!("Request decode failed: json: unknown field {k:?}")
        } else {
            format!("{}: unknown {what} field {k:?}", ctx.origin)
        }));
    }
    if !ignored.is_empty() {
        ctx.warnings.push(format!(
            "{}: ignoring {what} fields Muster does not support yet: {}",
            ctx.origin,
            ignored.join(", ")
        ));
    }
    Ok(())
}
