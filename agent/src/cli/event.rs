//! `muster event`: fires a user event through the local agent (`PUT /v1/event/fire/<name>`),
//! with Consul's flags, checks and output (`Event ID: …`).

use serde_json::Value;

use super::client::{qs, url_escape, Client};
use super::error::{Error, Result};
use super::help::Flag;
use crate::flags::Parsed;

pub(crate) const EVENT_USAGE: &str = "
Usage: muster event [options] [payload]

  Dispatches a custom user event across a datacenter. An event must provide
  a name, but a payload is optional. Events support filtering using
  regular expressions on node name, service, and tag definitions.

  Events travel on the gossip layer, never through the servers' Raft log.
  The name and payload together may take at most 512 bytes.
";

/// The node, service and tag filters `event` and `exec` share (Consul's).
pub(crate) const FILTER_FLAGS: [Flag; 3] = [
    Flag::value(
        "node",
        "string",
        "Regular expression to filter on node names.",
    ),
    Flag::value(
        "service",
        "string",
        "Regular expression to filter on service instances.",
    ),
    Flag::value(
        "tag",
        "string",
        "Regular expression to filter on service tags. Must be used with -service.",
    ),
];

pub(crate) const EVENT_FLAGS: &[Flag] = &[
    Flag::value("name", "string", "Name of the event."),
    FILTER_FLAGS[0],
    FILTER_FLAGS[1],
    FILTER_FLAGS[2],
];

/// Consul's checks of the filters, with its messages: each a regex, a tag only with a
/// service.
pub(crate) fn check_filters(node: &str, service: &str, tag: &str) -> Result<()> {
    for (what, re) in [("node", node), ("service", service), ("tag", tag)] {
        if let Err(e) = regex_lite::Regex::new(re) {
            return Err(Error::usage(format!(
                "Failed to compile {what} filter regexp: {e}"
            )));
        }
    }
    if !tag.is_empty() && service.is_empty() {
        return Err(Error::usage(
            "Cannot provide tag filter without service filter.",
        ));
    }
    Ok(())
}

/// `muster event -name NAME [-node RE] [-service RE] [-tag RE] [PAYLOAD]`.
pub(crate) async fn run(p: &Parsed) -> Result<i32> {
    let name = p.value("name").unwrap_or("");
    if name.is_empty() {
        return Err(Error::UsageHelp("Event name must be specified".into()));
    }
    let filter = |flag: &str| p.value(flag).unwrap_or("").to_string();
    let (node, service, tag) = (filter("node"), filter("service"), filter("tag"));
    check_filters(&node, &service, &tag)?;
    let payload = match p.positional.as_slice() {
        [] => None,
        [one] => Some(one.clone().into_bytes()),
        _ => return Err(Error::UsageHelp("Too many command line arguments.".into())),
    };
    let c = Client::new(p).map_err(|e| e.context("Error connecting to Consul agent"))?;
    let _: Value = c
        .get_json("/v1/agent/self")
        .await
        .map_err(|e| e.context("Error querying Consul agent"))?;
    let mut extra = Vec::new();
    for (k, v) in [("node", node), ("service", service), ("tag", tag)] {
        if !v.is_empty() {
            extra.push((k, v));
        }
    }
    if let Some(dc) = p.value("datacenter").filter(|d| !d.is_empty()) {
        extra.push(("dc", dc.to_string()));
    }
    let path = format!("/v1/event/fire/{}{}", url_escape(name), qs(p, &extra));
    let body = c
        .call(reqwest::Method::PUT, &path, payload)
        .await
        .map_err(|e| e.context("Error firing event"))?;
    let ev: Value = serde_json::from_slice(&body)?;
    println!("Event ID: {}", ev["ID"].as_str().unwrap_or(""));
    Ok(0)
}
