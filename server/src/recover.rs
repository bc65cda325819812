//! Outage recovery: a server whose peers are gone for good becomes a cluster of one, keeping
//! all its data. Runs offline, on a stopped server's data dir.
//!
//! Consul asks for a hand-written `peers.json` on every survivor. Here one command rewrites
//! the Raft membership in place: it appends a membership entry naming only this server, in a
//! term above any it has seen, and votes for itself in that term. On the next start the
//! server is the only voter, elects itself and commits the entry; servers that join later are
//! added as voters as usual.
//!
//! The replaced members are retired: their Raft IDs go into the state machine (directly here,
//! and through a log entry for every server that joins later), and Raft requests from them
//! are refused. A lost server that turns up with its old data dir, alone or together with
//! another (which could elect each other in the old membership), can then neither take over
//! nor overwrite the recovered log: it is told it was retired, sets its Raft data aside and
//! rejoins as a new member.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership, RaftLogReader};

use crate::model::Command;
use crate::raft::log_store::{get_meta, LogStore, IDENTITY};
use crate::raft::state_machine::read_applied;
use crate::raft::types::{Batch, Entry, LogId, NodeId, Vote};
use crate::server::data_dir::{open_db, Identity};
use crate::store::tables::{file_table, RETIRED};
use crate::{Error, Result};

/// What a recovery found and did.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub node_name: String,
    /// The server RPC address kept for this server.
    pub address: String,
    /// The voters of the membership that was replaced.
    pub old_voters: Vec<String>,
    /// Index and term of the new membership entry.
    pub index: u64,
    pub term: u64,
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

/// Makes the server whose data dir is `data_dir` the sole voter of its cluster.
pub async fn recover_sole_server(data_dir: &Path) -> Result<Recovered> {
    let raft_path = data_dir.join("raft.redb");
    if !raft_path.exists() {
        return Err(Error::InvalidRequest(format!(
            "{} holds no Raft state (no raft.redb): nothing to recover",
            data_dir.display()
        )));
    }
    // redb panics on some damaged files: named errors instead.
    let (log_db, ident) = crate::raft::files::guarded(&raft_path, || {
        let db = open_db(&raft_path, 4 << 20)?;
        let ident: Option<Identity> = get_meta(&db, IDENTITY).map_err(storage)?;
        Ok((db, ident))
    })?;
    let ident: Identity = ident.ok_or_else(|| {
        Error::InvalidRequest(format!(
            "{} was never a server's data dir: nothing to recover",
            data_dir.display()
        ))
    })?;
    let id: NodeId = ident.node_id;
    let mut logs = LogStore::new(log_db, &raft_path).map_err(storage)?;
    let state = logs.get_log_state().await.map_err(storage)?;
    let Some(last) = state.last_log_id else {
        return Err(Error::InvalidRequest(format!(
            "{} holds no Raft log: this server never joined a cluster, nothing to recover",
            data_dir.display()
        )));
    };
    let from = state.last_purged_log_id.map_or(0, |l| l.index + 1);
    let current = latest_membership(&mut logs, from, last, data_dir).await?;
    let old_voters: Vec<String> = current
        .voter_ids()
        .map(|v| {
            current
                .get_node(&v)
                .map_or_else(|| v.to_string(), |n| n.addr.clone())
        })
        .collect();
    let node = current.get_node(&id).cloned().ok_or_else(|| {
        Error::InvalidRequest(format!(
            "node {} is not in its cluster's membership ({}): nothing to recover from here",
            ident.node_name,
            old_voters.join(", ")
        ))
    })?;
    let vote: Option<Vote> = logs.read_vote().await.map_err(storage)?;
    let term = vote
        .map_or(0, |v| v.leader_id().term)
        .max(last.leader_id.term)
        + 1;
    let retired: Vec<NodeId> = current
        .nodes()
        .map(|(n, _)| *n)
        .filter(|n| *n != id)
        .collect();
    let membership = Membership::new(
        vec![BTreeSet::from([id])],
        BTreeMap::from([(id, node.clone())]),
    );
    let leader = CommittedLeaderId::new(term, id);
    let entries = vec![
        Entry {
            log_id: LogId::new(leader, last.index + 1),
            payload: EntryPayload::Membership(membership),
        },
        Entry {
            log_id: LogId::new(leader, last.index + 2),
            payload: EntryPayload::Normal(Batch::new(vec![Command::RetireServers {
                ids: retired.clone(),
            }])),
        },
    ];
    // In the state machine at once too: the log entry applies only once this server leads.
    let sm_path = data_dir.join("state.redb");
    if sm_path.exists() {
        let sm_db = open_db(&sm_path, 1 << 20)?;
        let mut txn = sm_db.begin_write().map_err(storage)?;
        txn.set_durability(redb::Durability::Immediate);
        {
            let mut t = txn.open_table(file_table(RETIRED)).map_err(storage)?;
            for id in &retired {
                t.insert(id.to_string().as_str(), [].as_slice())
                    .map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
    }
    logs.append_durable(entries).await.map_err(storage)?;
    logs.save_vote(&Vote::new(term, id))
        .await
        .map_err(storage)?;
    Ok(Recovered {
        node_name: ident.node_name.clone(),
        address: node.addr,
        old_voters,
        index: last.index + 1,
        term,
    })
}

/// The membership in force at the end of the log: the last membership entry in it, else the
/// one the state machine applied (the log before it was purged into a snapshot).
async fn latest_membership(
    logs: &mut LogStore,
    from: u64,
    last: LogId,
    data_dir: &Path,
) -> Result<Membership<NodeId, BasicNode>> {
    let entries = logs
        .try_get_log_entries(from..=last.index)
        .await
        .map_err(storage)?;
    if let Some(m) = entries.into_iter().rev().find_map(|e| match e.payload {
        EntryPayload::Membership(m) => Some(m),
        _ => None,
    }) {
        return Ok(m);
    }
    let sm_path = data_dir.join("state.redb");
    if !sm_path.exists() {
        return Err(Error::InvalidRequest(format!(
            "{} has no state.redb, and its log holds no membership: cannot tell the cluster's \
             servers",
            data_dir.display()
        )));
    }
    let sm_db = open_db(&sm_path, 1 << 20)?;
    let (_, stored) = read_applied(&sm_db).map_err(storage)?;
    Ok(stored.membership().clone())
}
