//! Node and service maintenance: a critical check (`_node_maintenance`,
//! `_service_maintenance:<id>`), as in Consul, with an optional expiry.

use std::time::{Duration, SystemTime};

use muster_api::LocalError;
use muster_server::model::{Check, HealthStatus};

use super::{Local, LocalCheck, Source};
use muster_server::sync::lock;

pub(crate) const NODE_MAINT: &str = "_node_maintenance";
const SERVICE_MAINT_PREFIX: &str = "_service_maintenance:";

impl Local {
    pub(super) fn set_maintenance(
        &self,
        service: Option<&str>,
        enable: bool,
        reason: String,
        ttl: Option<Duration>,
        persist: bool,
    ) -> Result<(), LocalError> {
        let mut st = lock(&self.state);
        let (id, name, service_id, service_name) = match service {
            None => (
                NODE_MAINT.to_string(),
                "Node Maintenance Mode",
                String::new(),
                String::new(),
            ),
            Some(sid) => {
                let Some(s) = st.services.get(sid) else {
                    return Err(LocalError::NotFound(format!(
                        "No service registered with ID {sid:?}"
                    )));
                };
                (
                    format!("{SERVICE_MAINT_PREFIX}{sid}"),
                    "Service Maintenance Mode",
                    sid.to_string(),
                    s.service.name.clone(),
                )
            }
        };
        if enable {
            let notes = if reason.is_empty() {
                match service {
                    None => "Maintenance mode is enabled for this node".to_string(),
                    Some(_) => "Maintenance mode is enabled for this service".to_string(),
                }
            } else {
                reason
            };
            let check = Check {
                node: self.node.clone(),
                id: id.clone(),
                name: name.into(),
                status: HealthStatus::Critical,
                notes,
                service_id,
                service_name,
                kind: "maintenance".into(),
                ..Default::default()
            };
            let expires = ttl.map(|t| SystemTime::now() + t);
            st.checks.insert(
                id.clone(),
                LocalCheck {
                    check,
                    def: None,
                    source: Source::Maintenance,
                    critical_since: None,
                    expires,
                },
            );
            self.mark_dirty(&mut st, &id);
        } else if st.checks.remove(&id).is_some() {
            self.mark_dirty(&mut st, &id);
        }
        drop(st);
        if persist {
            self.persist();
        }
        Ok(())
    }

    /// Current maintenances, for `muster maint`.
    pub fn maintenance_checks(&self) -> Vec<Check> {
        lock(&self.state)
            .checks
            .values()
            .filter(|c| c.source == Source::Maintenance)
            .map(|c| c.check.clone())
            .collect()
    }
}
