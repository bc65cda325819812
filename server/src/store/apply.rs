//! Applying one command to the state machine's tables, inside the caller's transaction.

use redb::{ReadableTable, Table, WriteTransaction};

use super::tables::*;
use crate::model::{Check, Command, CommandResult, KvEntry, Node, Registration, Service};
use crate::raft::types::{decode, encode, sto_err, StorageError};

type R<T> = Result<T, StorageError>;

pub(crate) fn apply_command(txn: &WriteTransaction, index: u64, cmd: Command) -> R<CommandResult> {
    let success = match cmd {
        Command::KvSet {
            key,
            value,
            flags,
            cas,
        } => kv_set(txn, index, key, value, flags, cas)?,
        Command::KvDelete { key, cas } => kv_delete(txn, index, &key, cas)?,
        Command::KvDeleteTree { prefix } => kv_delete_tree(txn, index, &prefix)?,
        Command::Register(reg) => register(txn, index, *reg)?,
        Command::Deregister {
            node,
            service_id,
            check_id,
        } => deregister(
            txn,
            index,
            &node,
            service_id.as_deref(),
            check_id.as_deref(),
        )?,
    };
    Ok(CommandResult { index, success })
}

fn bump(txn: &WriteTransaction, table: &str, index: u64) -> R<()> {
    let mut t = txn.open_table(INDEXES).map_err(sto_err)?;
    t.insert(table, index).map_err(sto_err)?;
    Ok(())
}

