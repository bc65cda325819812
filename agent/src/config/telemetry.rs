//! The `telemetry` block. Honoured: `prometheus_retention_time` (above zero enables
//! `/v1/agent/metrics?format=prometheus`, as in Consul), `disable_hostname` (gauge names carry
//! the hostname unless it is true), `metrics_prefix`, the filters (`prefix_filter`,
//! `allowed_prefixes`, `blocked_prefixes`, `filter_default`) and the statsd, statsite and
//! DogStatsD sinks (`muster_api::metrics_sink`). Circonus and the rest are accepted and
//! ignored, with the usual warning, so Consul files load.

use serde_json::Value;

use super::file::as_strings as strings;
use super::sections::{block, key_error};
use super::Config;
use crate::Result;

/// Keys accepted and ignored.
const IGNORED: &[&str] = &[
    "statsite_prefix",
    "disable_compat_1.9",
    "enable_host_metrics",
    "retry_failed_connection",
    "disable_per_tenancy_usage_metrics",
];

pub(super) fn apply_telemetry(
    cfg: &mut Config,
    v: &Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<()> {
    let m = block(v, name, "telemetry")?;
    let err = |k: &str, why: &str| key_error(name, &format!("telemetry.{k}"), why);
    for (k, v) in m {
        match k.as_str() {
            "prometheus_retention_time" => {
                cfg.telemetry.prometheus_retention = v
                    .as_str()
                    .and_then(muster_api::go_duration)
                    .ok_or_else(|| err(k, "expected a duration such as \"60s\""))?
            }
            "disable_hostname" => {
                cfg.telemetry.disable_hostname =
                    v.as_bool().ok_or_else(|| err(k, "expected a boolean"))?
            }
            "metrics_prefix" => {
                let p = v.as_str().ok_or_else(|| err(k, "expected a string"))?;
                if p.is_empty() {
                    return Err(err(k, "must not be empty"));
                }
                cfg.telemetry.prefix = p.to_string();
            }
            "statsd_address" | "statsite_address" | "dogstatsd_addr" => {
                let a = v.as_str().ok_or_else(|| err(k, "expected \"host:port\""))?;
                if a.rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err())
                {
                    return Err(err(k, "expected \"host:port\""));
                }
                let sinks = &mut cfg.telemetry.sinks;
                let slot = match k.as_str() {
                    "statsd_address" => &mut sinks.statsd,
                    "statsite_address" => &mut sinks.statsite,
                    _ => &mut sinks.dogstatsd,
                };
                *slot = Some(a.to_string());
            }
            "dogstatsd_tags" => {
                cfg.telemetry.sinks.dogstatsd_tags =
                    strings(v).ok_or_else(|| err(k, "expected a list of strings"))?
            }
            "filter_default" => {
                cfg.telemetry.filter.keep_unmatched =
                    v.as_bool().ok_or_else(|| err(k, "expected a boolean"))?
            }
            "prefix_filter" => {
                for rule in strings(v).ok_or_else(|| err(k, "expected a list of strings"))? {
                    let keep = match rule.chars().next() {
                        Some('+') => true,
                        Some('-') => false,
                        _ => return Err(err(k, &format!("{rule:?} must start with + or -"))),
                    };
                    let prefix = rule[1..].to_string();
                    cfg.telemetry.filter.rules.push((prefix, keep));
                }
            }
            "allowed_prefixes" | "blocked_prefixes" => {
                let keep = k == "allowed_prefixes";
                for prefix in strings(v).ok_or_else(|| err(k, "expected a list of strings"))? {
                    cfg.telemetry.filter.rules.push((prefix, keep));
                }
            }
            k if IGNORED.contains(&k) || k.starts_with("circonus_") => {
                ignored.push(format!("telemetry.{k}"))
            }
            _ => return Err(err(k, "unknown key")),
        }
    }
    Ok(())
}
