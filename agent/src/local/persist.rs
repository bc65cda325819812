//! What survives a restart, in the data dir: each HTTP registration as it was registered, in
//! a file of its own under `local/services/` or `local/checks/` (so a registration writes one
//! small file whatever else the agent holds), and TTL statuses and maintenance with its expiry
//! in `local.json`. Older agents kept the registrations in `local.json` too: they are moved
//! out at the first start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use muster_api::LocalError;
use muster_server::model::HealthStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Local, Source};
use muster_server::sync::lock;

/// What `local.json` holds.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct Persisted {
    /// Only in files of older agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    services: Vec<Value>,
    /// Only in files of older agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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

/// The kind of a saved registration.
#[derive(Debug, Clone, Copy)]
pub(super) enum Saved {
    Service,
    Check,
}

impl Saved {
    fn dir(self) -> &'static str {
        match self {
            Saved::Service => "services",
            Saved::Check => "checks",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Saved::Service => "service",
            Saved::Check => "check",
        }
    }
}

/// The file name of a registration: IDs may hold any character, so the name is a digest.
fn file_name(id: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.json")
}

/// Writes `bytes` to `path` through a temp file of its own, synced before the rename, so that
/// a crash leaves the old file or the new one and never a torn one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

impl Local {
    fn saved_path(&self, kind: Saved, id: &str) -> PathBuf {
        self.saved_dir.join(kind.dir()).join(file_name(id))
    }

    /// Saves an HTTP registration as registered, before the registry takes it: a registration
    /// that could not be saved is refused, not kept until the next restart loses it.
    pub(super) fn save_registration(
        &self,
        kind: Saved,
        id: &str,
        raw: &Value,
    ) -> Result<(), LocalError> {
        let path = self.saved_path(kind, id);
        serde_json::to_vec(raw)
            .map_err(std::io::Error::other)
            .and_then(|b| write_atomically(&path, &b))
            .map_err(|e| {
                tracing::error!(path = %path.display(), error = %e, "cannot save a registration");
                LocalError::Storage(format!(
                    "failed to persist {} {id:?} in {}: {e}",
                    kind.name(),
                    path.display()
                ))
            })
    }

    /// Forgets a saved registration (none saved, as for a config file's, is fine).
    pub(super) fn forget_registration(&self, kind: Saved, id: &str) -> Result<(), LocalError> {
        let path = self.saved_path(kind, id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot remove a saved registration");
                Err(LocalError::Storage(format!(
                    "failed to remove the saved {} {id:?} in {}: {e}",
                    kind.name(),
                    path.display()
                )))
            }
        }
    }

    /// The saved registrations of one kind, in file-name order.
    fn saved_registrations(&self, kind: Saved) -> Vec<Value> {
        let dir = self.saved_dir.join(kind.dir());
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read saved registrations");
                Vec::new()
            }
        };
        paths.sort();
        paths
            .into_iter()
            .filter_map(|p| {
                let parsed = std::fs::read(&p)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
                parsed
                    .map_err(|e| {
                        tracing::warn!(path = %p.display(), error = %e, "ignoring an unreadable saved registration");
                    })
                    .ok()
            })
            .collect()
    }

    /// Reloads HTTP registrations, TTL statuses and maintenance from the data dir.
    pub(super) fn restore(&self) {
        let p: Persisted = match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "ignoring unreadable local state");
                    Persisted::default()
                }
            },
            Err(_) => Persisted::default(),
        };
        // An older agent's file: its registrations are saved the new way as they are taken.
        // One that cannot be saved now (a full disk) is taken unsaved and stays in
        // `local.json`, to be moved at a later start.
        let moved = !p.services.is_empty() || !p.checks.is_empty();
        let restore = |kind: Saved, defs: &[Value], save: bool| {
            for d in defs {
                let take = |save| match kind {
                    Saved::Service => self.register_service_inner(d, false, save),
                    Saved::Check => self.register_check_inner(d, save),
                };
                let res = match take(save) {
                    Err(LocalError::Storage(why)) => {
                        tracing::warn!(kind = kind.name(), error = %why, "keeping a registration in local.json");
                        let mut left = lock(&self.unmoved);
                        match kind {
                            Saved::Service => left.services.push(d.clone()),
                            Saved::Check => left.checks.push(d.clone()),
                        }
                        drop(left);
                        take(false)
                    }
                    res => res,
                };
                if let Err(e) = res {
                    tracing::warn!(error = ?e, kind = kind.name(), "cannot restore a registration");
                }
            }
        };
        restore(Saved::Service, &p.services, true);
        restore(
            Saved::Service,
            &self.saved_registrations(Saved::Service),
            false,
        );
        restore(Saved::Check, &p.checks, true);
        restore(Saved::Check, &self.saved_registrations(Saved::Check), false);
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
        if moved {
            self.persist();
        }
    }

    /// Saves TTL statuses and maintenance in `local.json` before returning. Callers that
    /// arrive while a save is under way share the next one.
    pub(super) fn persist(&self) {
        let mine = self.persist_asked.fetch_add(1, Ordering::SeqCst) + 1;
        let mut saved = lock(&self.saving);
        if *saved >= mine {
            return;
        }
        // Every change asked for up to here was made before it was asked for, so the
        // snapshot below holds it.
        let covers = self.persist_asked.load(Ordering::SeqCst);
        let mut p = {
            let left = lock(&self.unmoved);
            Persisted {
                services: left.services.clone(),
                checks: left.checks.clone(),
                ..Persisted::default()
            }
        };
        {
            let st = lock(&self.state);
            for c in st.checks.values() {
                if c.is_ttl() {
                    p.statuses.insert(
                        c.check.id.clone(),
                        (c.check.status.as_str().into(), c.check.output.clone()),
                    );
                }
                if c.source == Source::Maintenance {
                    let service =
                        (!c.check.service_id.is_empty()).then(|| c.check.service_id.clone());
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
        }
        let res = serde_json::to_vec(&p)
            .map_err(std::io::Error::other)
            .and_then(|b| write_atomically(&self.path, &b));
        match res {
            Ok(()) => *saved = covers,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot save local state")
            }
        }
    }
}
