//! Applying one command to the state machine's tables, inside the caller's transaction.
//! Every change is recorded in [`Changes`], so watchers of exactly that data are woken.
//!
//! [`Apply`] carries one command's application; its methods are split by job: `kv`,
//! `catalog`, `session`, `txn` and `prepared`.

mod acl;
mod acl_auth;
mod autopilot;
mod catalog;
mod coordinate;
mod kv;
mod prepared;
mod restore;
mod session;
mod txn;

use std::cell::RefMut;
use std::collections::BTreeSet;

use super::error::Result;
use super::mem::{put_raw, span, Rows, TableId, WriteTxn};
use super::tables::*;
use crate::codec::{decode, encode};
use crate::model::{Command, CommandResult, Service, TxnOp};

pub(crate) use kv::rebuild_session_keys;
pub(crate) use restore::check_row;

/// What a batch of commands touched.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) kv: BTreeSet<String>,
    pub(crate) services: BTreeSet<String>,
    pub(crate) nodes: BTreeSet<String>,
    pub(crate) tables: BTreeSet<&'static str>,
    /// Keys whose lock was released by a session invalidation, with that session's lock
    /// delay in ms: [`super::LockDelays`] keeps them from being re-acquired until it passes.
    pub(crate) lock_delays: Vec<(String, u64)>,
    /// Servers were retired: the refused Raft IDs must be reloaded.
    pub(crate) retired: bool,
    /// A snapshot replaced every table: every watcher wakes.
    pub(crate) all: bool,
}

/// Records `ids` as retired servers (see [`RETIRED`]).
pub(crate) fn retire_servers(txn: &WriteTxn, ids: &[u64]) -> Result<()> {
    let mut t = txn.open_table(RETIRED)?;
    for id in ids {
        put_raw(&mut t, &id.to_string(), &[]);
    }
    Ok(())
}

/// The retired servers' Raft IDs.
pub(crate) fn retired_servers(t: &Rows) -> BTreeSet<u64> {
    t.keys().filter_map(|k| k.parse().ok()).collect()
}

pub(crate) fn apply_command(
    txn: &WriteTxn,
    index: u64,
    cmd: Command,
    ch: &mut Changes,
) -> Result<CommandResult> {
    let mut a = Apply {
        txn,
        index,
        ch,
        touched: false,
    };
    let success = match cmd {
        Command::KvSet {
            key,
            value,
            flags,
            cas,
            lock,
        } => a.kv_set(key, value, flags, cas, lock)?,
        Command::KvDelete { key, cas } => a.kv_delete(&key, cas)?,
        Command::KvDeleteTree { prefix } => a.kv_delete_tree(&prefix)?,
        Command::KvReapTombstones { upto } => a.kv_reap_tombstones(upto)?,
        Command::RetireServers { ids } => {
            retire_servers(txn, &ids)?;
            a.ch.retired = true;
            true
        }
        Command::Register(reg) => a.register(*reg)?,
        Command::LegacyRegister(reg) => a.register((*reg).into())?,
        Command::Deregister {
            node,
            service_id,
            check_id,
        } => a.deregister(&node, service_id.as_deref(), check_id.as_deref())?,
        Command::SessionCreate(s) => a.session_create(*s)?,
        Command::SessionDestroy { id } => a.session_destroy(&id)?,
        Command::PreparedQuerySet(q) => a.prepared_set(*q)?,
        Command::PreparedQueryDelete { id } => a.prepared_delete(&id)?,
        Command::Txn(ops) => return a.txn_result(ops),
        Command::LegacyTxn(ops) => return a.txn_result(ops.into_iter().map(Into::into).collect()),
        Command::CoordinateBatchUpdate(updates) => a.coordinate_batch_update(updates)?,
        Command::AclBootstrap { token, reset_index } => a.acl_bootstrap(*token, reset_index)?,
        Command::AclPolicySet(p) => a.acl_policy_set(*p)?,
        Command::AclPolicyDelete { id } => a.acl_delete(ACL_POLICIES, &id)?,
        Command::AclTokenSet(t) => a.acl_token_set(*t)?,
        Command::AclTokenDelete { accessor_id } => a.acl_token_delete(&accessor_id)?,
        Command::AclRoleSet(r) => a.acl_role_set(*r)?,
        Command::AclRoleDelete { id } => a.acl_delete(ACL_ROLES, &id)?,
        Command::AclAuthMethodSet(m) => a.acl_auth_method_set(*m)?,
        Command::AclAuthMethodDelete { name } => a.acl_auth_method_delete(&name)?,
        Command::AclBindingRuleSet(r) => a.acl_binding_rule_set(*r)?,
        Command::AclBindingRuleDelete { id } => a.acl_delete(ACL_BINDING_RULES, &id)?,
        Command::SnapshotRestore(state) => a.snapshot_restore(*state)?,
        Command::AutopilotSetConfig { config, cas } => a.autopilot_set(*config, cas)?,
        Command::SnapshotRestoreChunk { id, seq, data } => a.restore_chunk(&id, seq, &data)?,
        Command::SnapshotRestoreCommit { id, chunks } => a.restore_commit(&id, chunks)?,
        Command::SnapshotRestoreDiscard { id } => a.restore_discard(id.as_deref())?,
        Command::SnapshotRestoreArchive { id, chunks, sha256 } => {
            a.restore_archive(&id, chunks, &sha256)?
        }
    };
    Ok(CommandResult {
        index,
        success,
        txn: None,
    })
}

