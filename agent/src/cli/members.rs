//! Cluster membership as the local agent's gossip sees it: `members`, `join`, `leave` and
//! `force-leave`, with Consul's output and messages.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::client::{qs, Client};
use super::error::{Error, Result};
use super::help::Flag;
use super::table::print_table;
use crate::flags::Parsed;

pub(crate) const MEMBERS_USAGE: &str = "
Usage: muster members [options]

  Outputs the members of a running agent.
";

pub(crate) const MEMBERS_FLAGS: &[Flag] = &[
    Flag::bool("detailed", "Provides detailed information about nodes."),
    Flag::bool(
        "wan",
        "If the agent is in server mode, this can be used to return the other peers in the \
         WAN pool. Muster runs one datacenter: its WAN pool is its servers.",
    ),
    Flag::value(
        "status",
        "string",
        "If provided, output is filtered to only nodes matching the regular expression for \
         status.",
    ),
    Flag::value(
        "segment",
        "string",
        "If provided, output is filtered to only nodes in the given segment.",
    ),
];

pub(crate) const JOIN_USAGE: &str = "
Usage: muster join [options] address ...

  Tells a running agent (with \"muster agent\") to join the cluster
  by specifying at least one existing member.
";

pub(crate) const JOIN_FLAGS: &[Flag] = &[Flag::bool(
    "wan",
    "Joins a server to another server in the WAN pool.",
)];

pub(crate) const LEAVE_USAGE: &str = "
Usage: muster leave [options]

  Causes the agent to gracefully leave the cluster and shutdown.
";

pub(crate) const FORCE_LEAVE_USAGE: &str = "
Usage: muster force-leave [options] name

  Forces a member of a cluster to enter the \"left\" state. Note
  that if the member is still actually alive, it will eventually rejoin
  the cluster. This command is most useful for cleaning out \"failed\" nodes
  that are never coming back.
";

pub(crate) const FORCE_LEAVE_FLAGS: &[Flag] = &[Flag::bool(
    "prune",
    "Remove agent forcibly from list of members",
)];

/// One member as `/v1/agent/members` returns it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Member {
    name: String,
    addr: String,
    port: u16,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    status: u8,
    #[serde(default)]
    protocol_cur: Option<u8>,
}

impl Member {
    fn tag(&self, k: &str) -> &str {
        self.tags
            .as_ref()
            .and_then(|t| t.get(k))
            .map(String::as_str)
            .unwrap_or("")
    }

    fn set_tag(&mut self, k: &str, v: String) {
        self.tags
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v);
    }

    /// `addr:port` as Go's `net.TCPAddr` prints it (IPv6 in brackets).
    fn address(&self) -> String {
        match self.addr.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, self.port).to_string(),
            Err(_) => format!(":{}", self.port),
        }
    }

    /// Serf's name for the status.
    fn status(&self) -> &'static str {
        match self.status {
            1 => "alive",
            2 => "leaving",
            3 => "left",
            4 => "failed",
            _ => "none",
        }
    }
}

/// `muster members`: the members of the cluster, in Consul's columns; exits 2 when none
/// matches the filters.
pub(crate) async fn members(p: &Parsed) -> Result<i32> {
    let re = regex_lite::Regex::new(p.value("status").unwrap_or(".*")).map_err(|e| {
        Error::StatusRegex {
            pattern: p.value("status").unwrap_or_default().to_string(),
            reason: e,
        }
    })?;
    let c = Client::new(p).map_err(connecting)?;
    let segment = p.value("segment");
    let wan = p.bool("wan");
    let mut extra = vec![("segment", segment.unwrap_or("_all").to_string())];
    if wan {
        extra.push(("wan", "1".into()));
    }
    let mut list: Vec<Member> = read_members(&c, &qs(p, &extra))
        .await
        .map_err(|e| e.context("Error retrieving members"))?;
    if wan {
        list = wan_pool(&c, list)
            .await
            .map_err(|e| e.context("Error retrieving members"))?;
    }
    if let Some(seg) = segment {
        list.retain(|m| m.tag("segment") == seg);
    }
    for m in &mut list {
        if segment.is_none() && m.tag("role") == "consul" {
            m.set_tag("segment", "<all>".into());
        } else if m.tag("segment").is_empty() {
            m.set_tag("segment", "<default>".into());
        }
    }
    list.retain(|m| re.is_match(m.status()));
    if list.is_empty() {
        return Ok(2);
    }
    list.sort_by(|a, b| (a.tag("segment"), &a.name).cmp(&(b.tag("segment"), &b.name)));
    let mut rows = Vec::new();
    if p.bool("detailed") {
        rows.push(
            ["Node", "Address", "Status", "Tags"]
                .map(String::from)
                .to_vec(),
        );
        for m in &list {
            let tags: Vec<String> = m
                .tags
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            rows.push(vec![
                m.name.clone(),
                m.address(),
                m.status().into(),
                tags.join(","),
            ]);
        }
    } else {
        rows.push(
            [
                "Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Segment",
            ]
            .map(String::from)
            .to_vec(),
        );
        for m in &list {
            rows.push(standard_row(m));
        }
    }
    print_table(&rows);
    Ok(0)
}

