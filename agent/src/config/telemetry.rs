//! The `telemetry` block. Honoured: `prometheus_retention_time` (above zero enables
//! `/v1/agent/metrics?format=prometheus`, as in Consul), `disable_hostname` (gauge names carry
//! the hostname unless it is true) and `metrics_prefix`. The sinks Muster does not have
//! (statsd, dogstatsd, statsite, Circonus) and the filters are accepted and ignored, with the
//! usual warning, so Consul files load.

use serde_json::Value;

use super::sections::{block, key_error};
use super::Config;
use crate::Result;

/// Keys accepted and ignored.
const IGNORED: &[&str] = &[
    "statsd_address",
    "statsite_address",
    "statsite_prefix",
    "dogstatsd_addr",
    "dogstatsd_tags",
    "filter_default",
    "prefix_filter",
    "allowed_prefixes",
    "blocked_prefixes",
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
            k if IGNORED.contains(&k) || k.starts_with("circonus_") => {
                ignored.push(format!("telemetry.{k}"))
            }
            _ => return Err(err(k, "unknown key")),
        }
    }
    Ok(())
}
