//! Cluster membership as the local agent's gossip sees it: `members`, `join`, `leave` and
//! `force-leave`.

use serde_json::Value;

use super::client::{parse, Client};
use super::error::{Error, Result};
use super::table::print_table;
use crate::flags::Kind;

/// `muster members`: the members of the cluster, optionally filtered by status.
pub(crate) async fn members(args: &[String]) -> Result<i32> {
    let p = parse(
        args,
        &[
            ("status", Kind::Value),
            ("detailed", Kind::Bool),
            ("wan", Kind::Bool),
        ],
    )?;
    let re = match p.value("status") {
        Some(s) => Some(regex_lite::Regex::new(s).map_err(|e| Error::StatusRegex {
            pattern: s.to_string(),
            reason: e,
        })?),
        None => None,
    };
    let c = Client::new(&p);
    let body = c
        .call(reqwest::Method::GET, "/v1/agent/members", None)
        .await?;
    let list: Vec<Value> = serde_json::from_slice(&body).map_err(|e| Error::Json {
        what: "decode members",
        source: e,
    })?;
    let status_name = |n: u64| match n {
        1 => "alive",
        2 => "leaving",
        3 => "left",
        4 => "failed",
        _ => "none",
    };
    let mut rows = Vec::new();
    for m in &list {
        let status = status_name(m["Status"].as_u64().unwrap_or(0));
        if re.as_ref().is_some_and(|r| !r.is_match(status)) {
            continue;
        }
        let tags = m["Tags"].as_object().cloned().unwrap_or_default();
        let tag = |k: &str| {
            tags.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let addr = format!("{}:{}", m["Addr"].as_str().unwrap_or(""), m["Port"]);
        let row = if p.bool("detailed") {
            let t: Vec<String> = tags
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            vec![
                m["Name"].as_str().unwrap_or("").to_string(),
                addr,
                status.into(),
                t.join(","),
            ]
        } else {
            let kind = if tag("role") == "consul" {
                "server"
            } else {
                "client"
            };
            vec![
                m["Name"].as_str().unwrap_or("").to_string(),
                addr,
                status.into(),
                kind.into(),
                tag("build"),
                "2".into(),
                tag("dc"),
            ]
        };
        rows.push(row);
    }
    if rows.is_empty() {
        // Consul exits 2 when the filter matched nobody.
        return Ok(2);
    }
    let header: Vec<String> = if p.bool("detailed") {
        ["Node", "Address", "Status", "Tags"]
            .map(String::from)
            .to_vec()
    } else {
        [
            "Node", "Address", "Status", "Type", "Build", "Protocol", "DC",
        ]
        .map(String::from)
        .to_vec()
    };
    print_table(&header, &rows);
    Ok(0)
}

/// `muster join ADDR...`: asks the local agent to join the cluster through these addresses.
pub(crate) async fn join(args: &[String]) -> Result<i32> {
    let p = parse(args, &[("wan", Kind::Bool)])?;
    if p.positional.is_empty() {
        return Err(Error::usage("at least one address to join must be given"));
    }
    let c = Client::new(&p);
    let mut joined = 0;
    for a in &p.positional {
        match c
            .call(reqwest::Method::PUT, &format!("/v1/agent/join/{a}"), None)
            .await
        {
            Ok(_) => joined += 1,
            Err(e) => eprintln!("Error joining address '{a}': {e}"),
        }
    }
    if joined == 0 {
        return Err(Error::JoinedNone);
    }
    println!("Successfully joined cluster by contacting {joined} nodes.");
    Ok(0)
}

/// `muster leave`: the local agent leaves the cluster gracefully and shuts down.
pub(crate) async fn leave(args: &[String]) -> Result<i32> {
    let p = parse(args, &[])?;
    Client::new(&p)
        .call(reqwest::Method::PUT, "/v1/agent/leave", None)
        .await?;
    println!("Graceful leave complete");
    Ok(0)
}

/// `muster force-leave NODE`: moves a member to the "left" state.
pub(crate) async fn force_leave(args: &[String]) -> Result<i32> {
    let p = parse(args, &[("prune", Kind::Bool)])?;
    let [node] = p.positional.as_slice() else {
        return Err(Error::usage("a single node name must be specified"));
    };
    Client::new(&p)
        .call(
            reqwest::Method::PUT,
            &format!("/v1/agent/force-leave/{node}"),
            None,
        )
        .await?;
    Ok(0)
}
