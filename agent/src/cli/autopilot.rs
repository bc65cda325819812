//! `muster operator autopilot`: `get-config`, `set-config` and `state`, with Consul's output,
//! over `/v1/operator/autopilot/*`. `set-config` reads the configuration, changes the flags
//! given, and writes it back with `?cas`, as Consul's does.

use serde_json::Value;

use super::client::{qs, Client};
use super::error::{Error, Result};
use super::help::Flag;
use super::operator::no_args;
use crate::flags::Parsed;

pub(crate) const AUTOPILOT_USAGE: &str = "
Usage: muster operator autopilot <subcommand> [options]

  The Autopilot operator command is used to interact with Muster's Autopilot
  subsystem. The command can be used to view or modify the current configuration.
";

pub(crate) const GET_CONFIG_USAGE: &str = "
Usage: muster operator autopilot get-config [options]

  Displays the current Autopilot configuration.
";

pub(crate) const SET_CONFIG_USAGE: &str = "
Usage: muster operator autopilot set-config [options]

  Modifies the current Autopilot configuration.
";

pub(crate) const STATE_USAGE: &str = "
Usage: muster operator autopilot state [options]

  Displays the current Autopilot state.
";

pub(crate) const SET_CONFIG_FLAGS: &[Flag] = &[
    Flag::value(
        "cleanup-dead-servers",
        "bool",
        "Controls whether Muster will automatically remove dead servers when new ones are \
         successfully added. Must be one of `true|false`.",
    ),
    Flag::value(
        "disable-upgrade-migration",
        "bool",
        "(Enterprise-only) Controls whether Muster will avoid promoting new servers until it \
         can perform a migration. Must be one of `true|false`.",
    ),
    Flag::value(
        "last-contact-threshold",
        "value",
        "Controls the maximum amount of time a server can go without contact from the leader \
         before being considered unhealthy. Must be a duration value such as `200ms`.",
    ),
    Flag::value(
        "max-trailing-logs",
        "value",
        "Controls the maximum number of log entries that a server can trail the leader by \
         before being considered unhealthy.",
    ),
    Flag::value(
        "min-quorum",
        "value",
        "Sets the minimum number of servers required in a cluster before autopilot can prune \
         dead servers.",
    ),
    Flag::value(
        "redundancy-zone-tag",
        "value",
        "(Enterprise-only) Controls the node_meta tag name used for separating servers into \
         different redundancy zones.",
    ),
    Flag::value(
        "server-stabilization-time",
        "value",
        "Controls the minimum amount of time a server must be stable in the 'healthy' state \
         before being added to the cluster. Only takes effect if all servers are running \
         Raft protocol version 3 or higher. Must be a duration value such as `10s`.",
    ),
    Flag::value(
        "upgrade-version-tag",
        "value",
        "(Enterprise-only) The node_meta tag to use for version info when performing upgrade \
         migrations. If left blank, the Muster version will be used.",
    ),
];

pub(crate) const STATE_FLAGS: &[Flag] = &[Flag::value(
    "format",
    "string",
    "Output format {pretty|json}",
)];

