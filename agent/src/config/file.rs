//! Consul-format config files: reading JSON or HCL, and applying each top-level key.

use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;

use super::definitions::RawDefs;
use super::sections::{
    apply_consul, apply_dns, apply_limits, apply_performance, apply_ports, parse_recursor,
};
use super::Config;
use crate::{Error, Result};

/// Consul settings Muster does not have yet: accepted with one warning so existing files load.
const UNSUPPORTED: &[&str] = &[
    "advertise_addr_ipv4",
    "advertise_addr_ipv6",
    "audit",
    "auto_config",
    "auto_encrypt",
    "bind_addr_wan",
    "client_addr_wan",
    "config_entries",
    "connect",
    "disable_host_node_id",
    "disable_keyring_file",
    "discard_check_output",
    "discovery_max_stale",
    "enable_central_service_config",
    "enable_debug",
    "enable_syslog",
    "http_config",
    "leave_on_terminate",
    "license_path",
    "log_file",
    "log_rotate_bytes",
    "log_rotate_duration",
    "log_rotate_max_files",
    "node_id",
    "partition",
    "peering",
    "protocol",
    "raft_protocol",
    "rejoin_after_leave",
    "retry_interval",
    "retry_interval_wan",
    "retry_join_wan",
    "retry_max",
    "rpc",
    "segment",
    "serf_lan",
    "serf_wan",
    "session_ttl_min",
    "skip_leave_on_interrupt",
    "syslog_facility",
    "translate_wan_addrs",
    "ui",
    "ui_config",
    "ui_dir",
    "unix_sockets",
];

/// Reads a Consul config or definition file: JSON, or HCL when the name ends in `.hcl`.
pub fn read_file(path: &Path) -> Result<Value> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("config file {name}: {e}")))?;
    if path.extension().is_some_and(|x| x == "hcl") {
        let mut v: Value = hcl::from_str(&text)
            .map_err(|e| Error::Config(format!("config file {name}: invalid HCL: {e}")))?;
        gather_blocks(&mut v);
        Ok(v)
    } else {
        serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("config file {name}: invalid JSON: {e}")))
    }
}

/// HCL writes several services or checks as repeated `service { }` / `check { }` blocks,
/// which read as a list under the singular key: move such lists to the plural key.
fn gather_blocks(v: &mut Value) {
    fn plural(obj: &mut serde_json::Map<String, Value>, one: &str, many: &str) {
        if let Some(Value::Array(items)) = obj.get(one).cloned() {
            obj.remove(one);
            match obj.entry(many).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(list) => list.extend(items),
                other => *other = Value::Array(items),
            }
        }
    }
    let Value::Object(top) = v else { return };
    plural(top, "service", "services");
    plural(top, "check", "checks");
    for key in ["service", "services"] {
        match top.get_mut(key) {
            Some(Value::Object(s)) => plural(s, "check", "checks"),
            Some(Value::Array(list)) => {
                for s in list.iter_mut() {
                    if let Value::Object(s) = s {
                        plural(s, "check", "checks");
                    }
                }
            }
            _ => {}
        }
    }
}

