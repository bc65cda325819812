//! Service and check definitions as Consul writes them: snake_case in config files,
//! PascalCase over HTTP. Both are read by one parser, so the same mistakes give the same
//! errors. Fields Consul knows but Muster does not implement load with a warning; anything
//! else is refused with the field named.

use std::collections::BTreeMap;
use std::time::Duration;

use muster_api::go_duration;
use muster_checks::{CheckSpec, Probe};
use muster_server::model::{HealthStatus, Service};
use serde_json::{Map, Value};

use crate::{Error, Result};

/// Consul's field names, PascalCase or snake_case, as snake_case (`ServiceID` → `service_id`,
/// `TLSSkipVerify` → `tls_skip_verify`).
pub(crate) fn snake(key: &str) -> String {
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

/// Service fields Consul has and Muster does not implement yet.
const SERVICE_UNSUPPORTED: &[&str] = &[
    "kind",
    "proxy",
    "connect",
    "token",
    "namespace",
    "partition",
    "tagged_addresses",
    "socket_path",
    "locality",
    "enable_tag_override_legacy",
];
/// Check fields Consul has and Muster does not implement yet.
const CHECK_UNSUPPORTED: &[&str] = &[
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
}

impl Ctx<'_> {
    fn err(&self, field: &str, why: &str) -> Error {
        Error::Definition(format!("{}: field {field:?}: {why}", self.origin))
    }
}

/// Re-keys an object to snake_case, except inside user maps (meta, header).
fn normalize(v: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    if let Value::Object(m) = v {
        for (k, v) in m {
            let k = snake(k);
            let v = match (k.as_str(), v) {
                ("meta" | "header", v) => v.clone(),
                (_, Value::Object(_)) => Value::Object(normalize(v)),
                (_, Value::Array(a)) => Value::Array(
                    a.iter()
                        .map(|x| {
                            if x.is_object() {
                                Value::Object(normalize(x))
                            } else {
                                x.clone()
                            }
                        })
                        .collect(),
                ),
                (_, v) => v.clone(),
            };
            out.insert(k, v);
        }
    }
    out
}

fn string(ctx: &Ctx, m: &Map<String, Value>, k: &str) -> Result<Option<String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ctx.err(k, "expected a string")),
    }
}

fn duration(ctx: &Ctx, m: &Map<String, Value>, k: &str) -> Result<Option<Duration>> {
    match string(ctx, m, k)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => go_duration(&s).map(Some).ok_or_else(|| {
            ctx.err(
                k,
                &format!("invalid duration {s:?} (e.g. \"10s\", \"5m\"; at most 2562047h)"),
            )
        }),
    }
}

fn uint(ctx: &Ctx, m: &Map<String, Value>, k: &str) -> Result<Option<u64>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ctx.err(k, "expected a non-negative number")),
    }
}

fn strings(ctx: &Ctx, m: &Map<String, Value>, k: &str) -> Result<Vec<String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ctx.err(k, "expected a list of strings"))
            })
            .collect(),
        Some(_) => Err(ctx.err(k, "expected a list of strings")),
    }
}

fn string_map(ctx: &Ctx, m: &Map<String, Value>, k: &str) -> Result<BTreeMap<String, String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(a, b)| {
                b.as_str()
                    .map(|s| (a.clone(), s.to_string()))
                    .ok_or_else(|| ctx.err(k, "values must be strings"))
            })
            .collect(),
        Some(_) => Err(ctx.err(k, "expected an object")),
    }
}