fn text(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `muster operator autopilot get-config`.
pub(crate) async fn get_config(p: &Parsed) -> Result<i32> {
    no_args(p)?;
    let c = Client::new(p)?;
    let path = format!("/v1/operator/autopilot/configuration{}", qs(p, &[]));
    let v: Value = c
        .get_json(&path)
        .await
        .map_err(|e| e.context("Error querying Autopilot configuration"))?;
    println!("CleanupDeadServers = {}", text(&v, "CleanupDeadServers"));
    println!(
        "LastContactThreshold = {}",
        text(&v, "LastContactThreshold")
    );
    println!("MaxTrailingLogs = {}", text(&v, "MaxTrailingLogs"));
    println!("MinQuorum = {}", text(&v, "MinQuorum"));
    println!(
        "ServerStabilizationTime = {}",
        text(&v, "ServerStabilizationTime")
    );
    println!("RedundancyZoneTag = {:?}", text(&v, "RedundancyZoneTag"));
    println!(
        "DisableUpgradeMigration = {}",
        text(&v, "DisableUpgradeMigration")
    );
    println!("UpgradeVersionTag = {:?}", text(&v, "UpgradeVersionTag"));
    Ok(0)
}

/// `muster operator autopilot set-config -flag=value …`.
pub(crate) async fn set_config(p: &Parsed) -> Result<i32> {
    no_args(p)?;
    let c = Client::new(p)?;
    let path = format!("/v1/operator/autopilot/configuration{}", qs(p, &[]));
    let mut v: Value = c
        .get_json(&path)
        .await
        .map_err(|e| e.context("Error querying Autopilot configuration"))?;
    let bad = |flag: &str, value: &str, why: &str| {
        Error::UsageHelp(format!("invalid value {value:?} for flag -{flag}: {why}"))
    };
    let bools = [
        ("cleanup-dead-servers", "CleanupDeadServers"),
        ("disable-upgrade-migration", "DisableUpgradeMigration"),
    ];
    for (flag, field) in bools {
        if let Some(s) = p.value(flag) {
            let b: bool = s.parse().map_err(|_| bad(flag, s, "parse error"))?;
            v[field] = Value::Bool(b);
        }
    }
    let numbers = [
        ("max-trailing-logs", "MaxTrailingLogs"),
        ("min-quorum", "MinQuorum"),
    ];
    for (flag, field) in numbers {
        if let Some(s) = p.value(flag) {
            let n: u64 = s.parse().map_err(|_| bad(flag, s, "parse error"))?;
            v[field] = Value::from(n);
        }
    }
    let durations = [
        ("last-contact-threshold", "LastContactThreshold"),
        ("server-stabilization-time", "ServerStabilizationTime"),
    ];
    for (flag, field) in durations {
        if let Some(s) = p.value(flag) {
            muster_api::go_duration(s).ok_or_else(|| bad(flag, s, "time: invalid duration"))?;
            v[field] = Value::String(s.to_string());
        }
    }
    let strings = [
        ("redundancy-zone-tag", "RedundancyZoneTag"),
        ("upgrade-version-tag", "UpgradeVersionTag"),
    ];
    for (flag, field) in strings {
        if let Some(s) = p.value(flag) {
            v[field] = Value::String(s.to_string());
        }
    }
    let index = v["ModifyIndex"].as_u64().unwrap_or(0);
    let path = format!(
        "/v1/operator/autopilot/configuration{}",
        qs(p, &[("cas", index.to_string())])
    );
    let body = serde_json::to_vec(&v).unwrap_or_default();
    let reply = c
        .call(reqwest::Method::PUT, &path, Some(body))
        .await
        .map_err(|e| e.context("Error setting Autopilot configuration"))?;
    if String::from_utf8_lossy(&reply).trim() == "true" {
        println!("Configuration updated!");
        Ok(0)
    } else {
        println!("Configuration could not be atomically updated, please try again");
        Ok(1)
    }
}

/// `muster operator autopilot state [-format pretty|json]`.
pub(crate) async fn state(p: &Parsed) -> Result<i32> {
    no_args(p)?;
    let format = p.value("format").unwrap_or("pretty");
    if format != "pretty" && format != "json" {
        return Err(Error::UsageHelp(format!(
            "Unknown format: {format}. Must be one of: pretty, json"
        )));
    }
    let c = Client::new(p)?;
    let path = format!("/v1/operator/autopilot/state{}", qs(p, &[]));
    let v: Value = c
        .get_json(&path)
        .await
        .map_err(|e| e.context("Error querying Autopilot state"))?;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    print!("{}", pretty_state(&v));
    Ok(0)
}

/// Consul's `pretty` layout of the autopilot state.
fn pretty_state(v: &Value) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "Healthy:                      {}",
        text(v, "Healthy")
    ));
    line(format!(
        "Failure Tolerance:            {}",
        text(v, "FailureTolerance")
    ));
    line(format!(
        "Optimistic Failure Tolerance: {}",
        text(v, "OptimisticFailureTolerance")
    ));
    line(format!(
        "Leader:                       {}",
        text(v, "Leader")
    ));
    line("Voters:".into());
    for id in v["Voters"].as_array().into_iter().flatten() {
        line(format!("   {}", id.as_str().unwrap_or_default()));
    }
    line("Servers:".into());
    // A JSON object's keys come sorted, as Go's map printing sorts them.
    for (id, s) in v["Servers"].as_object().into_iter().flatten() {
        line(format!("   {id}"));
        for (label, k) in [
            ("Name", "Name"),
            ("Address", "Address"),
            ("Version", "Version"),
            ("Status", "Status"),
            ("Node Type", "NodeType"),
            ("Node Status", "NodeStatus"),
            ("Healthy", "Healthy"),
            ("Last Contact", "LastContact"),
            ("Last Term", "LastTerm"),
            ("Last Index", "LastIndex"),
        ] {
            line(format!("      {:<16} {}", format!("{label}:"), text(s, k)));
        }
        if let Some(meta) = s["Meta"].as_object().filter(|m| !m.is_empty()) {
            line("      Meta".into());
            for (k, val) in meta {
                line(format!("         {k:?}: {}", val));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_reads_as_consuls_pretty_output() {
        let v = serde_json::json!({
            "Healthy": true, "FailureTolerance": 1, "OptimisticFailureTolerance": 0,
            "Leader": "a", "Voters": ["a"],
            "Servers": {"a": {"Name": "node1", "Address": "198.18.0.1:8300",
                "Version": "1.9.0", "Status": "leader", "NodeType": "voter",
                "NodeStatus": "alive", "Healthy": true, "LastContact": "0s",
                "LastTerm": 3, "LastIndex": 42, "Meta": {"foo": "bar"}}}
        });
        let want = "Healthy:                      true
Failure Tolerance:            1
Optimistic Failure Tolerance: 0
Leader:                       a
Voters:
   a
Servers:
   a
      Name:            node1
      Address:         198.18.0.1:8300
      Version:         1.9.0
      Status:          leader
      Node Type:       voter
      Node Status:     alive
      Healthy:         true
      Last Contact:    0s
      Last Term:       3
      Last Index:      42
      Meta
         \"foo\": \"bar\"
";
        assert_eq!(pretty_state(&v), want);
    }
}
