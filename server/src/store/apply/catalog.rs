//! Catalog writes: registering and deregistering nodes, services and checks, with the index
//! rows and the watchers they concern.

use super::{get, put, Apply};
use crate::codec::decode;
use crate::model::{Check, HealthStatus, Node, Registration, Service};
use crate::store::error::Result;
use crate::store::mem::{put_raw, retain_in};
use crate::store::tables::*;

impl Apply<'_> {
    pub(super) fn register(&mut self, reg: Registration) -> Result<bool> {
        let node = reg.node.name.clone();
        self.touched = false;
        let ok = self.register_inner(reg)?;
        if self.touched {
            self.bump_node(&node)?;
        }
        Ok(ok)
    }

    fn register_inner(&mut self, reg: Registration) -> Result<bool> {
        let Registration {
            node,
            skip_node_update,
            service,
            checks,
        } = reg;
        // Validate before writing anything: a check must belong to a service the node has or
        // is registering now (Consul refuses the whole registration otherwise).
        for c in &checks {
            let sid = &c.service_id;
            let ok = sid.is_empty()
                || service.as_ref().is_some_and(|s| &s.id == sid)
                || self
                    .table(SERVICES)?
                    .get(node_key(&node.name, sid).as_str())
                    .is_some();
            if !ok {
                return Ok(false);
            }
        }
        let old: Option<Node> = get(&*self.table(NODES)?, &node.name)?;
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
            let create_index = old.map_or(self.index, |o| o.create_index);
            let n = Node {
                create_index,
                modify_index: self.index,
                ..node.clone()
            };
            put(&mut *self.table(NODES)?, &node.name, &n)?;
            self.bump(IDX_NODES)?;
            self.bump_node_services(&node.name)?;
        }
        if let Some(svc) = service {
            let key = node_key(&node.name, &svc.id);
            let old: Option<Service> = get(&*self.table(SERVICES)?, &key)?;
            let same = |o: &Service| {
                Service {
                    create_index: 0,
                    modify_index: 0,
                    ..o.clone()
                } == Service {
                    create_index: 0,
                    modify_index: 0,
                    ..svc.clone()
                }
            };
            if !old.as_ref().is_some_and(same) {
                if let Some(o) = old.as_ref().filter(|o| o.name != svc.name) {
                    // Renamed in place: drop the old name's index row.
                    let k = format!("{}\0{}", o.name, key);
                    self.table(SERVICE_NAMES)?.remove(k.as_str());
                    self.bump_service(&o.name.clone())?;
                }
                let create_index = old.map_or(self.index, |o| o.create_index);
                let s = Service {
                    create_index,
                    modify_index: self.index,
                    ..svc.clone()
                };
                put(&mut *self.table(SERVICES)?, &key, &s)?;
                let name_key = format!("{}\0{}", svc.name, key);
                put_raw(&mut *self.table(SERVICE_NAMES)?, &name_key, &[]);
                self.bump(IDX_SERVICES)?;
                self.bump_service(&svc.name)?;
            }
        }
        let mut critical = Vec::new();
        for mut c in checks {
            c.node = node.name.clone();
            c.service_name = if c.service_id.is_empty() {
                String::new()
            } else {
                get::<Service>(
                    &*self.table(SERVICES)?,
                    &node_key(&node.name, &c.service_id),
                )?
                .map(|s| s.name)
                .unwrap_or_default()
            };
            let key = node_key(&node.name, &c.id);
            let old: Option<Check> = get(&*self.table(CHECKS)?, &key)?;
            let same = |o: &Check| {
                Check {
                    create_index: 0,
                    modify_index: 0,
                    ..o.clone()
                } == Check {
                    create_index: 0,
                    modify_index: 0,
                    ..c.clone()
                }
            };
            if old.as_ref().is_some_and(same) {
                continue;
            }
            if c.status == HealthStatus::Critical {
                critical.push(c.id.clone());
            }
            let create_index = old.map_or(self.index, |o| o.create_index);
            let c = Check {
                create_index,
                modify_index: self.index,
                ..c
            };
            put(&mut *self.table(CHECKS)?, &key, &c)?;
            self.bump(IDX_CHECKS)?;
            if c.service_name.is_empty() {
                self.bump_node_services(&node.name)?;
            } else {
                self.bump_service(&c.service_name)?;
            }
        }
        for check in critical {
            self.invalidate_sessions_on_check(&node.name, &check)?;
        }
        Ok(true)
    }

    /// Removes a node's services (all, or those matching `only`), with their name index rows.
    fn remove_services(&mut self, node: &str, only: Option<&str>) -> Result<()> {
        let (lo, hi) = node_range(node);
        let mut gone: Vec<Service> = Vec::new();
        retain_in(&mut *self.table(SERVICES)?, &lo, Some(&hi), |_, v| {
            let Ok(s) = decode::<Service>(v) else {
                return true;
            };
            if only.is_some_and(|id| id != s.id) {
                return true;
            }
            gone.push(s);
            false
        });
        if gone.is_empty() {
            return Ok(());
        }
        for s in &gone {
            let k = format!("{}\0{}", s.name, node_key(node, &s.id));
            self.table(SERVICE_NAMES)?.remove(k.as_str());
            self.bump_service(&s.name)?;
        }
        self.bump(IDX_SERVICES)
    }

    /// Removes a node's checks matching `pred`; returns the IDs removed.
    fn remove_checks(&mut self, node: &str, pred: impl Fn(&Check) -> bool) -> Result<Vec<Check>> {
        let (lo, hi) = node_range(node);
        let mut gone = Vec::new();
        retain_in(
            &mut *self.table(CHECKS)?,
            &lo,
            Some(&hi),
            |_, v| match decode::<Check>(v) {
                Ok(c) if pred(&c) => {
                    gone.push(c);
                    false
                }
                _ => true,
            },
        );
        if !gone.is_empty() {
            self.bump(IDX_CHECKS)?;
        }
        Ok(gone)
    }

    pub(super) fn deregister(
        &mut self,
        node: &str,
        service_id: Option<&str>,
        check_id: Option<&str>,
    ) -> Result<bool> {
        self.touched = false;
        let ok = self.deregister_inner(node, service_id, check_id)?;
        if self.touched {
            self.bump_node(node)?;
        }
        Ok(ok)
    }

    fn deregister_inner(
        &mut self,
        node: &str,
        service_id: Option<&str>,
        check_id: Option<&str>,
    ) -> Result<bool> {
        match (service_id, check_id) {
            (Some(sid), _) => {
                let checks = self.remove_checks(node, |c| c.service_id == sid)?;
                self.remove_services(node, Some(sid))?;
                for c in checks {
                    self.invalidate_sessions_on_check(node, &c.id)?;
                }
            }
            (None, Some(cid)) => {
                let checks = self.remove_checks(node, |c| c.id == cid)?;
                for c in &checks {
                    if c.service_name.is_empty() {
                        self.bump_node_services(node)?;
                    } else {
                        self.bump_service(&c.service_name)?;
                    }
                    self.invalidate_sessions_on_check(node, &c.id)?;
                }
            }
            (None, None) => {
                self.remove_checks(node, |_| true)?;
                self.remove_services(node, None)?;
                if self.table(NODES)?.remove(node).is_some() {
                    self.bump(IDX_NODES)?;
                }
                self.remove_coordinate(node)?;
                // A node that is gone takes its sessions with it.
                let ids: Vec<String> = self
                    .sessions()?
                    .into_iter()
                    .filter(|s| s.node == node)
                    .map(|s| s.id)
                    .collect();
                for id in ids {
                    self.session_destroy(&id)?;
                }
            }
        }
        Ok(true)
    }
}
