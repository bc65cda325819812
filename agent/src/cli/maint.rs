//! `muster maint`: lists, enables and disables node and service maintenance mode, with
//! Consul's messages, plus `-ttl` (maintenance that ends by itself).

use std::collections::BTreeMap;
use std::io::Write;

use muster_api::go_duration;
use serde_json::Value;

use super::client::{url_escape, Client};
use super::error::{Error, Result};
use super::help::Flag;
use crate::flags::Parsed;

pub(crate) const MAINT_USAGE: &str = "
Usage: muster maint [options]

  Places a node or service into maintenance mode. During maintenance mode,
  the node or service will be excluded from all queries through the DNS
  or API interfaces, effectively taking it out of the pool of available
  nodes. This is done by registering an additional critical health check.

  When enabling maintenance mode for a node or service, you may optionally
  specify a reason string. This string will appear in the \"Notes\" field
  of the critical health check which is registered against the node or
  service. With -ttl, maintenance ends by itself after that duration.

  Maintenance mode is persistent, and will be restored in the event of an
  agent restart.

  By default, we operate on the node as a whole. By specifying the
  \"-service\" argument, this behavior can be changed to enable or disable
  only a specific service.

  If no arguments are given, the agent's maintenance status will be shown.
  This will return blank if nothing is currently under maintenance.
";

pub(crate) const MAINT_FLAGS: &[Flag] = &[
    Flag::bool("disable", "Disable maintenance mode."),
    Flag::bool("enable", "Enable maintenance mode."),
    Flag::value(
        "reason",
        "string",
        "Text describing the maintenance reason.",
    ),
    Flag::value(
        "service",
        "string",
        "Control maintenance mode for a specific service ID.",
    ),
    Flag::value(
        "ttl",
        "duration",
        "With -enable: end the maintenance by itself after this duration (\"30m\").",
    ),
];

/// `muster maint [-enable|-disable] [-service ID] [-reason TEXT] [-ttl DURATION]`.
pub(crate) async fn run(p: &Parsed) -> Result<i32> {
    let (enable, disable) = (p.bool("enable"), p.bool("disable"));
    let reason = p.value("reason").unwrap_or("");
    let service = p.value("service").unwrap_or("");
    let ttl = p.value("ttl").unwrap_or("");
    if enable && disable {
        return Err(Error::usage(
            "Only one of -enable or -disable may be provided",
        ));
    }
    if !enable && !reason.is_empty() {
        return Err(Error::usage("Reason may only be provided with -enable"));
    }
    if !enable && !ttl.is_empty() {
        return Err(Error::usage("TTL may only be provided with -enable"));
    }
    if !enable && !disable && !service.is_empty() {
        return Err(Error::usage("Service requires either -enable or -disable"));
    }
    if !ttl.is_empty() && go_duration(ttl).is_none() {
        return Err(Error::InvalidFlag {
            flag: "ttl",
            value: ttl.to_string(),
        });
    }
    let c = Client::new(p).map_err(|e| e.context("Error connecting to Consul agent"))?;
    let me: Value = c
        .get_json("/v1/agent/self")
        .await
        .map_err(|e| e.context("Error querying Consul agent"))?;
    if !enable && !disable {
        return list(&c, me["Config"]["NodeName"].as_str().unwrap_or("")).await;
    }
    let mut q = format!("enable={enable}");
    if enable {
        q.push_str(&format!("&reason={}", url_escape(reason)));
    }
    if !ttl.is_empty() {
        q.push_str(&format!("&ttl={}", url_escape(ttl)));
    }
    let (path, step, done) = match (service, enable) {
        ("", true) => (
            format!("/v1/agent/maintenance?{q}"),
            "Error enabling node maintenance".to_string(),
            "Node maintenance is now enabled".to_string(),
        ),
        ("", false) => (
            format!("/v1/agent/maintenance?{q}"),
            "Error disabling node maintenance".to_string(),
            "Node maintenance is now disabled".to_string(),
        ),
        (id, true) => (
            format!("/v1/agent/service/maintenance/{id}?{q}"),
            "Error enabling service maintenance".to_string(),
            format!("Service maintenance is now enabled for {id:?}"),
        ),
        (id, false) => (
            format!("/v1/agent/service/maintenance/{id}?{q}"),
            "Error disabling service maintenance".to_string(),
            format!("Service maintenance is now disabled for {id:?}"),
        ),
    };
    c.call(reqwest::Method::PUT, &path, None)
        .await
        .map_err(|e| e.context(step))?;
    println!("{done}");
    Ok(0)
}

/// Lists current maintenances; prints nothing when there are none (scripts rely on it).
async fn list(c: &Client, node: &str) -> Result<i32> {
    let checks: BTreeMap<String, Value> = c
        .get_json("/v1/agent/checks")
        .await
        .map_err(|e| e.context("Error getting checks"))?;
    let mut out = std::io::stdout().lock();
    for (id, chk) in &checks {
        let reason = chk["Notes"].as_str().unwrap_or("");
        if id == "_node_maintenance" {
            writeln!(out, "Node:\n  Name:   {node}\n  Reason: {reason}\n")?;
        } else if id.starts_with("_service_maintenance:") {
            let sid = chk["ServiceID"].as_str().unwrap_or("");
            writeln!(out, "Service:\n  ID:     {sid}\n  Reason: {reason}\n")?;
        }
    }
    Ok(0)
}
