//! Service and check definitions as Consul writes them: snake_case in config files,
//! PascalCase over HTTP, and whatever Consul's decoders also take (`serviceid`, `null` for an
//! absent field, durations as numbers of nanoseconds; see `fields`). Both are read by one
//! parser, so the same mistakes give the same errors. Consul's Connect-only service fields
//! (`kind`, `proxy`, `connect`) and its `tagged_addresses` and `socket_path` are kept with the
//! service and returned; fields Consul knows but Muster does not implement load with a
//! warning; anything else is refused with the field named.

mod fields;

use std::time::Duration;

use muster_checks::{CheckSpec, Probe};
use muster_server::model::{HealthStatus, Service};
use serde_json::Value;

use crate::{Error, Result};
use fields::{
    check_keys, drop_nulls, duration, normalize, object, string, string_map, strings, uint,
    CHECK_KEYS, CHECK_UNSUPPORTED, SERVICE_KEYS, SERVICE_UNSUPPORTED,
};

/// A parsed check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckDef {
    pub id: String,
    pub name: String,
    pub notes: String,
    pub service_id: String,
    pub status: HealthStatus,
    /// `None` for a check without a probe of its own (never happens after parsing).
    pub spec: CheckSpec,
    pub deregister_after: Option<Duration>,
    pub is_script: bool,
}

/// A parsed service with its checks.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDef {
    pub service: Service,
    pub checks: Vec<CheckDef>,
}

/// Parsing context: where the definition came from (for messages) and collected warnings.
pub struct Ctx<'a> {
    pub origin: &'a str,
    pub warnings: Vec<String>,
    /// Word errors as Consul's HTTP API does (`Missing service name`, `Request decode failed:
    /// json: unknown field "X"`), for the clients and scripts that match on them; otherwise an
    /// error names the origin and the field.
    pub consul_errors: bool,
}

impl Ctx<'_> {
    fn err(&self, field: &str, why: &str) -> Error {
        Error::Definition(format!("{}: field {field:?}: {why}", self.origin))
    }

    /// An error about the definition as a whole: `why` after the origin, or `consul`.
    fn fail(&self, why: &str, consul: &str) -> Error {
        Error::Definition(if self.consul_errors {
            consul.to_string()
        } else {
            format!("{}: {why}", self.origin)
        })
    }

    /// An error about one field: as [`Ctx::err`] words it, or `consul`.
    fn field_err(&self, field: &str, why: &str, consul: impl FnOnce() -> String) -> Error {
        if self.consul_errors {
            Error::Definition(consul())
        } else {
            self.err(field, why)
        }
    }
}

/// Consul's text for a check that is not one of its kinds.
const INVALID_CHECK_KIND: &str = "Invalid check: TTL must be > 0 for TTL checks";
/// Consul's text for a script, HTTP or TCP check without an interval.
const INVALID_CHECK_INTERVAL: &str =
    "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks";

