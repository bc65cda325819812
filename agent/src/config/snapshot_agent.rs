//! The `snapshot_agent` block: scheduled snapshots written by the leader, in Consul's snapshot
//! agent's keys (`snapshot { interval, retain }`, `local_storage { path }`), the same keys
//! also accepted flat (`snapshot_agent { interval, retain, path }`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::sections::{block, key_error, unknown_key};
use crate::Result;

/// Where and how often the leader saves a snapshot, and how many it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotAgentConfig {
    /// Between two snapshots (Consul's default: 1 h).
    pub interval: Duration,
    /// Snapshots kept in `path`, the newest ones; 0 keeps every one (Consul's default: 30).
    pub retain: usize,
    /// The directory snapshots land in (Consul's default: the working directory).
    pub path: PathBuf,
}

impl Default for SnapshotAgentConfig {
    fn default() -> Self {
        SnapshotAgentConfig {
            interval: Duration::from_secs(3600),
            retain: 30,
            path: PathBuf::from("."),
        }
    }
}

/// Parses `snapshot_agent` from config file `name`.
pub(super) fn parse(v: &Value, name: &str) -> Result<SnapshotAgentConfig> {
    let mut c = SnapshotAgentConfig::default();
    apply(&mut c, v, name, "snapshot_agent")?;
    Ok(c)
}

fn apply(c: &mut SnapshotAgentConfig, v: &Value, name: &str, at: &str) -> Result<()> {
    for (k, v) in block(v, name, at)? {
        let key = format!("{at}.{k}");
        let err = |why: &str| key_error(name, &key, why);
        match k.as_str() {
            "snapshot" | "local_storage" => apply(c, v, name, &key)?,
            "interval" => {
                c.interval = v
                    .as_str()
                    .and_then(muster_api::go_duration)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| err("expected a duration such as \"1h\""))?
            }
            "retain" => {
                c.retain = v
                    .as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| err("expected a non-negative number"))?
            }
            "path" => {
                c.path = v
                    .as_str()
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .ok_or_else(|| err("expected a directory"))?
            }
            _ => return Err(unknown_key(name, &key)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consuls_nested_keys_and_flat_ones_read_alike() {
        let nested = serde_json::json!({
            "snapshot": {"interval": "30s", "retain": 3},
            "local_storage": {"path": "/backups"}
        });
        let flat = serde_json::json!({"interval": "30s", "retain": 3, "path": "/backups"});
        let want = SnapshotAgentConfig {
            interval: Duration::from_secs(30),
            retain: 3,
            path: "/backups".into(),
        };
        assert_eq!(parse(&nested, "f").ok(), Some(want.clone()));
        assert_eq!(parse(&flat, "f").ok(), Some(want));
        assert!(parse(&serde_json::json!({"interval": "0s"}), "f").is_err());
        assert!(parse(&serde_json::json!({"bucket": "x"}), "f").is_err());
    }
}
