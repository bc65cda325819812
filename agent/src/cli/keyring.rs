//! `muster keyring` and `muster keygen`: the gossip encryption keys of the cluster, through
//! `/v1/operator/keyring`, with Consul's flags and output.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::client::Client;
use super::help::Flag;
use super::{Error, Result};
use crate::flags::Parsed;

pub(crate) const KEYGEN_USAGE: &str = "
Usage: muster keygen

  Generates a new encryption key that can be used to configure the
  agent to encrypt traffic. The output of this command is already
  in the proper format that the agent expects.
";

pub(crate) const KEYRING_USAGE: &str = "
Usage: muster keyring [options]

  Manages encryption keys used for gossip messages. Gossip encryption is
  optional. When enabled, this command may be used to examine active encryption
  keys in the cluster, add new keys, and remove old ones. When combined, this
  functionality provides the ability to perform key rotation cluster-wide,
  without disrupting the cluster.

  All variations of the keyring command return 0 if all nodes reply and there
  are no errors. If any node fails to reply or reports failure, the exit code
  will be 1.
";

pub(crate) const KEYRING_FLAGS: &[Flag] = &[
    Flag::value(
        "install",
        "string",
        "Install a new encryption key. This will broadcast the new key to all members in \
         the cluster.",
    ),
    Flag::bool("list", "List all keys currently in use within the cluster."),
    Flag::value(
        "relay-factor",
        "int",
        "Accepted for Consul's CLI; answers come straight back to the agent asked.",
    ),
    Flag::value(
        "remove",
        "string",
        "Remove the given key from the cluster. This operation may only be performed on \
         keys which are not currently the primary key.",
    ),
    Flag::value(
        "use",
        "string",
        "Change the primary encryption key, which is used to encrypt messages. The key \
         must already be installed before this operation can succeed.",
    ),
];

/// `muster keygen`: a fresh 32-byte key, base64, as `consul keygen` prints one.
pub(crate) fn keygen() -> i32 {
    println!("{}", crate::cluster::keyring::generate_key());
    0
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Pool {
    #[serde(rename = "WAN", default)]
    wan: bool,
    #[serde(default)]
    datacenter: String,
    #[serde(default)]
    segment: String,
    #[serde(default)]
    keys: BTreeMap<String, u32>,
    #[serde(default)]
    num_nodes: u32,
}

/// `muster keyring`: lists, installs, uses or removes a gossip key on every member.
pub(crate) async fn keyring(p: &Parsed) -> Result<i32> {
    let actions: Vec<(&str, Option<&str>)> = [
        ("install", p.value("install")),
        ("use", p.value("use")),
        ("remove", p.value("remove")),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_some_and(|v| !v.is_empty()))
    .collect();
    if actions.len() + usize::from(p.bool("list")) > 1 {
        return Err(Error::refused("Only a single action is allowed"));
    }
    if let Some(r) = p.value("relay-factor") {
        if !r.parse::<i64>().is_ok_and(|n| (0..=5).contains(&n)) {
            return Err(Error::refused(
                "Error parsing relay factor: Relay factor must be in range: [0, 5]",
            ));
        }
    }
    let client = Client::new(p).map_err(|e| e.context("Error connecting to Consul agent"))?;
    if p.bool("list") {
        println!("==> Gathering installed encryption keys...");
        let pools: Vec<Pool> = client
            .get_json("/v1/operator/keyring")
            .await
            .map_err(|e| e.context("error"))?;
        for pool in pools {
            let mut name = format!("{} (LAN)", pool.datacenter);
            if !pool.segment.is_empty() {
                name.push_str(&format!(" [{}]", pool.segment));
            }
            if pool.wan {
                name = "WAN".into();
            }
            println!("\n{name}:");
            for (key, n) in pool.keys {
                println!("  {key} [{n}/{}]", pool.num_nodes);
            }
        }
        return Ok(0);
    }
    let Some((action, Some(key))) = actions.first().copied() else {
        // Consul prints only the help when no action is given.
        eprintln!(
            "{}",
            super::help::command_help(KEYRING_USAGE, super::help::Http::Client, KEYRING_FLAGS)
        );
        return Ok(1);
    };
    let (banner, method) = match action {
        "install" => (
            "Installing new gossip encryption key...",
            reqwest::Method::POST,
        ),
        "use" => (
            "Changing primary gossip encryption key...",
            reqwest::Method::PUT,
        ),
        _ => ("Removing gossip encryption key...", reqwest::Method::DELETE),
    };
    println!("==> {banner}");
    let body = serde_json::to_vec(&serde_json::json!({ "Key": key }))?;
    client
        .call(method, "/v1/operator/keyring", Some(body))
        .await
        .map_err(|e| e.context("error"))?;
    Ok(0)
}