fn check_keys(
    ctx: &mut Ctx,
    m: &Map<String, Value>,
    known: &[&str],
    unsupported: &[&str],
    what: &str,
) -> Result<()> {
    let mut ignored = Vec::new();
    for k in m.keys() {
        if known.contains(&k.as_str()) {
            continue;
        }
        if unsupported.contains(&k.as_str()) {
            ignored.push(k.clone());
            continue;
        }
        return Err(Error::Definition(format!(
            "{}: unknown {what} field {k:?}",
            ctx.origin
        )));
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

const CHECK_KEYS: &[&str] = &[
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
    let m = normalize(v);
    check_keys(ctx, &m, CHECK_KEYS, CHECK_UNSUPPORTED, "check")?;
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
        return Err(Error::Definition(format!(
            "{}: a check needs exactly one of args, http, tcp or ttl",
            ctx.origin
        )));
    }
    let probe = if !args.is_empty() {
        Probe::Script { args }
    } else if let Some(url) = http {
        let mut headers = Vec::new();
        if let Some(h) = m.get("header") {
            let Value::Object(h) = h else {
                return Err(ctx.err("header", "expected an object of lists"));
            };
            for (k, vals) in h {
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
            return Err(ctx.err(
                "interval",
                "must be > 0 for script, http and tcp checks (the minimum is 1s)",
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
            return Err(ctx.err("interval", "required for script, http and tcp checks"))
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
        .ok_or_else(|| {
            Error::Definition(format!("{}: a check needs an id or a name", ctx.origin))
        })?;
    let name = name_given.unwrap_or_else(|| match service {
        Some((_, sname)) => format!("Service '{sname}' check"),
        None => id.clone(),
    });
    let status = match string(ctx, &m, "status")?.as_deref() {
        None | Some("") => HealthStatus::Critical,
        Some(s) => HealthStatus::parse(s)
            .ok_or_else(|| ctx.err("status", &format!("invalid status {s:?}")))?,
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

const SERVICE_KEYS: &[&str] = &[
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
];

/// Parses one service definition with its checks.
pub fn parse_service(ctx: &mut Ctx, v: &Value) -> Result<ServiceDef> {
    if !v.is_object() {
        return Err(Error::Definition(format!(
            "{}: a service must be an object",
            ctx.origin
        )));
    }
    let m = normalize(v);
    check_keys(ctx, &m, SERVICE_KEYS, SERVICE_UNSUPPORTED, "service")?;
    let name = string(ctx, &m, "name")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ctx.err("name", "required"))?;
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
    let service = Service {
        id: id.clone(),
        name: name.clone(),
        tags: strings(ctx, &m, "tags")?,
        address: string(ctx, &m, "address")?.unwrap_or_default(),
        port,
        meta: string_map(ctx, &m, "meta")?,
        weight_passing: wp,
        weight_warning: ww,
        enable_tag_override,
        ..Default::default()
    };
    let mut checks = Vec::new();
    let mut raw: Vec<&Value> = Vec::new();
    if let Some(c) = m.get("check").filter(|c| !c.is_null()) {
        raw.push(c);
    }
    if let Some(cs) = m.get("checks") {
        let Value::Array(cs) = cs else {
            return Err(ctx.err("checks", "expected a list"));
        };
        raw.extend(cs.iter());
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

/// Why a script check is refused: scripts are off unless `setting` enables them.
pub(crate) fn script_refusal(setting: &str) -> String {
    format!("Scripts are disabled on this agent; to enable, configure '{setting}' to true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx {
            origin: "web.json",
            warnings: Vec::new(),
        }
    }

    #[test]
    fn snake_cases_consul_names() {
        for (a, b) in [
            ("ServiceID", "service_id"),
            ("TLSSkipVerify", "tls_skip_verify"),
            ("HTTP", "http"),
            ("TTL", "ttl"),
            (
                "DeregisterCriticalServiceAfter",
                "deregister_critical_service_after",
            ),
            ("ID", "id"),
            ("args", "args"),
            ("enable_tag_override", "enable_tag_override"),
            ("CheckID", "check_id"),
        ] {
            assert_eq!(snake(a), b);
        }
    }

    #[test]
    fn parses_both_spellings_alike() {
        let file = serde_json::json!({"id": "redis1", "name": "redis", "tags": ["master"], "port": 6379,
            "weights": {"passing": 10, "warning": 1},
            "check": {"args": ["/bin/true"], "interval": "10s", "timeout": "2s"}});
        let http = serde_json::json!({"ID": "redis1", "Name": "redis", "Tags": ["master"], "Port": 6379,
            "Weights": {"Passing": 10, "Warning": 1},
            "Check": {"Args": ["/bin/true"], "Interval": "10s", "Timeout": "2s"}});
        let a = parse_service(&mut ctx(), &file).expect("file form");
        let b = parse_service(&mut ctx(), &http).expect("http form");
        assert_eq!(a, b);
        assert_eq!(a.checks[0].id, "service:redis1");
        assert_eq!(a.checks[0].spec.timeout, Duration::from_secs(2));
        assert_eq!(a.service.weight_passing, 10);
        assert!(a.checks[0].is_script);
    }

    #[test]
    fn unknown_and_unsupported_fields() {
        let mut c = ctx();
        let v = serde_json::json!({"name": "web", "connect": {}, "kind": "typical"});
        parse_service(&mut c, &v).expect("loads");
        assert_eq!(
            c.warnings,
            ["web.json: ignoring service fields Muster does not support yet: connect, kind"]
        );
        let e = parse_service(&mut ctx(), &serde_json::json!({"name": "web", "prot": 80}))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "web.json: unknown service field \"prot\"");
        let e = parse_service(
            &mut ctx(),
            &serde_json::json!({"name": "web", "port": "80"}),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "web.json: field \"port\": expected a non-negative number"
        );
        let e = parse_service(
            &mut ctx(),
            &serde_json::json!({"name": "w", "check": {"http": "http://x", "interval": "soon"}}),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "web.json: field \"interval\": invalid duration \"soon\" (e.g. \"10s\", \"5m\"; at \
             most 2562047h)"
        );
        let check = |interval: &str| {
            let mut c = ctx();
            let v = serde_json::json!({"name": "w", "check": {"tcp": "x:1", "interval": interval}});
            parse_service(&mut c, &v).map(|d| (d.checks[0].spec.interval, c.warnings))
        };
        let e = check("1000000000000h").unwrap_err().to_string();
        assert!(e.contains("invalid duration \"1000000000000h\""), "{e}");
        let e = check("0s").unwrap_err().to_string();
        assert!(e.contains("\"interval\": must be > 0"), "{e}");
        let (i, w) = check("100ms").expect("clamped");
        assert_eq!(i, Duration::from_secs(1));
        assert!(w[0].contains("below the minimum of 1s; using 1s"), "{w:?}");
        let e = parse_service(
            &mut ctx(),
            &serde_json::json!({"name": "w", "check": {"tcp": "x:1"}}),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "web.json: field \"interval\": required for script, http and tcp checks"
        );
        let e = parse_service(&mut ctx(), &serde_json::json!({"port": 1}))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "web.json: field \"name\": required");
    }
}