/// Applies one config file's keys on top of `cfg`; its service and check definitions are
/// collected in `defs`, to be parsed once every file and flag is in.
pub(super) fn apply_file(
    cfg: &mut Config,
    path: &Path,
    defs: &mut RawDefs,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let name = path.display();
    let v = read_file(path)?;
    let Value::Object(obj) = v else {
        return Err(Error::Config(format!(
            "config file {name}: top level must be an object"
        )));
    };
    let mut ignored = Vec::new();
    for (k, v) in &obj {
        let err = |why: &str| Error::Config(format!("config file {name}: key {k:?}: {why}"));
        match k.as_str() {
            "server" => cfg.server = as_bool(v).ok_or_else(|| err("expected a boolean"))?,
            "bootstrap" => {
                if as_bool(v).ok_or_else(|| err("expected a boolean"))? {
                    cfg.bootstrap_expect = 1;
                }
            }
            "bootstrap_expect" => {
                cfg.bootstrap_expect = as_u64(v).ok_or_else(|| err("expected a number"))? as u32
            }
            "data_dir" => {
                cfg.data_dir = Some(as_str(v).ok_or_else(|| err("expected a string"))?.into())
            }
            "node_name" => {
                cfg.node_name = as_str(v).ok_or_else(|| err("expected a string"))?.into()
            }
            "datacenter" => {
                cfg.datacenter = as_str(v).ok_or_else(|| err("expected a string"))?.into()
            }
            "primary_datacenter" => {
                cfg.primary_datacenter =
                    Some(as_str(v).ok_or_else(|| err("expected a string"))?.into())
            }
            // What these ask for is what Muster always does (it never calls home), so there
            // is nothing to warn about.
            "disable_update_check" | "disable_anonymous_signature" => {
                as_bool(v).ok_or_else(|| err("expected a boolean"))?;
            }
            "domain" => cfg.domain = as_str(v).ok_or_else(|| err("expected a string"))?.into(),
            "alt_domain" => {
                cfg.alt_domain = Some(as_str(v).ok_or_else(|| err("expected a string"))?.into())
            }
            "bind_addr" => cfg.bind_addr = as_ip(v).ok_or_else(|| err("expected an IP address"))?,
            "advertise_addr" => {
                cfg.advertise_addr = Some(as_ip(v).ok_or_else(|| err("expected an IP address"))?)
            }
            "advertise_addr_wan" => {
                cfg.advertise_addr_wan =
                    Some(as_ip(v).ok_or_else(|| err("expected an IP address"))?)
            }
            "node_meta" => cfg.node_meta.extend(
                super::node::parse_file_meta(v)
                    .ok_or_else(|| err("expected an object of string values"))?,
            ),
            "client_addr" => {
                cfg.client_addr = as_ip(v).ok_or_else(|| err("expected an IP address"))?
            }
            "retry_join" => cfg
                .retry_join
                .extend(as_strings(v).ok_or_else(|| err("expected a list of strings"))?),
            "start_join" => cfg
                .start_join
                .extend(as_strings(v).ok_or_else(|| err("expected a list of strings"))?),
            "log_level" => {
                cfg.log_level = as_str(v).ok_or_else(|| err("expected a string"))?.into()
            }
            "log_json" => cfg.log_json = as_bool(v).ok_or_else(|| err("expected a boolean"))?,
            "pid_file" => {
                cfg.pid_file = Some(as_str(v).ok_or_else(|| err("expected a string"))?.into())
            }
            "enable_script_checks" => {
                cfg.enable_script_checks = as_bool(v).ok_or_else(|| err("expected a boolean"))?
            }
            "enable_local_script_checks" => {
                cfg.enable_local_script_checks =
                    as_bool(v).ok_or_else(|| err("expected a boolean"))?
            }
            "raft_snapshot_threshold" => {
                cfg.raft_snapshot_threshold = as_u64(v).ok_or_else(|| err("expected a number"))?
            }
            "raft_trailing_logs" => {
                cfg.raft_trailing_logs = as_u64(v).ok_or_else(|| err("expected a number"))?
            }
            "ports" => apply_ports(cfg, v, &name.to_string(), &mut ignored)?,
            "service" | "check" => {
                let list = if k == "service" {
                    &mut defs.services
                } else {
                    &mut defs.checks
                };
                list.push((name.to_string(), v.clone()));
            }
            "services" | "checks" => {
                let Value::Array(items) = v else {
                    return Err(err("expected a list"));
                };
                let list = if k == "services" {
                    &mut defs.services
                } else {
                    &mut defs.checks
                };
                list.extend(items.iter().map(|i| (name.to_string(), i.clone())));
            }
            "recursors" | "recursor" => {
                for r in as_strings(v).ok_or_else(|| err("expected a list of addresses"))? {
                    cfg.recursors.push(
                        parse_recursor(&r).ok_or_else(|| err(&format!("invalid address {r:?}")))?,
                    );
                }
            }
            "dns_config" => apply_dns(cfg, v, &name.to_string(), &mut ignored)?,
            "telemetry" => {
                super::telemetry::apply_telemetry(cfg, v, &name.to_string(), &mut ignored)?
            }
            "autopilot" => super::autopilot::apply(&mut cfg.autopilot, v, &name.to_string())?,
            "snapshot_agent" => {
                cfg.snapshot_agent = Some(super::snapshot_agent::parse(v, &name.to_string())?)
            }
            "limits" => apply_limits(cfg, v, &name.to_string(), &mut ignored)?,
            "tombstone_ttl" => {
                let s = as_str(v).ok_or_else(|| err("expected a duration string"))?;
                cfg.tombstone_ttl =
                    muster_api::go_duration(s).ok_or_else(|| err("invalid duration"))?;
            }
            "performance" => apply_performance(cfg, v, &name.to_string(), &mut ignored)?,
            "check_update_interval" => {
                let s = as_str(v).ok_or_else(|| err("expected a duration string"))?;
                cfg.check_update_interval =
                    muster_api::go_duration(s).ok_or_else(|| err("invalid duration"))?;
            }
            "sync_coordinate_interval_min" => {
                let s = as_str(v).ok_or_else(|| err("expected a duration string"))?;
                cfg.sync_coordinate_interval_min =
                    muster_api::go_duration(s).ok_or_else(|| err("invalid duration"))?;
            }
            "sync_coordinate_rate_target" => {
                cfg.sync_coordinate_rate_target = v
                    .as_f64()
                    .filter(|r| *r > 0.0)
                    .ok_or_else(|| err("expected a positive number"))?
            }
            "encrypt" => {
                cfg.encrypt = Some(as_str(v).ok_or_else(|| err("expected a string"))?.into())
            }
            "encrypt_verify_incoming" => {
                cfg.encrypt_verify_incoming = as_bool(v).ok_or_else(|| err("expected a boolean"))?
            }
            "encrypt_verify_outgoing" => {
                cfg.encrypt_verify_outgoing = as_bool(v).ok_or_else(|| err("expected a boolean"))?
            }
            "reconnect_timeout" => {
                let s = as_str(v).ok_or_else(|| err("expected a duration string"))?;
                cfg.reconnect_timeout = muster_api::go_duration(s)
                    .filter(|d| *d >= std::time::Duration::from_secs(1))
                    .ok_or_else(|| err("expected a duration of at least 1s"))?;
            }
            "disable_remote_exec" => {
                cfg.disable_remote_exec = as_bool(v).ok_or_else(|| err("expected a boolean"))?
            }
            "event_handlers" => {
                for h in as_strings(v).ok_or_else(|| err("expected a list of strings"))? {
                    cfg.event_handlers
                        .push(crate::handlers::EventScript::parse(&h).map_err(|e| err(&e))?);
                }
            }
            "event_handler_timeout" => {
                let s = as_str(v).ok_or_else(|| err("expected a duration string"))?;
                cfg.event_handler_timeout = muster_api::go_duration(s)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| err("invalid duration"))?;
            }
            "consul" => apply_consul(cfg, v, &name.to_string(), &mut ignored)?,
            "tls" => super::tls::apply_block(cfg, v, &name.to_string(), &mut ignored)?,
            "addresses" => super::tls::apply_addresses(cfg, v, &name.to_string(), &mut ignored)?,
            k if super::tls::TOP_LEVEL_KEYS.contains(&k) => {
                super::tls::apply_top_level(cfg, k, v, &name.to_string())?
            }
            k if super::tls::is_tuning_key(k) => ignored.push(k.to_string()),
            "watches" => {
                super::watches::apply_watches(&mut cfg.watches, v, &name.to_string(), warnings)?
            }
            "template" => crate::template::config::agent_blocks(&mut cfg.templates, v, warnings)
                .map_err(|e| err(&e))?,
            "acl" => super::acl::apply_acl(cfg, v, &name.to_string(), &mut ignored)?,
            k if super::acl::apply_legacy(cfg, k, v, &name.to_string(), &mut ignored)? => {}
            k if UNSUPPORTED.contains(&k) => ignored.push(k.to_string()),
            _ => {
                return Err(Error::Config(format!(
                    "config file {name}: unknown key {k:?}"
                )))
            }
        }
    }
    if !ignored.is_empty() {
        warnings.push(format!(
            "config file {name}: ignoring settings Muster does not support yet: {}",
            ignored.join(", ")
        ));
    }
    Ok(())
}

pub(super) fn as_bool(v: &Value) -> Option<bool> {
    v.as_bool()
}
pub(super) fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
}
pub(super) fn as_str(v: &Value) -> Option<&str> {
    v.as_str()
}
pub(super) fn as_ip(v: &Value) -> Option<IpAddr> {
    v.as_str()?.parse().ok()
}
pub(super) fn as_strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        Value::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}