/// A member's row in Consul's standard columns. The protocol is the `vsn` tag, else the
/// member's current protocol version; the build is the `build` tag up to its first `:`.
fn standard_row(m: &Member) -> Vec<String> {
    let kind = match m.tag("role") {
        "node" => "client",
        "consul" => "server",
        _ => {
            let mut row = vec![
                m.name.clone(),
                m.address(),
                m.status().into(),
                "unknown".into(),
            ];
            row.extend(std::iter::repeat_n(String::new(), 4));
            return row;
        }
    };
    let build = match m.tag("build") {
        "" => "< 0.3",
        b => b.split(':').next().unwrap_or(b),
    };
    let protocol = match m.tag("vsn") {
        "" => m.protocol_cur.map(|v| v.to_string()).unwrap_or_default(),
        v => v.to_string(),
    };
    vec![
        m.name.clone(),
        m.address(),
        m.status().into(),
        kind.into(),
        build.into(),
        protocol,
        m.tag("dc").into(),
        m.tag("segment").into(),
    ]
}

async fn read_members(c: &Client, query: &str) -> Result<Vec<Member>> {
    let list: Option<Vec<Member>> = c.get_json(&format!("/v1/agent/members{query}")).await?;
    Ok(list.unwrap_or_default())
}

/// The WAN pool: what the agent answered to `?wan=1` if it keeps one (its members are named
/// `NODE.DC`); otherwise, as Muster runs one datacenter, its servers under their WAN names,
/// and nothing on a client agent, which is in no WAN pool.
async fn wan_pool(c: &Client, list: Vec<Member>) -> Result<Vec<Member>> {
    let named_wan = |m: &Member| m.name.ends_with(&format!(".{}", m.tag("dc")));
    if !list.is_empty() && list.iter().all(named_wan) {
        return Ok(list);
    }
    let me: serde_json::Value = c.get_json("/v1/agent/self").await?;
    if me["Config"]["Server"] != true {
        return Ok(Vec::new());
    }
    Ok(list
        .into_iter()
        .filter(|m| m.tag("role") == "consul")
        .map(|mut m| {
            m.name = format!("{}.{}", m.name, m.tag("dc"));
            m
        })
        .collect())
}

/// Consul's wording for a client that could not be set up.
fn connecting(e: Error) -> Error {
    e.context("Error connecting to Consul agent")
}

/// `muster join ADDR...`: asks the local agent to join the cluster through these addresses.
pub(crate) async fn join(p: &Parsed) -> Result<i32> {
    if p.positional.is_empty() {
        return Err(Error::UsageHelp(
            "At least one address to join must be specified.".into(),
        ));
    }
    let c = Client::new(p).map_err(connecting)?;
    let wan = if p.bool("wan") { "?wan=1" } else { "" };
    let mut joined = 0;
    for a in &p.positional {
        let path = format!("/v1/agent/join/{a}{wan}");
        match c.call(reqwest::Method::PUT, &path, None).await {
            Ok(_) => joined += 1,
            Err(e) => eprintln!("Error joining address '{a}': {}", e.report()),
        }
    }
    if joined == 0 {
        return Err(Error::JoinedNone);
    }
    println!("Successfully joined cluster by contacting {joined} nodes.");
    Ok(0)
}

/// `muster leave`: the local agent leaves the cluster gracefully and shuts down.
pub(crate) async fn leave(p: &Parsed) -> Result<i32> {
    if !p.positional.is_empty() {
        return Err(Error::UsageHelp(format!(
            "Error found unexpected args: [{}]",
            p.positional.join(" ")
        )));
    }
    Client::new(p)
        .map_err(connecting)?
        .call(reqwest::Method::PUT, "/v1/agent/leave", None)
        .await
        .map_err(|e| e.context("Error leaving"))?;
    println!("Graceful leave complete");
    Ok(0)
}

/// `muster force-leave NODE`: moves a member to the "left" state.
pub(crate) async fn force_leave(p: &Parsed) -> Result<i32> {
    let [node] = p.positional.as_slice() else {
        return Err(Error::UsageHelp(
            "A single node name must be specified to force leave.".into(),
        ));
    };
    let prune = if p.bool("prune") { "?prune=1" } else { "" };
    Client::new(p)
        .map_err(connecting)?
        .call(
            reqwest::Method::PUT,
            &format!("/v1/agent/force-leave/{node}{prune}"),
            None,
        )
        .await
        .map_err(|e| e.context("Error force leaving"))?;
    Ok(0)
}