impl Apply<'_> {
    /// Applies a transaction: every operation or none.
    fn txn_result(&mut self, ops: Vec<TxnOp>) -> Result<CommandResult> {
        let outcome = self.txn(ops)?;
        Ok(CommandResult {
            index: self.index,
            success: outcome.errors.is_empty(),
            txn: Some(outcome),
        })
    }
}

fn get<T: serde::de::DeserializeOwned>(t: &Rows, key: &str) -> Result<Option<T>> {
    match t.get(key) {
        Some(v) => Ok(Some(decode(v)?)),
        None => Ok(None),
    }
}

fn put<T: serde::Serialize>(t: &mut Rows, key: &str, v: &T) -> Result<()> {
    put_raw(t, key, &encode(v)?);
    Ok(())
}

struct Apply<'a> {
    txn: &'a WriteTxn,
    index: u64,
    ch: &'a mut Changes,
    /// Set by any table change; tells register/deregister whether their node changed.
    touched: bool,
}

impl Apply<'_> {
    fn table(&self, t: TableId) -> Result<RefMut<'_, Rows>> {
        self.txn.open_table(t)
    }

    fn bump(&mut self, name: &'static str) -> Result<()> {
        self.txn.indexes()?.insert(name.to_string(), self.index);
        self.ch.tables.insert(name);
        self.touched = true;
        Ok(())
    }

    /// Marks everything about one node (record, services, checks) as changed.
    fn bump_node(&mut self, node: &str) -> Result<()> {
        self.txn.indexes()?.insert(node_index(node), self.index);
        self.ch.nodes.insert(node.to_string());
        Ok(())
    }

    fn bump_service(&mut self, name: &str) -> Result<()> {
        self.txn.indexes()?.insert(svc_index(name), self.index);
        self.ch.services.insert(name.to_string());
        Ok(())
    }

    /// A node-level change affects every service instance on the node.
    fn bump_node_services(&mut self, node: &str) -> Result<()> {
        let names: Vec<String> = {
            let t = self.table(SERVICES)?;
            let (lo, hi) = node_range(node);
            let mut names = Vec::new();
            for (_, v) in span(&t, lo.as_str(), Some(hi.as_str())) {
                names.push(decode::<Service>(v)?.name);
            }
            names
        };
        for n in names {
            self.bump_service(&n)?;
        }
        Ok(())
    }
}