fn get<T: serde::de::DeserializeOwned>(t: &Table<&str, &[u8]>, key: &str) -> R<Option<T>> {
    match t.get(key).map_err(sto_err)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

fn kv_set(
    txn: &WriteTransaction,
    index: u64,
    key: String,
    value: Vec<u8>,
    flags: u64,
    cas: Option<u64>,
) -> R<bool> {
    let mut t = txn.open_table(KV).map_err(sto_err)?;
    let old: Option<KvEntry> = get(&t, &key)?;
    if let Some(cas) = cas {
        let current = old.as_ref().map_or(0, |e| e.modify_index);
        if current != cas {
            return Ok(false);
        }
    }
    let entry = match old {
        Some(old) => KvEntry {
            value,
            flags,
            modify_index: index,
            ..old
        },
        None => KvEntry {
            key: key.clone(),
            value,
            flags,
            session: None,
            create_index: index,
            modify_index: index,
            lock_index: 0,
        },
    };
    t.insert(key.as_str(), encode(&entry)?.as_slice())
        .map_err(sto_err)?;
    drop(t);
    bump(txn, IDX_KV, index)?;
    Ok(true)
}

fn kv_delete(txn: &WriteTransaction, index: u64, key: &str, cas: Option<u64>) -> R<bool> {
    let mut t = txn.open_table(KV).map_err(sto_err)?;
    if let Some(cas) = cas {
        let old: Option<KvEntry> = get(&t, key)?;
        match old {
            Some(e) if e.modify_index == cas => {}
            // Consul: deleting a missing key with cas=0 succeeds; anything else fails.
            None if cas == 0 => return Ok(true),
            _ => return Ok(false),
        }
    }
    let existed = t.remove(key).map_err(sto_err)?.is_some();
    drop(t);
    if existed {
        bump(txn, IDX_KV, index)?;
    }
    Ok(true)
}

fn kv_delete_tree(txn: &WriteTransaction, index: u64, prefix: &str) -> R<bool> {
    let mut t = txn.open_table(KV).map_err(sto_err)?;
    let mut removed = 0usize;
    t.retain_in::<&str, _>(prefix.., |k, _| {
        if k.starts_with(prefix) {
            removed += 1;
            false
        } else {
            true
        }
    })
    .map_err(sto_err)?;
    drop(t);
    if removed > 0 {
        bump(txn, IDX_KV, index)?;
    }
    Ok(true)
}

fn register(txn: &WriteTransaction, index: u64, reg: Registration) -> R<bool> {
    let Registration {
        node,
        skip_node_update,
        service,
        checks,
    } = reg;
    {
        let mut nodes = txn.open_table(NODES).map_err(sto_err)?;
        let old: Option<Node> = get(&nodes, &node.name)?;
        let write = match &old {
            None => true,
            Some(_) if skip_node_update => false,
            Some(o) => {
                o.id != node.id
                    || o.address != node.address
                    || o.datacenter != node.datacenter
                    || o.tagged_addresses != node.tagged_addresses
                    || o.meta != node.meta
            }
        };
        if write {
            let create_index = old.map_or(index, |o| o.create_index);
            let n = Node {
                create_index,
                modify_index: index,
                ..node.clone()
            };
            nodes
                .insert(node.name.as_str(), encode(&n)?.as_slice())
                .map_err(sto_err)?;
            drop(nodes);
            bump(txn, IDX_NODES, index)?;
        }
    }
    let mut service_name = None;
    if let Some(svc) = service {
        let mut t = txn.open_table(SERVICES).map_err(sto_err)?;
        let key = node_key(&node.name, &svc.id);
        let old: Option<Service> = get(&t, &key)?;
        let unchanged = old.as_ref().is_some_and(|o| {
            Service {
                create_index: 0,
                modify_index: 0,
                ..o.clone()
            } == Service {
                create_index: 0,
                modify_index: 0,
                ..svc.clone()
            }
        });
        service_name = Some((svc.id.clone(), svc.name.clone()));
        if !unchanged {
            let create_index = old.map_or(index, |o| o.create_index);
            let s = Service {
                create_index,
                modify_index: index,
                ..svc
            };
            t.insert(key.as_str(), encode(&s)?.as_slice())
                .map_err(sto_err)?;
            drop(t);
            bump(txn, IDX_SERVICES, index)?;
        }
    }
    if !checks.is_empty() {
        let services = txn.open_table(SERVICES).map_err(sto_err)?;
        let mut t = txn.open_table(CHECKS).map_err(sto_err)?;
        let mut changed = false;
        for mut c in checks {
            c.node = node.name.clone();
            if c.service_id.is_empty() {
                if let Some((id, _)) = &service_name {
                    if c.service_id.is_empty() && c.id.starts_with("service:") {
                        c.service_id = id.clone();
                    }
                }
            }
            if !c.service_id.is_empty() {
                let svc: Option<Service> =
                    match services.get(node_key(&node.name, &c.service_id).as_str()) {
                        Ok(Some(v)) => Some(decode(v.value())?),
                        Ok(None) => None,
                        Err(e) => return Err(sto_err(e)),
                    };
                c.service_name = svc.map(|s| s.name).unwrap_or_default();
            }
            let key = node_key(&node.name, &c.id);
            let old: Option<Check> = get(&t, &key)?;
            let unchanged = old.as_ref().is_some_and(|o| {
                Check {
                    create_index: 0,
                    modify_index: 0,
                    ..o.clone()
                } == Check {
                    create_index: 0,
                    modify_index: 0,
                    ..c.clone()
                }
            });
            if !unchanged {
                let create_index = old.map_or(index, |o| o.create_index);
                let c = Check {
                    create_index,
                    modify_index: index,
                    ..c
                };
                t.insert(key.as_str(), encode(&c)?.as_slice())
                    .map_err(sto_err)?;
                changed = true;
            }
        }
        drop(t);
        drop(services);
        if changed {
            bump(txn, IDX_CHECKS, index)?;
        }
    }
    Ok(true)
}

fn remove_range(t: &mut Table<&str, &[u8]>, node: &str, pred: impl Fn(&[u8]) -> bool) -> R<usize> {
    let (lo, hi) = node_range(node);
    let mut n = 0;
    t.retain_in::<&str, _>(lo.as_str()..hi.as_str(), |_, v| {
        if pred(v) {
            n += 1;
            false
        } else {
            true
        }
    })
    .map_err(sto_err)?;
    Ok(n)
}

fn deregister(
    txn: &WriteTransaction,
    index: u64,
    node: &str,
    service_id: Option<&str>,
    check_id: Option<&str>,
) -> R<bool> {
    match (service_id, check_id) {
        (Some(sid), _) => {
            let removed = {
                let mut t = txn.open_table(SERVICES).map_err(sto_err)?;
                let r = t
                    .remove(node_key(node, sid).as_str())
                    .map_err(sto_err)?
                    .is_some();
                r
            };
            let checks_removed = {
                let mut t = txn.open_table(CHECKS).map_err(sto_err)?;
                remove_range(&mut t, node, |v| {
                    decode::<Check>(v)
                        .map(|c| c.service_id == sid)
                        .unwrap_or(false)
                })?
            };
            if removed {
                bump(txn, IDX_SERVICES, index)?;
            }
            if checks_removed > 0 {
                bump(txn, IDX_CHECKS, index)?;
            }
        }
        (None, Some(cid)) => {
            let removed = {
                let mut t = txn.open_table(CHECKS).map_err(sto_err)?;
                let r = t
                    .remove(node_key(node, cid).as_str())
                    .map_err(sto_err)?
                    .is_some();
                r
            };
            if removed {
                bump(txn, IDX_CHECKS, index)?;
            }
        }
        (None, None) => {
            let removed = {
                let mut t = txn.open_table(NODES).map_err(sto_err)?;
                let r = t.remove(node).map_err(sto_err)?.is_some();
                r
            };
            let s = {
                let mut t = txn.open_table(SERVICES).map_err(sto_err)?;
                remove_range(&mut t, node, |_| true)?
            };
            let c = {
                let mut t = txn.open_table(CHECKS).map_err(sto_err)?;
                remove_range(&mut t, node, |_| true)?
            };
            if removed {
                bump(txn, IDX_NODES, index)?;
            }
            if s > 0 {
                bump(txn, IDX_SERVICES, index)?;
            }
            if c > 0 {
                bump(txn, IDX_CHECKS, index)?;
            }
        }
    }
    Ok(true)
}
