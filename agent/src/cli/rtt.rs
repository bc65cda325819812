//! `muster rtt`: the round trip between two nodes, estimated from their network coordinates
//! as Consul's `consul rtt` estimates it (LAN coordinates, or with `-wan` the servers' of
//! `/v1/coordinate/datacenters`).

use muster_server::model::Coordinate;
use serde::Deserialize;

use super::client::Client;
use super::help::Flag;
use super::{Error, Result};
use crate::flags::Parsed;

pub(crate) const RTT_USAGE: &str = "
Usage: muster rtt [options] node1 [node2]

  Estimates the round trip time between two nodes using Muster's network
  coordinate model of the cluster.

  At least one node name is required. If the second node name isn't given, it
  is set to the agent's node name. Note that these are node names as known to
  Muster as \"muster members\" would show, not IP addresses.

  By default, the two nodes are assumed to be nodes in the local datacenter
  and the LAN coordinates are used. If the -wan option is given, then the WAN
  coordinates are used, and the node names must be suffixed by a period and
  the datacenter (eg. \"myserver.dc1\").

  It is not possible to measure between LAN coordinates and WAN coordinates
  because they are maintained by independent Serf gossip areas, so they are
  not compatible.
";

pub(crate) const RTT_FLAGS: &[Flag] = &[Flag::bool(
    "wan",
    "Use WAN coordinates instead of LAN coordinates.",
)];

#[derive(Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Coord {
    vec: Vec<f64>,
    error: f64,
    adjustment: f64,
    height: f64,
}

impl From<Coord> for Coordinate {
    fn from(c: Coord) -> Self {
        Coordinate {
            vec: c.vec,
            error: c.error,
            adjustment: c.adjustment,
            height: c.height,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    node: String,
    coord: Coord,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Datacenter {
    datacenter: String,
    coordinates: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SelfConfig {
    node_name: String,
    datacenter: String,
}

#[derive(Deserialize)]
struct AgentSelf {
    #[serde(rename = "Config")]
    config: SelfConfig,
}

/// The coordinate of the first entry named `node` (in any case).
fn find(entries: &[Entry], node: &str) -> Option<Coordinate> {
    entries
        .iter()
        .find(|e| e.node.eq_ignore_ascii_case(node))
        .map(|e| e.coord.clone().into())
}

/// `muster rtt [-wan] NODE1 [NODE2]`.
pub(crate) async fn rtt(p: &Parsed) -> Result<i32> {
    let mut nodes = p.positional.clone();
    if nodes.is_empty() || nodes.len() > 2 {
        return Err(Error::UsageHelp(
            "One or two node names must be specified".into(),
        ));
    }
    let c = Client::new(p).map_err(|e| e.context("Error connecting to Consul agent"))?;
    if nodes.len() < 2 {
        let me: AgentSelf = c
            .get_json("/v1/agent/self")
            .await
            .map_err(|e| e.context("Unable to look up agent info"))?;
        nodes.push(if p.bool("wan") {
            format!("{}.{}", me.config.node_name, me.config.datacenter)
        } else {
            me.config.node_name
        });
    }
    let getting = |e: Error| e.context("Error getting coordinates");
    let (source, c1, c2) = if p.bool("wan") {
        let split = |n: &str| {
            let parts: Vec<&str> = n.split('.').collect();
            match parts[..] {
                [node, dc] => Some((node.to_string(), dc.to_string())),
                _ => None,
            }
        };
        let (Some((n1, dc1)), Some((n2, dc2))) = (split(&nodes[0]), split(&nodes[1])) else {
            return Err(Error::usage(
                "Node names must be specified as <node name>.<datacenter> with -wan",
            ));
        };
        let dcs: Vec<Datacenter> = c
            .get_json("/v1/coordinate/datacenters")
            .await
            .map_err(getting)?;
        let mut c1 = None;
        let mut c2 = None;
        for dc in dcs {
            if dc.datacenter == dc1 && c1.is_none() {
                c1 = find(&dc.coordinates, &n1);
            }
            if dc.datacenter == dc2 && c2.is_none() {
                c2 = find(&dc.coordinates, &n2);
            }
        }
        ("WAN", c1, c2)
    } else {
        let entries: Vec<Entry> = c.get_json("/v1/coordinate/nodes").await.map_err(getting)?;
        let c1 = find(&entries, &nodes[0]);
        let c2 = find(&entries, &nodes[1]);
        ("LAN", c1, c2)
    };
    let Some(c1) = c1 else {
        return Err(not_found(&nodes[0]));
    };
    let Some(c2) = c2 else {
        return Err(not_found(&nodes[1]));
    };
    let secs = c1.distance_to(&c2).ok_or_else(|| not_found(&nodes[1]))?;
    // Go's Duration: whole nanoseconds.
    let ms = (secs * 1.0e9).trunc() / 1.0e6;
    println!(
        "Estimated {} <-> {} rtt: {ms:.3} ms (using {source} coordinates)",
        nodes[0], nodes[1]
    );
    Ok(0)
}

fn not_found(node: &str) -> Error {
    Error::refused(format!("Could not find a coordinate for node {node:?}"))
}