/// Parses one check. `service` is set for checks embedded in a service definition;
/// `index` numbers multiple embedded checks as Consul does (`service:<id>:<n>`).
pub fn parse_check(
    ctx: &mut Ctx,
    v: &Value,
    service: Option<(&str, &str)>,
    index: Option<usize>,
) -> Result<CheckDef> {
    if !v.is_object() {
        return Err(Error::Definition(format!(
            "{}: a check must be an object",
            ctx.origin
        )));
    }
    let mut m = normalize(v, &[CHECK_KEYS, CHECK_UNSUPPORTED]);
    check_keys(ctx, &m, CHECK_KEYS, CHECK_UNSUPPORTED, "check")?;
    drop_nulls(&mut m);
    let mut args = strings(ctx, &m, "args")?;
    if args.is_empty() {
        args = strings(ctx, &m, "script_args")?;
    }
    let http = string(ctx, &m, "http")?.filter(|s| !s.is_empty());
    let tcp = string(ctx, &m, "tcp")?.filter(|s| !s.is_empty());
    let ttl = duration(ctx, &m, "ttl")?;
    let interval = duration(ctx, &m, "interval")?;
    let timeout = duration(ctx, &m, "timeout")?;
    let kinds = [
        !args.is_empty(),
        http.is_some(),
        tcp.is_some(),
        ttl.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if kinds != 1 {
        let why = "a check needs exactly one of args, http, tcp or ttl";
        let consul = if kinds == 0 {
            INVALID_CHECK_KIND.to_string()
        } else {
            format!("Invalid check: {why}")
        };
        return Err(ctx.fail(why, &consul));
    }
    let probe = if !args.is_empty() {
        Probe::Script { args }
    } else if let Some(url) = http {
        let mut headers = Vec::new();
        if let Some(h) = m.get("header") {
            let Value::Object(h) = h else {
                return Err(ctx.err("header", "expected an object of lists"));
            };
            for (k, vals) in h.iter().filter(|(_, v)| !v.is_null()) {
                let Value::Array(vals) = vals else {
                    return Err(ctx.err("header", "expected an object of lists"));
                };
                for v in vals {
                    headers.push((
                        k.clone(),
                        v.as_str()
                            .ok_or_else(|| ctx.err("header", "values must be strings"))?
                            .to_string(),
                    ));
                }
            }
        }
        Probe::Http {
            url,
            method: string(ctx, &m, "method")?.unwrap_or_else(|| "GET".into()),
            headers,
        }
    } else if let Some(addr) = tcp {
        Probe::Tcp { addr }
    } else {
        Probe::Ttl {
            ttl: ttl.unwrap_or_default(),
        }
    };
    let is_ttl = matches!(probe, Probe::Ttl { .. });
    let interval = match (interval, is_ttl) {
        // As Consul: an interval check must have one; "0s" would probe without pause.
        (Some(i), false) if i.is_zero() => {
            return Err(ctx.field_err(
                "interval",
                "must be > 0 for script, http and tcp checks (the minimum is 1s)",
                || INVALID_CHECK_INTERVAL.to_string(),
            ))
        }
        (Some(i), false) if i < Duration::from_secs(1) => {
            // As Consul: clamp to the minimum instead of refusing.
            ctx.warnings.push(format!(
                "{}: check interval {i:?} is below the minimum of 1s; using 1s",
                ctx.origin
            ));
            Duration::from_secs(1)
        }
        (Some(i), _) => i,
        (None, true) => Duration::ZERO,
        (None, false) => {
            return Err(ctx.field_err(
                "interval",
                "required for script, http and tcp checks",
                || INVALID_CHECK_INTERVAL.to_string(),
            ))
        }
    };
    let service_id = match service {
        Some((sid, _)) => sid.to_string(),
        None => string(ctx, &m, "service_id")?.unwrap_or_default(),
    };
    let name_given = string(ctx, &m, "name")?.filter(|s| !s.is_empty());
    let id = string(ctx, &m, "id")?
        .or(string(ctx, &m, "check_id")?)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            service.map(|(sid, _)| match index {
                Some(n) => format!("service:{sid}:{n}"),
                None => format!("service:{sid}"),
            })
        })
        .or_else(|| name_given.clone())
        .ok_or_else(|| ctx.fail("a check needs an id or a name", "Missing check name"))?;
    let name = name_given.unwrap_or_else(|| match service {
        Some((_, sname)) => format!("Service '{sname}' check"),
        None => id.clone(),
    });
    let status = match string(ctx, &m, "status")?.as_deref() {
        None | Some("") => HealthStatus::Critical,
        Some(s) => HealthStatus::parse(s).ok_or_else(|| {
            ctx.field_err("status", &format!("invalid status {s:?}"), || {
                match service {
                    Some(_) => "Status for checks must 'passing', 'warning', 'critical'",
                    None => "Bad check status",
                }
                .to_string()
            })
        })?,
    };
    let count = |k: &str| uint(ctx, &m, k).map(|v| v.unwrap_or(0) as u32);
    let failures_before_critical = count("failures_before_critical")?;
    let failures_before_warning = match uint(ctx, &m, "failures_before_warning")? {
        Some(v) => v as u32,
        None => failures_before_critical,
    };
    let is_script = matches!(probe, Probe::Script { .. });
    Ok(CheckDef {
        spec: CheckSpec {
            id: id.clone(),
            probe,
            interval,
            timeout: timeout.unwrap_or(if is_script {
                Duration::from_secs(30)
            } else {
                Duration::from_secs(10)
            }),
            success_before_passing: count("success_before_passing")?,
            failures_before_warning,
            failures_before_critical,
        },
        id,
        name,
        notes: string(ctx, &m, "notes")?.unwrap_or_default(),
        service_id,
        status,
        deregister_after: duration(ctx, &m, "deregister_critical_service_after")?,
        is_script,
    })
}

