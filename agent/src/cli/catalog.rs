//! `muster catalog datacenters|nodes|services`: what the catalog holds, in Consul's output.

use std::collections::BTreeMap;

use serde_json::Value;

use super::client::{qs, Client};
use super::error::{Error, Result};
use super::help::Flag;
use super::table::{print_table, tab_pairs};
use crate::flags::Parsed;

pub(crate) const CATALOG_USAGE: &str = "
Usage: muster catalog <subcommand> [options] [args]

  This command has subcommands for interacting with the catalog. The catalog
  holds the nodes and services of a datacenter.

  List all datacenters:

      $ muster catalog datacenters

  List all nodes:

      $ muster catalog nodes

  List all services:

      $ muster catalog services

  For more examples, ask for subcommand help or view the documentation.
";

pub(crate) const DATACENTERS_USAGE: &str = "
Usage: muster catalog datacenters [options]

  Retrieves the list of all known datacenters.
";

pub(crate) const NODES_USAGE: &str = "
Usage: muster catalog nodes [options]

  Retrieves the list nodes registered in a given datacenter. By default, the
  datacenter of the local agent is queried.

      $ muster catalog nodes
      $ muster catalog nodes -detailed
      $ muster catalog nodes -service=web
      $ muster catalog nodes -node-meta=\"foo=bar\"
";

pub(crate) const NODES_FLAGS: &[Flag] = &[
    Flag::bool(
        "detailed",
        "Output detailed information about the nodes including their addresses and \
         metadata.",
    ),
    Flag::value("filter", "string", "Filter to use with the request"),
    Flag::value(
        "near",
        "string",
        "Node name to sort the node list in ascending order based on estimated round-trip \
         time from that node. Passing \"_agent\" will use this agent's node for sorting.",
    ),
    Flag::multi(
        "node-meta",
        "key=value",
        "Metadata to filter nodes with the given key=value pairs. This flag may be \
         specified multiple times to filter on multiple sources of metadata.",
    ),
    Flag::value(
        "service",
        "id or name",
        "Service id or name to filter nodes. Only nodes which are providing the given \
         service will be returned.",
    ),
];

pub(crate) const SERVICES_USAGE: &str = "
Usage: muster catalog services [options]

  Retrieves the list services registered in a given datacenter. By default, the
  datacenter of the local agent is queried.

      $ muster catalog services
      $ muster catalog services -tags
      $ muster catalog services -node=web
      $ muster catalog services -node-meta=\"foo=bar\"
";

pub(crate) const SERVICES_FLAGS: &[Flag] = &[
    Flag::value(
        "node",
        "id or name",
        "Node id or name for which to list services.",
    ),
    Flag::multi(
        "node-meta",
        "key=value",
        "Metadata to filter nodes with the given key=value pairs. If specified, only \
         services running on nodes matching the given metadata will be returned. This flag \
         may be specified multiple times to filter on multiple sources of metadata.",
    ),
    Flag::bool(
        "tags",
        "Display each service's tags as a comma-separated list beside each service entry.",
    ),
];

/// Consul's check that a command given no arguments got none.
fn no_arguments(p: &Parsed) -> Result<()> {
    match p.positional.len() {
        0 => Ok(()),
        n => Err(Error::usage(format!(
            "Too many arguments (expected 0, got {n})"
        ))),
    }
}

/// The `-node-meta key=value` flags as `node-meta=key:value` query parameters.
fn node_meta(p: &Parsed) -> Result<Vec<(&'static str, String)>> {
    p.all("node-meta")
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok(("node-meta", format!("{k}:{v}"))),
            None => Err(Error::usage(format!(
                "invalid value {kv:?} for flag -node-meta: Missing \"=\" value in argument: {kv}"
            ))),
        })
        .collect()
}

fn connect(p: &Parsed) -> Result<Client> {
    Client::new(p).map_err(|e| e.context("Error connecting to Consul agent"))
}

/// `catalog datacenters`: one datacenter a line.
pub(crate) async fn datacenters(p: &Parsed) -> Result<i32> {
    no_arguments(p)?;
    let dcs: Vec<String> = connect(p)?
        .get_json("/v1/catalog/datacenters")
        .await
        .map_err(|e| e.context("Error listing datacenters"))?;
    for dc in dcs {
        println!("{dc}");
    }
    Ok(0)
}

/// `key=value` pairs of a JSON object, sorted by key and joined by `, `.
fn map_to_kv(v: &Value) -> String {
    let mut pairs: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    pairs.join(", ")
}

