//! The nested blocks of a config file: `ports`, `limits`, `performance` and `dns_config`.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::file::{as_str, as_u64};
use super::Config;
use crate::{Error, Result};

const UNSUPPORTED_PORTS: &[&str] = &[
    "grpc",
    "grpc_tls",
    "serf_wan",
    "sidecar_min_port",
    "sidecar_max_port",
    "expose_min_port",
    "expose_max_port",
];

pub(super) fn apply_ports(
    cfg: &mut Config,
    v: &Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<()> {
    let ports = block(v, name, "ports")?;
    for (k, v) in ports {
        let port = || -> Result<i32> {
            match v.as_i64() {
                Some(n) if (-1..=65535).contains(&n) => Ok(n as i32),
                _ => Err(key_error(
                    name,
                    &format!("ports.{k}"),
                    "expected -1 or a port number",
                )),
            }
        };
        match k.as_str() {
            "http" => cfg.http_port = port()?,
            "dns" => cfg.dns_port = port()?,
            "server" => cfg.server_port = port()?,
            "serf_lan" => cfg.serf_lan_port = port()?,
            "https" => cfg.tls.https_port = port()?,
            k if UNSUPPORTED_PORTS.contains(&k) => ignored.push(format!("ports.{k}")),
            _ => return Err(unknown_key(name, &format!("ports.{k}"))),
        }
    }
    Ok(())
}

/// Consul's `limits` block: the HTTP connection limits are honoured; the RPC and rate limits
/// are not ours yet and are warned about.
pub(super) fn apply_limits(
    cfg: &mut Config,
    v: &Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<()> {
    let m = block(v, name, "limits")?;
    let err = |k: &str, why: &str| key_error(name, &format!("limits.{k}"), why);
    // A connection deadline: a duration between 1ns and 1h.
    let timeout = |k: &str, v: &Value| {
        let d = v
            .as_str()
            .and_then(muster_api::go_duration)
            .ok_or_else(|| err(k, "expected a duration such as \"30s\""))?;
        if d.is_zero() || d > std::time::Duration::from_secs(3600) {
            return Err(err(k, "must be between 1ns and 1h"));
        }
        Ok(d)
    };
    for (k, v) in m {
        match k.as_str() {
            "http_max_conns_per_client" => {
                cfg.http_limits.max_conns_per_client = as_u64(v)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| err(k, "expected a non-negative number (0: no limit)"))?
            }
            "http_read_header_timeout" => cfg.http_limits.read_header_timeout = timeout(k, v)?,
            "https_handshake_timeout" => cfg.http_limits.https_handshake_timeout = timeout(k, v)?,
            "rpc_handshake_timeout"
            | "rpc_client_timeout"
            | "rpc_max_conns_per_client"
            | "rpc_rate"
            | "rpc_max_burst"
            | "kv_max_value_size"
            | "txn_max_req_len"
            | "request_limits" => ignored.push(format!("limits.{k}")),
            _ => return Err(unknown_key(name, &format!("limits.{k}"))),
        }
    }
    Ok(())
}

/// `performance { rpc_hold_timeout }`; Consul's other tuning knobs are warned about.
pub(super) fn apply_performance(
    cfg: &mut Config,
    v: &Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<()> {
    let perf = block(v, name, "performance")?;
    for (k, v) in perf {
        match k.as_str() {
            "rpc_hold_timeout" => {
                let key = "performance.rpc_hold_timeout";
                let d = as_str(v).and_then(muster_api::go_duration).ok_or_else(|| {
                    key_error(name, key, "expected a duration string such as \"7s\"")
                })?;
                if d.is_zero() || d > std::time::Duration::from_secs(600) {
                    return Err(key_error(
                        name,
                        key,
                        &format!("must be between 1ms and 10m, not {d:?}"),
                    ));
                }
                cfg.rpc_hold_timeout = d;
            }
            "raft_multiplier" | "leave_drain_time" => ignored.push(format!("performance.{k}")),
            _ => return Err(unknown_key(name, &format!("performance.{k}"))),
        }
    }
    Ok(())
}

/// Consul's internal tuning block `consul`: `coordinate.update_period` is honoured, the rest
/// (Raft and server timings Muster sets its own way) is ignored with the warning.
pub(super) fn apply_consul(
    cfg: &mut Config,
    v: &Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<()> {
    for (k, v) in block(v, name, "consul")? {
        if k != "coordinate" {
            ignored.push(format!("consul.{k}"));
            continue;
        }
        for (k, v) in block(v, name, "consul.coordinate")? {
            let key = format!("consul.coordinate.{k}");
            match k.as_str() {
                "update_period" => {
                    cfg.coordinate_update_period = as_str(v)
                        .and_then(muster_api::go_duration)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| key_error(name, &key, "expected a duration string"))?
                }
                "update_batch_size" | "update_max_batches" => ignored.push(key),
                _ => return Err(unknown_key(name, &key)),
            }
        }
    }
    Ok(())
}

/// `1.1.1.1` or `1.1.1.1:5353` (Consul's default port for recursors is 53).
pub(super) fn parse_recursor(s: &str) -> Option<std::net::SocketAddr> {
    s.parse().ok().or_else(|| {
        s.parse::<IpAddr>()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, 53))
    })
}

