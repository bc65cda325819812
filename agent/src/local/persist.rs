//! What survives a restart, in `local.json` in the data dir: HTTP registrations (as they
//! were registered), TTL statuses, and maintenance with its expiry.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use muster_server::model::HealthStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Local, Source};
use muster_server::sync::lock;

/// What survives a restart: HTTP registrations, TTL statuses, maintenance.
#[derive(Default, Serialize, Deserialize)]
struct Persisted {
    services: Vec<Value>,
    checks: Vec<Value>,
    statuses: BTreeMap<String, (String, String)>,
    maintenance: Vec<PersistedMaint>,
}

#[derive(Serialize, Deserialize)]
struct PersistedMaint {
    service: Option<String>,
    reason: String,
    /// Unix seconds; `None`: until disabled.
    expires: Option<u64>,
}

impl Local {
    /// Reloads HTTP registrations, TTL statuses and maintenance from the data dir.
    pub(super) fn restore(&self) {
        let Ok(bytes) = std::fs::read(&self.path) else {
            return;
        };
        let p: Persisted = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "ignoring unreadable local state");
                return;
            }
        };
        for s in &p.services {
            if let Err(e) = self.register_service_inner(s, false, false) {
                tracing::warn!(error = ?e, "cannot restore a service registration");
            }
        }
        for c in &p.checks {
            if let Err(e) = self.register_check_inner(c, false) {
                tracing::warn!(error = ?e, "cannot restore a check registration");
            }
        }
        {
            let mut st = lock(&self.state);
            for (id, (status, output)) in &p.statuses {
                if let (Some(c), Some(s)) = (st.checks.get_mut(id), HealthStatus::parse(status)) {
                    c.check.status = s;
                    c.check.output = output.clone();
                }
            }
        }
        let now = SystemTime::now();
        for m in p.maintenance {
            let expires = m.expires.map(|s| UNIX_EPOCH + Duration::from_secs(s));
            if expires.is_some_and(|e| e <= now) {
                continue;
            }
            let ttl = expires.and_then(|e| e.duration_since(now).ok());
            if let Err(e) = self.set_maintenance(m.service.as_deref(), true, m.reason, ttl, false) {
                tracing::warn!(error = ?e, "cannot restore maintenance");
            }
        }
    }

    pub(super) fn persist(&self) {
        let _saving = lock(&self.saving);
        let st = lock(&self.state);
        let mut p = Persisted {
            services: st.services.values().filter_map(|s| s.raw.clone()).collect(),
            checks: st
                .checks
                .values()
                .filter(|c| c.source == Source::Api)
                .filter_map(|c| c.raw.clone())
                .collect(),
            ..Default::default()
        };
        for c in st.checks.values() {
            if c.is_ttl() {
                p.statuses.insert(
                    c.check.id.clone(),
                    (c.check.status.as_str().into(), c.check.output.clone()),
                );
            }
            if c.source == Source::Maintenance {
                let service = (!c.check.service_id.is_empty()).then(|| c.check.service_id.clone());
                let expires = c
                    .expires
                    .and_then(|e| e.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs());
                p.maintenance.push(PersistedMaint {
                    service,
                    reason: c.check.notes.clone(),
                    expires,
                });
            }
        }
        drop(st);
        let tmp = self.path.with_extension("tmp");
        let res = serde_json::to_vec_pretty(&p)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = res {
            tracing::error!(path = %self.path.display(), error = %e, "cannot save local state");
        }
    }
}
