//! The `autopilot` block: the rules a leader seeds the cluster's replicated autopilot
//! configuration with (Consul's keys and defaults). Once the cluster has a configuration,
//! `PUT /v1/operator/autopilot/configuration` changes it, not the file.

use std::time::Duration;

use muster_server::model::AutopilotConfig;
use serde_json::Value;

use super::sections::{block, key_error, unknown_key};
use crate::Result;

/// Applies `autopilot` from config file `name` over `c` (later files override earlier ones).
pub(super) fn apply(c: &mut AutopilotConfig, v: &Value, name: &str) -> Result<()> {
    for (k, v) in block(v, name, "autopilot")? {
        let key = format!("autopilot.{k}");
        let err = |why: &str| key_error(name, &key, why);
        let boolean = || {
            v.as_bool()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| err("expected true or false"))
        };
        let number = || {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| err("expected a non-negative number"))
        };
        let duration = || {
            v.as_str()
                .and_then(muster_server::go_duration)
                .map(|d: Duration| d.as_millis() as u64)
                .ok_or_else(|| err("expected a duration such as \"10s\""))
        };
        let text = || {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| err("expected a string"))
        };
        match k.as_str() {
            "cleanup_dead_servers" => c.cleanup_dead_servers = boolean()?,
            "last_contact_threshold" => c.last_contact_threshold_ms = duration()?,
            "max_trailing_logs" => c.max_trailing_logs = number()?,
            "min_quorum" => c.min_quorum = number()?,
            "server_stabilization_time" => c.server_stabilization_time_ms = duration()?,
            "redundancy_zone_tag" => c.redundancy_zone_tag = text()?,
            "disable_upgrade_migration" => c.disable_upgrade_migration = boolean()?,
            "upgrade_version_tag" => c.upgrade_version_tag = text()?,
            _ => return Err(unknown_key(name, &key)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_override_consuls_defaults() {
        let mut c = AutopilotConfig::default();
        assert!(c.cleanup_dead_servers);
        assert_eq!(c.last_contact_threshold_ms, 200);
        assert_eq!(c.max_trailing_logs, 250);
        assert_eq!(c.server_stabilization_time_ms, 10_000);
        let v = serde_json::json!({
            "cleanup_dead_servers": false,
            "last_contact_threshold": "1s",
            "min_quorum": 3,
            "server_stabilization_time": "2s"
        });
        assert!(apply(&mut c, &v, "f").is_ok());
        assert!(!c.cleanup_dead_servers);
        assert_eq!(c.last_contact_threshold_ms, 1000);
        assert_eq!(c.min_quorum, 3);
        assert_eq!(c.server_stabilization_time_ms, 2000);
        assert_eq!(c.max_trailing_logs, 250);
        assert!(apply(&mut c, &serde_json::json!({"min_quorum": "x"}), "f").is_err());
        assert!(apply(&mut c, &serde_json::json!({"bogus": 1}), "f").is_err());
    }
}