pub(super) fn apply_dns(
    cfg: &mut Config,
    v: &Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<()> {
    let m = block(v, name, "dns_config")?;
    let err = |k: &str, why: &str| key_error(name, &format!("dns_config.{k}"), why);
    let dur = |k: &str, v: &Value| -> Result<std::time::Duration> {
        v.as_str()
            .and_then(muster_api::go_duration)
            .ok_or_else(|| err(k, "expected a duration such as \"5s\""))
    };
    let secs = |k: &str, v: &Value| dur(k, v).map(|d| d.as_secs().min(u32::MAX as u64) as u32);
    let boolean = |k: &str, v: &Value| v.as_bool().ok_or_else(|| err(k, "expected a boolean"));
    let count = |k: &str, v: &Value| {
        as_u64(v)
            .map(|n| n as usize)
            .ok_or_else(|| err(k, "expected a non-negative number"))
    };
    for (k, v) in m {
        match k.as_str() {
            "only_passing" => cfg.dns.only_passing = boolean(k, v)?,
            "node_ttl" => cfg.dns.node_ttl = secs(k, v)?,
            "recursor_timeout" => cfg.dns.recursor_timeout = dur(k, v)?,
            "service_ttl" => {
                let Value::Object(map) = v else {
                    return Err(err(k, "expected an object of durations"));
                };
                for (svc, d) in map {
                    cfg.dns.service_ttl.insert(svc.clone(), secs(k, d)?);
                }
            }
            "allow_stale" => cfg.dns.allow_stale = boolean(k, v)?,
            "max_stale" => cfg.dns.max_stale = dur(k, v)?,
            "enable_truncate" => cfg.dns.enable_truncate = boolean(k, v)?,
            "weighted_single_answer" => cfg.dns.weighted_single_answer = boolean(k, v)?,
            "udp_answer_limit" => cfg.dns.udp_answer_limit = count(k, v)?,
            "a_record_limit" => cfg.dns.a_record_limit = count(k, v)?,
            "use_cache" => cfg.dns.use_cache = boolean(k, v)?,
            "cache_max_age" => cfg.dns.cache_max_age = dur(k, v)?,
            "enable_additional_node_meta_txt"
            | "soa"
            | "prefer_namespace"
            | "disable_compression"
            | "recursor_strategy" => ignored.push(format!("dns_config.{k}")),
            _ => return Err(unknown_key(name, &format!("dns_config.{k}"))),
        }
    }
    Ok(())
}

/// A block's entries, or the error naming the file and the block.
pub(super) fn block<'a>(v: &'a Value, name: &str, key: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| key_error(name, key, "expected an object"))
}

/// An invalid value at `key` (`ports.http`, `limits.rpc_rate`) in config file `name`.
pub(super) fn key_error(name: &str, key: &str, why: &str) -> Error {
    Error::Config(format!("config file {name}: key \"{key}\": {why}"))
}

/// A key Consul does not have either.
pub(super) fn unknown_key(name: &str, key: &str) -> Error {
    Error::Config(format!("config file {name}: unknown key \"{key}\""))
}
