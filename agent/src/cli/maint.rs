//! `muster maint`: lists, enables and disables node and service maintenance mode.

use std::collections::BTreeMap;
use std::io::Write;

use muster_api::go_duration;
use serde_json::Value;

use super::client::{parse, Client};
use super::error::{Error, Result};
use crate::flags::Kind;

/// `muster maint [-enable|-disable] [-service ID] [-reason TEXT] [-ttl DURATION]`.
pub(crate) async fn run(args: &[String]) -> Result<i32> {
    let p = parse(
        args,
        &[
            ("enable", Kind::Bool),
            ("disable", Kind::Bool),
            ("reason", Kind::Value),
            ("service", Kind::Value),
            ("ttl", Kind::Value),
        ],
    )?;
    let c = Client::new(&p);
    if p.bool("enable") && p.bool("disable") {
        return Err(Error::usage("only one of -enable or -disable may be given"));
    }
    if !p.bool("enable") && !p.bool("disable") {
        if p.has("reason") || p.has("service") || p.has("ttl") {
            return Err(Error::usage(
                "-reason, -service and -ttl need -enable or -disable",
            ));
        }
        // List current maintenances; print nothing when there are none (scripts rely on it).
        let checks: BTreeMap<String, Value> = serde_json::from_slice(
            &c.call(reqwest::Method::GET, "/v1/agent/checks", None)
                .await?,
        )?;
        let mut out = std::io::stdout().lock();
        for (id, chk) in &checks {
            let reason = chk["Notes"].as_str().unwrap_or("");
            if id == "_node_maintenance" {
                writeln!(
                    out,
                    "Node:\n  Name:   {}\n  Reason: {reason}\n",
                    chk["Node"].as_str().unwrap_or("")
                )?;
            } else if let Some(sid) = id.strip_prefix("_service_maintenance:") {
                writeln!(out, "Service:\n  ID:     {sid}\n  Reason: {reason}\n")?;
            }
        }
        return Ok(0);
    }
    let enable = p.bool("enable");
    let mut q = vec![format!("enable={enable}")];
    if let Some(r) = p.value("reason") {
        q.push(format!("reason={}", url_escape(r)));
    }
    if let Some(t) = p.value("ttl") {
        go_duration(t).ok_or_else(|| Error::InvalidFlag {
            flag: "ttl",
            value: t.to_string(),
        })?;
        q.push(format!("ttl={t}"));
    }
    let q = q.join("&");
    match p.value("service") {
        Some(sid) => {
            c.call(
                reqwest::Method::PUT,
                &format!("/v1/agent/service/maintenance/{sid}?{q}"),
                None,
            )
            .await?;
            if enable {
                println!("Service entered maintenance mode: {sid}");
            } else {
                println!("Service maintenance is now disabled: {sid}");
            }
        }
        None => {
            c.call(
                reqwest::Method::PUT,
                &format!("/v1/agent/maintenance?{q}"),
                None,
            )
            .await?;
            if enable {
                println!("Node entered maintenance mode");
            } else {
                println!("Node maintenance is now disabled");
            }
        }
    }
    Ok(0)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