/// `catalog nodes`: the nodes (those providing `-service`, with `-service`), as Consul's
/// table; a node with several instances of the service is listed once per instance.
pub(crate) async fn nodes(p: &Parsed) -> Result<i32> {
    no_arguments(p)?;
    let mut extra = node_meta(p)?;
    for k in ["near", "filter"] {
        if let Some(v) = p.value(k).filter(|v| !v.is_empty()) {
            extra.push((k, v.to_string()));
        }
    }
    let c = connect(p)?;
    let (path, step) = match p.value("service").filter(|s| !s.is_empty()) {
        Some(s) => (
            format!("/v1/catalog/service/{s}{}", qs(p, &extra)),
            "Error listing nodes for service",
        ),
        None => (
            format!("/v1/catalog/nodes{}", qs(p, &extra)),
            "Error listing nodes",
        ),
    };
    let list: Option<Vec<Value>> = c.get_json(&path).await.map_err(|e| e.context(step))?;
    let list = list.unwrap_or_default();
    if list.is_empty() {
        eprintln!("No nodes match the given query - try expanding your search.");
        return Ok(0);
    }
    let detailed = p.bool("detailed");
    let mut header = vec!["Node", "ID", "Address", "DC"];
    if detailed {
        header.extend(["TaggedAddresses", "Meta"]);
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for n in &list {
        let s = |k: &str| n[k].as_str().unwrap_or("").to_string();
        let id = s("ID");
        let mut row = vec![s("Node")];
        if detailed {
            row.extend([id, s("Address"), s("Datacenter")]);
            // A service entry names the node's metadata `NodeMeta`.
            let meta = n.get("Meta").unwrap_or(&n["NodeMeta"]);
            row.extend([map_to_kv(&n["TaggedAddresses"]), map_to_kv(meta)]);
        } else {
            // Only the ID's first group: enough to tell nodes apart.
            let short = match id.find('-') {
                Some(i) if i > 0 => id[..i].to_string(),
                _ => id,
            };
            row.extend([short, s("Address"), s("Datacenter")]);
        }
        rows.push(row);
    }
    print_table(&rows);
    Ok(0)
}

/// `catalog services`: service names (of `-node` only, with `-node`), sorted, with `-tags`
/// their sorted tags beside them.
pub(crate) async fn services(p: &Parsed) -> Result<i32> {
    no_arguments(p)?;
    let extra = node_meta(p)?;
    let c = connect(p)?;
    let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match p.value("node").filter(|n| !n.is_empty()) {
        Some(node) => {
            let path = format!("/v1/catalog/node/{node}{}", qs(p, &extra));
            let (code, body) = c
                .send(reqwest::Method::GET, &path, None)
                .await
                .map_err(|e| e.context("Error listing services for node"))?;
            // An unknown node has no services (Consul answers `null`).
            if code != 404 {
                if !(200..300).contains(&code) {
                    return Err(
                        Error::status(code, &body).context("Error listing services for node")
                    );
                }
                let v: Value = serde_json::from_slice(&body)
                    .map_err(|e| Error::from(e).context("Error listing services for node"))?;
                for s in v["Services"]
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.values())
                {
                    let tags = s["Tags"].as_array().into_iter().flatten();
                    services
                        .entry(s["Service"].as_str().unwrap_or("").to_string())
                        .or_default()
                        .extend(tags.filter_map(|t| t.as_str().map(String::from)));
                }
            }
        }
        None => {
            let all: Option<BTreeMap<String, Option<Vec<String>>>> = c
                .get_json(&format!("/v1/catalog/services{}", qs(p, &extra)))
                .await
                .map_err(|e| e.context("Error listing services"))?;
            for (name, tags) in all.unwrap_or_default() {
                services.insert(name, tags.unwrap_or_default());
            }
        }
    }
    if services.is_empty() {
        eprintln!("No services match the given query - try expanding your search.");
        return Ok(0);
    }
    if p.bool("tags") {
        let rows: Vec<(String, String)> = services
            .into_iter()
            .map(|(name, mut tags)| {
                tags.sort();
                (name, tags.join(","))
            })
            .collect();
        // Consul trims the block as a whole: only the last line loses its trailing blanks.
        let text = tab_pairs(&rows).join("\n");
        println!("{}", text.trim());
    } else {
        for name in services.keys() {
            println!("{name}");
        }
    }
    Ok(0)
}