/// Parses one service definition with its checks.
pub fn parse_service(ctx: &mut Ctx, v: &Value) -> Result<ServiceDef> {
    if !v.is_object() {
        return Err(Error::Definition(format!(
            "{}: a service must be an object",
            ctx.origin
        )));
    }
    let mut m = normalize(v, &[SERVICE_KEYS, SERVICE_UNSUPPORTED]);
    check_keys(ctx, &m, SERVICE_KEYS, SERVICE_UNSUPPORTED, "service")?;
    drop_nulls(&mut m);
    let name = string(ctx, &m, "name")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ctx.field_err("name", "required", || "Missing service name".into()))?;
    let id = string(ctx, &m, "id")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| name.clone());
    let port = match uint(ctx, &m, "port")? {
        Some(p) if p > 65535 => return Err(ctx.err("port", "must be at most 65535")),
        p => p.unwrap_or(0) as u16,
    };
    let (mut wp, mut ww) = (1, 1);
    if let Some(w) = m.get("weights") {
        let Value::Object(w) = w else {
            return Err(ctx.err("weights", "expected an object"));
        };
        for (k, v) in w {
            let n = v
                .as_u64()
                .ok_or_else(|| ctx.err("weights", "values must be numbers"))?
                as u32;
            match k.as_str() {
                "passing" => wp = n,
                "warning" => ww = n,
                other => return Err(ctx.err("weights", &format!("unknown key {other:?}"))),
            }
        }
    }
    let enable_tag_override = match m.get("enable_tag_override") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ctx.err("enable_tag_override", "expected a boolean")),
    };
    let mut meta = string_map(ctx, &m, "meta")?;
    let address = string(ctx, &m, "address")?.unwrap_or_default();
    let tagged = derived_addresses(object(ctx, &m, "tagged_addresses")?, &address, port);
    let kept = [
        ("Kind", string(ctx, &m, "kind")?.map(Value::String)),
        ("Proxy", object(ctx, &m, "proxy")?),
        ("Connect", object(ctx, &m, "connect")?),
        ("TaggedAddresses", tagged),
        (
            "SocketPath",
            string(ctx, &m, "socket_path")?.map(Value::String),
        ),
        ("Locality", object(ctx, &m, "locality")?),
    ];
    muster_api::keep_service_extra(&mut meta, kept).map_err(|e| ctx.err("meta", &e))?;
    let service = Service {
        id: id.clone(),
        name: name.clone(),
        tags: strings(ctx, &m, "tags")?,
        address,
        port,
        meta,
        weight_passing: wp,
        weight_warning: ww,
        enable_tag_override,
        ..Default::default()
    };
    let mut checks = Vec::new();
    let mut raw: Vec<&Value> = Vec::new();
    // As Consul: a `check` with every field at its zero value is no check at all.
    if let Some(c) = m.get("check").filter(|c| !is_zero(c)) {
        raw.push(c);
    }
    if let Some(cs) = m.get("checks") {
        let Value::Array(cs) = cs else {
            return Err(ctx.err("checks", "expected a list"));
        };
        raw.extend(cs.iter().filter(|c| !c.is_null()));
    }
    let numbered = raw.len() > 1;
    for (i, c) in raw.into_iter().enumerate() {
        checks.push(parse_check(
            ctx,
            c,
            Some((&id, &name)),
            numbered.then_some(i + 1),
        )?);
    }
    Ok(ServiceDef { service, checks })
}

/// A JSON value Go decodes to its type's zero value: `null`, `false`, `0`, `""`, an empty
/// list, or an object of such values.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// Why a script check is refused: scripts are off unless `setting` enables them.
pub(crate) fn script_refusal(setting: &str) -> String {
    format!("Scripts are disabled on this agent; to enable, configure '{setting}' to true")
}

#[cfg(test)]
mod tests;

/// A service's tagged addresses with the ones Consul's agent adds for an IP address:
/// `lan_ipv4` and `wan_ipv4` (or `_ipv6`), each the service's address and port, unless given.
fn derived_addresses(given: Option<Value>, address: &str, port: u16) -> Option<Value> {
    let family = match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => "ipv4",
        Ok(std::net::IpAddr::V6(_)) => "ipv6",
        Err(_) => return given,
    };
    let mut tagged = match given {
        Some(Value::Object(t)) => t,
        _ => serde_json::Map::new(),
    };
    for tag in ["lan", "wan"] {
        tagged
            .entry(format!("{tag}_{family}"))
            .or_insert_with(|| serde_json::json!({"Address": address, "Port": port}));
    }
    Some(Value::Object(tagged))
}
