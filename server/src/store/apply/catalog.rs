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

    /// Removes a node's services (all, or the one `only` names), with their name index rows.
    fn remove_services(&mut self, node: &str, only: Option<&str>) -> Result<()> {
        let mut gone: Vec<Service> = Vec::new();
        match only {
            // One service is one row: no scan of the node's others.
            Some(id) => {
                if let Some(v) = self.table(SERVICES)?.remove(node_key(node, id).as_str()) {
                    gone.extend(decode::<Service>(&v).ok());
                }
            }
            None => {
                let (lo, hi) = node_range(node);
                retain_in(&mut *self.table(SERVICES)?, &lo, Some(&hi), |_, v| {
                    gone.extend(decode::<Service>(v).ok());
                    false
                });
            }
        }
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

    /// Removes a node's checks (all, one, or those of one service); returns those removed.
    fn remove_checks(&mut self, node: &str, which: Checks<'_>) -> Result<Vec<Check>> {
        let mut gone = Vec::new();
        match which {
            Checks::Id(id) => {
                if let Some(v) = self.table(CHECKS)?.remove(node_key(node, id).as_str()) {
                    gone.extend(decode::<Check>(&v).ok());
                }
            }
            Checks::All | Checks::OfService(_) => {
                let (lo, hi) = node_range(node);
                retain_in(&mut *self.table(CHECKS)?, &lo, Some(&hi), |_, v| {
                    // A check of the service holds its ID among its bytes: only those are
                    // decoded, so a node with thousands of checks is not decoded whole.
                    if let Checks::OfService(sid) = which {
                        if !sid.is_empty() && !v.windows(sid.len()).any(|w| w == sid.as_bytes()) {
                            return true;
                        }
                    }
                    match decode::<Check>(v) {
                        Ok(c) if which.holds(&c) => {
                            gone.push(c);
                            false
                        }
                        _ => true,
                    }
                });
            }
        }
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
                let checks = self.remove_checks(node, Checks::OfService(sid))?;
                self.remove_services(node, Some(sid))?;
                for c in checks {
                    self.invalidate_sessions_on_check(node, &c.id)?;
                }
            }
            (None, Some(cid)) => {
                let checks = self.remove_checks(node, Checks::Id(cid))?;
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
                self.remove_checks(node, Checks::All)?;
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

/// Which of a node's checks to remove.
#[derive(Clone, Copy)]
enum Checks<'a> {
    All,
    Id(&'a str),
    OfService(&'a str),
}

impl Checks<'_> {
    fn holds(self, c: &Check) -> bool {
        match self {
            Checks::All => true,
            Checks::Id(id) => c.id == id,
            Checks::OfService(sid) => c.service_id == sid,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Check, Command, Node, Registration, Service};
    use crate::store::apply::acl::tests::apply as apply_ok;
    use crate::store::mem::Tables;
    use crate::store::tables::{CHECKS, SERVICES};

    fn apply(db: &mut Tables, index: u64, cmd: Command) {
        assert!(apply_ok(db, index, cmd));
    }

    fn keys(db: &Tables, table: crate::store::mem::TableId) -> Vec<String> {
        db.table(table)
            .keys()
            .map(|k| k.replace('\0', "/"))
            .collect()
    }

    fn check(id: &str, service_id: &str) -> Check {
        Check {
            id: id.into(),
            name: id.into(),
            service_id: service_id.into(),
            ..Check::default()
        }
    }

    /// One service or one check goes by its key alone; a service's checks go with it, and
    /// only they, however much of another check's bytes look like its ID.
    #[test]
    fn deregistering_one_service_or_check_leaves_the_rest() {
        let mut db = Tables::default();
        let node = Node {
            name: "n1".into(),
            ..Node::default()
        };
        let reg = |sid: &str, checks: Vec<Check>| {
            Command::Register(Box::new(Registration {
                node: node.clone(),
                skip_node_update: false,
                service: Some(Service {
                    id: sid.into(),
                    name: "web".into(),
                    ..Service::default()
                }),
                checks,
            }))
        };
        apply(&mut db, 1, reg("a", vec![check("a-check", "a")]));
        // "a" is in every byte string here; only service "a"'s check may go with it.
        apply(
            &mut db,
            2,
            reg("ab", vec![check("a", "ab"), check("aa", "ab")]),
        );
        apply(&mut db, 3, reg("b", vec![check("node", "")]));
        let dereg = |sid: Option<&str>, cid: Option<&str>| Command::Deregister {
            node: "n1".into(),
            service_id: sid.map(Into::into),
            check_id: cid.map(Into::into),
        };
        apply(&mut db, 4, dereg(Some("a"), None));
        assert_eq!(keys(&db, SERVICES), ["n1/ab", "n1/b"]);
        assert_eq!(keys(&db, CHECKS), ["n1/a", "n1/aa", "n1/node"]);
        apply(&mut db, 5, dereg(None, Some("a")));
        assert_eq!(keys(&db, CHECKS), ["n1/aa", "n1/node"]);
        apply(&mut db, 6, dereg(Some("missing"), None));
        apply(&mut db, 7, dereg(None, Some("missing")));
        assert_eq!(keys(&db, SERVICES), ["n1/ab", "n1/b"]);
        apply(&mut db, 8, dereg(None, None));
        assert!(keys(&db, SERVICES).is_empty() && keys(&db, CHECKS).is_empty());
    }
}
