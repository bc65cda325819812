//! `muster operator raft`: `list-peers`, `remove-peer` and `transfer-leader`, with Consul's
//! output and messages, over `/v1/operator/raft/*`.

use super::client::{qs, Client};
use super::error::{Error, Result};
use super::help::Flag;
use super::table::print_table;
use crate::flags::Parsed;

pub(crate) const OPERATOR_USAGE: &str = "
Usage: muster operator <subcommand> [options]

  Provides cluster-level tools for Muster operators, such as interacting with
  the Raft subsystem.
";

pub(crate) const RAFT_USAGE: &str = "
Usage: muster operator raft <subcommand> [options]

  The Raft operator command is used to interact with Muster's Raft subsystem.
";

pub(crate) const LIST_PEERS_USAGE: &str = "
Usage: muster operator raft list-peers [options]

  Displays the current Raft peer configuration.
";

pub(crate) const REMOVE_PEER_USAGE: &str = "
Usage: muster operator raft remove-peer [options]

  Remove the Muster server with given -id or -address from the Raft configuration.
  Refused when it is the last voter, or when the voters left alive would not make
  a quorum.
";

pub(crate) const REMOVE_PEER_FLAGS: &[Flag] = &[
    Flag::value(
        "address",
        "string",
        "The address to remove from the Raft configuration.",
    ),
    Flag::value(
        "id",
        "string",
        "The ID to remove from the Raft configuration.",
    ),
];

pub(crate) const TRANSFER_LEADER_USAGE: &str = "
Usage: muster operator raft transfer-leader [options]

  Transfer Raft leadership to another server: the one with the given -id, or the
  most caught-up voter.
";

pub(crate) const TRANSFER_LEADER_FLAGS: &[Flag] = &[Flag::value(
    "id",
    "string",
    "The ID of the server to transfer leadership to.",
)];

/// Refuses positional arguments, as Consul's operator commands do.
pub(crate) fn no_args(p: &Parsed) -> Result<()> {
    if p.positional.is_empty() {
        return Ok(());
    }
    Err(Error::UsageHelp(format!(
        "Error found unexpected args: [{}]",
        p.positional.join(" ")
    )))
}

/// `muster operator raft list-peers`: Consul's columns.
pub(crate) async fn list_peers(p: &Parsed) -> Result<i32> {
    no_args(p)?;
    let c = Client::new(p)?;
    let path = format!("/v1/operator/raft/configuration{}", qs(p, &[]));
    let config: muster_api::types::RaftConfiguration = c
        .get_json(&path)
        .await
        .map_err(|e| e.context("Error getting peers"))?;
    let mut rows = vec![["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]
        .map(String::from)
        .to_vec()];
    for s in config.servers {
        let state = if s.leader { "leader" } else { "follower" };
        rows.push(vec![
            s.node,
            s.id,
            s.address,
            state.into(),
            s.voter.to_string(),
            s.protocol_version,
        ]);
    }
    print_table(&rows);
    Ok(0)
}

/// `muster operator raft remove-peer -id ID | -address ADDR`.
pub(crate) async fn remove_peer(p: &Parsed) -> Result<i32> {
    no_args(p)?;
    let (key, value, what) = match (p.value("id"), p.value("address")) {
        (Some(id), None) if !id.is_empty() => ("id", id, "ID"),
        (None, Some(a)) if !a.is_empty() => ("address", a, "address"),
        (Some(_), Some(_)) => {
            return Err(Error::UsageHelp(
                "Only one of -id or -address may be given".into(),
            ))
        }
        _ => {
            return Err(Error::UsageHelp(
                "Must specify either -id or -address".into(),
            ))
        }
    };
    let c = Client::new(p)?;
    let path = format!(
        "/v1/operator/raft/peer{}",
        qs(p, &[(key, value.to_string())])
    );
    c.call(reqwest::Method::DELETE, &path, None)
        .await
        .map_err(|e| e.context("Error removing peer"))?;
    println!("Removed peer with {what} \"{value}\"");
    Ok(0)
}

/// `muster operator raft transfer-leader [-id ID]`.
pub(crate) async fn transfer_leader(p: &Parsed) -> Result<i32> {
    no_args(p)?;
    let c = Client::new(p)?;
    let extra: Vec<(&str, String)> = p
        .value("id")
        .filter(|id| !id.is_empty())
        .map(|id| ("id", id.to_string()))
        .into_iter()
        .collect();
    let path = format!("/v1/operator/raft/transfer-leader{}", qs(p, &extra));
    c.call(reqwest::Method::POST, &path, None)
        .await
        .map_err(|e| e.context("Error transferring leadership"))?;
    println!("Success");
    Ok(0)
}
