//! The agent's own services and checks: the registry behind `/v1/agent/*`, filled from the
//! config files and over HTTP. `checks` runs their probes, `persist` keeps HTTP registrations
//! and statuses across restarts, `maint` handles maintenance mode, and `sync` pushes all of it
//! into the catalog (anti-entropy).

mod checks;
mod maint;
mod persist;

use persist::Saved;
mod sync;

use muster_server::sync::lock;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use muster_api::{LocalAgent, LocalError};
use muster_checks::Runner;
use muster_server::model::{Check, HealthStatus, Service};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::defs::{parse_check, parse_service, script_refusal, CheckDef, Ctx};

/// Where a registration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Config,
    Api,
    Maintenance,
}

/// A service of this agent's.
struct LocalService {
    service: Service,
    source: Source,
}

/// A check of this agent's: its catalog entry, and its definition (none for maintenance).
struct LocalCheck {
    check: Check,
    def: Option<CheckDef>,
    source: Source,
    critical_since: Option<Instant>,
    /// Maintenance with a TTL: when it ends by itself.
    expires: Option<SystemTime>,
}

/// The agent's own catalog writes: how many are under way, and the indexes of the latest.
#[derive(Default)]
struct OwnWrites {
    in_flight: usize,
    recent: VecDeque<u64>,
}

/// The registry: every service and check of this agent's, by ID.
#[derive(Default)]
struct State {
    services: BTreeMap<String, LocalService>,
    checks: BTreeMap<String, LocalCheck>,
    /// Output last pushed to the catalog, and when: output-only changes are rate-limited.
    synced_output: HashMap<String, Instant>,
    /// Checks added, changed or removed since the last sync: pushed (or deleted) as they
    /// are, without reading the catalog.
    dirty: BTreeSet<String>,
    /// Services added, changed or removed since the last sync, likewise.
    dirty_services: BTreeSet<String>,
}

impl State {
    /// The catalog entries of these checks as they are now, to compare after a change.
    fn checks_now<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Vec<(String, Option<Check>)> {
        ids.into_iter()
            .map(|id| (id.clone(), self.checks.get(id).map(|c| c.check.clone())))
            .collect()
    }

    /// Marks for the next sync those of `before` whose catalog entry is no longer the same:
    /// re-registering an unchanged definition writes nothing.
    fn mark_changed(&mut self, before: Vec<(String, Option<Check>)>) -> bool {
        let mut any = false;
        for (id, old) in before {
            if self.checks.get(&id).map(|c| &c.check) != old.as_ref() {
                self.dirty.insert(id);
                any = true;
            }
        }
        any
    }
}

/// This agent's services and checks, shared by the HTTP API, the check runner and
/// anti-entropy.
pub struct Local {
    node: String,
    node_id: String,
    datacenter: String,
    address: String,
    /// `local.json`: TTL statuses and maintenance.
    path: PathBuf,
    /// Where each HTTP registration is saved, in a file of its own.
    saved_dir: PathBuf,
    allow_http_scripts: bool,
    config: Mutex<Config>,
    check_update_interval: Duration,
    state: Mutex<State>,
    runner: Runner,
    /// Wakes anti-entropy after a change.
    changed: Notify,
    /// The agent's own catalog writes: the node watch ignores them.
    own: Mutex<OwnWrites>,
    /// Signalled when an own write finishes.
    own_done: Notify,
    /// The next sync compares everything with the catalog (registrations changed, the catalog
    /// changed behind our back, or the periodic pass is due).
    full_sync: AtomicBool,
    /// TTL statuses changed since the last save; saved by housekeeping, not on every update.
    persist_due: AtomicBool,
    /// Held from saving a registration to taking it into the registry, so that the file and
    /// the registry agree when the same ID is registered twice at once.
    registering: Mutex<()>,
    /// Registrations of an older agent's `local.json` that could not be moved to files of
    /// their own at start: kept in `local.json` until a later start moves them.
    unmoved: Mutex<persist::Persisted>,
    /// Saves of `local.json` asked for so far (a counter).
    persist_asked: std::sync::atomic::AtomicU64,
    /// Held across a save, from the snapshot to the rename, so that saves do not share a temp
    /// file and an older snapshot never replaces a newer one; holds the count of asks the
    /// last save covered.
    saving: Mutex<u64>,
    is_server: bool,
    /// Run after a reload has read the new config, before it is adopted (TLS certificates).
    reload_hooks: Mutex<Vec<ReloadHook>>,
}

/// Something a reload must also redo; its error fails the reload.
pub type ReloadHook = Box<dyn Fn(&Config) -> crate::Result<()> + Send + Sync>;

impl Local {
    /// Adds something every reload redoes (see [`ReloadHook`]).
    pub fn on_reload(&self, hook: ReloadHook) {
        lock(&self.reload_hooks).push(hook);
    }

    /// The config's definitions changed or the catalog may differ from what was pushed:
    /// compare everything with the catalog on the next sync.
    fn mark_full(&self) {
        self.full_sync.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// A check changed or went: push (or delete) just that check on the next sync.
    fn mark_dirty(&self, st: &mut State, id: &str) {
        st.dirty.insert(id.to_string());
        self.changed.notify_one();
    }

    /// Builds the local state from the config's definitions and the persisted file; starts
    /// the checks.
    pub fn start(
        config: &Config,
        data_dir: &Path,
        node_id: &str,
        address: &str,
        is_server: bool,
        cancel: CancellationToken,
    ) -> Arc<Local> {
        let (runner, updates) = Runner::new(cancel.clone());
        let local = Arc::new(Local {
            node: config.node_name.clone(),
            node_id: node_id.to_string(),
            datacenter: config.datacenter.clone(),
            address: address.to_string(),
            path: data_dir.join("local.json"),
            saved_dir: data_dir.join("local"),
            allow_http_scripts: config.enable_script_checks,
            config: Mutex::new(config.clone()),
            check_update_interval: config.check_update_interval,
            state: Mutex::default(),
            runner,
            changed: Notify::new(),
            own: Mutex::default(),
            own_done: Notify::new(),
            full_sync: AtomicBool::new(true),
            persist_due: AtomicBool::new(false),
            registering: Mutex::new(()),
            unmoved: Mutex::default(),
            persist_asked: Default::default(),
            saving: Mutex::new(0),
            is_server,
            reload_hooks: Mutex::default(),
        });
        local.load_config(config);
        local.restore();
        tokio::spawn(local.clone().apply_updates(updates, cancel.clone()));
        tokio::spawn(local.clone().housekeeping(cancel));
        local
    }

    /// Replaces the running config-file definitions with the config's (parsed by
    /// `config::load`, so nothing here can fail).
    fn load_config(&self, config: &Config) {
        let mut st = lock(&self.state);
        let old_services: Vec<String> = st
            .services
            .iter()
            .filter(|(_, s)| s.source == Source::Config)
            .map(|(k, _)| k.clone())
            .collect();
        for id in old_services {
            st.services.remove(&id);
        }
        let old_checks: Vec<String> = st
            .checks
            .iter()
            .filter(|(_, c)| c.source == Source::Config)
            .map(|(k, _)| k.clone())
            .collect();
        for id in old_checks {
            st.checks.remove(&id);
            self.runner.stop(&id);
        }
        for def in config.services.iter().cloned() {
            for c in &def.checks {
                self.add_check(&mut st, c.clone(), Source::Config, &def.service.name, false);
            }
            st.services.insert(
                def.service.id.clone(),
                LocalService {
                    service: def.service,
                    source: Source::Config,
                },
            );
        }
        for c in config.checks.iter().cloned() {
            let sname = st
                .services
                .get(&c.service_id)
                .map(|s| s.service.name.clone())
                .unwrap_or_default();
            self.add_check(&mut st, c, Source::Config, &sname, true);
        }
        drop(st);
        // The config files are the source of truth for the IDs they define (as in Consul): a
        // saved HTTP registration of the same ID is dropped, so it cannot win at the next
        // start.
        for def in config.services.iter() {
            let _ = self.forget_registration(Saved::Service, &def.service.id);
            for c in &def.checks {
                let _ = self.forget_registration(Saved::Check, &c.id);
            }
        }
        for c in config.checks.iter() {
            let _ = self.forget_registration(Saved::Check, &c.id);
        }
        self.mark_full();
    }

    /// Registers a service over HTTP (or from the persisted file): parsed and checked before
    /// anything changes; `replace_checks` drops its checks the new definition leaves out.
    fn register_service_inner(
        &self,
        raw: &Value,
        replace_checks: bool,
        persist: bool,
    ) -> Result<(), LocalError> {
        let mut ctx = Ctx {
            origin: "service definition",
            warnings: Vec::new(),
            consul_errors: true,
        };
        let def = parse_service(&mut ctx, raw).map_err(|e| LocalError::Invalid(e.to_string()))?;
        if def.checks.iter().any(|c| c.is_script) && !self.allow_http_scripts {
            return Err(LocalError::Invalid(script_refusal("enable_script_checks")));
        }
        for w in ctx.warnings {
            tracing::warn!("{w}");
        }
        let id = def.service.id.clone();
        let _registering = lock(&self.registering);
        if persist {
            self.save_registration(Saved::Service, &id, raw)?;
        }
        let mut st = lock(&self.state);
        let ids: BTreeSet<String> = st
            .checks
            .iter()
            .filter(|(_, c)| c.check.service_id == id)
            .map(|(k, _)| k.clone())
            .chain(def.checks.iter().map(|c| c.id.clone()))
            .collect();
        let checks_before = st.checks_now(&ids);
        let service_changed = st.services.get(&id).map(|s| &s.service) != Some(&def.service);
        let mut forget = Vec::new();
        if replace_checks {
            let stale: Vec<String> = st
                .checks
                .iter()
                .filter(|(_, c)| c.check.service_id == id && c.source != Source::Maintenance)
                .filter(|(cid, _)| !def.checks.iter().any(|d| &d.id == *cid))
                .map(|(k, _)| k.clone())
                .collect();
            for c in stale {
                st.checks.remove(&c);
                self.runner.stop(&c);
                forget.push(c);
            }
        }
        for c in def.checks {
            let keep = st.checks.get(&c.id).map(|old| {
                (
                    old.check.status,
                    old.check.output.clone(),
                    old.critical_since,
                )
            });
            // A check of this ID registered on its own is now the service's.
            forget.push(c.id.clone());
            self.add_check(&mut st, c.clone(), Source::Api, &def.service.name, false);
            if let (Some((status, output, since)), Some(lc)) = (keep, st.checks.get_mut(&c.id)) {
                lc.check.status = status;
                lc.check.output = output;
                // Critical since then, or not critical: `deregister_critical_service_after`
                // counts from the status kept, not from the re-registration.
                lc.critical_since = since;
            }
        }
        st.services.insert(
            id.clone(),
            LocalService {
                service: def.service,
                source: Source::Api,
            },
        );
        let mut changed = st.mark_changed(checks_before);
        if service_changed {
            st.dirty_services.insert(id);
            changed = true;
        }
        drop(st);
        if persist {
            for c in forget {
                // Left behind, the check would come back at the next start.
                let _ = self.forget_registration(Saved::Check, &c);
            }
        }
        if changed {
            self.changed.notify_one();
        }
        Ok(())
    }

    /// Registers a check over HTTP (or from the persisted file).
    fn register_check_inner(&self, raw: &Value, persist: bool) -> Result<(), LocalError> {
        let mut ctx = Ctx {
            origin: "check definition",
            warnings: Vec::new(),
            consul_errors: true,
        };
        let def = parse_check(&mut ctx, raw, None, None)
            .map_err(|e| LocalError::Invalid(e.to_string()))?;
        if def.is_script && !self.allow_http_scripts {
            return Err(LocalError::Invalid(script_refusal("enable_script_checks")));
        }
        let _registering = lock(&self.registering);
        let service_name = |st: &State| {
            if def.service_id.is_empty() {
                return Ok(String::new());
            }
            match st.services.get(&def.service_id) {
                Some(s) => Ok(s.service.name.clone()),
                None => Err(LocalError::Invalid(format!(
                    "ServiceID {:?} does not exist",
                    def.service_id
                ))),
            }
        };
        service_name(&lock(&self.state))?;
        if persist {
            self.save_registration(Saved::Check, &def.id, raw)?;
        }
        let mut st = lock(&self.state);
        let sname = match service_name(&st) {
            Ok(n) => n,
            Err(e) => {
                // The service went while the check was being saved (a config reload).
                drop(st);
                if persist {
                    let _ = self.forget_registration(Saved::Check, &def.id);
                }
                return Err(e);
            }
        };
        let before = st.checks_now([&def.id]);
        self.add_check(&mut st, def, Source::Api, &sname, true);
        let changed = st.mark_changed(before);
        drop(st);
        if changed {
            self.changed.notify_one();
        }
        Ok(())
    }

    /// Re-reads the config files and flags the agent started with; on success replaces the
    /// config-file definitions, and on failure keeps everything as it runs.
    fn reload_config(&self) -> crate::Result<()> {
        let args = lock(&self.config).args.clone();
        let parsed = crate::flags::parse(&args, crate::config::AGENT_FLAGS)
            .map_err(|e| crate::Error::Config(e.to_string()))?;
        let (mut cfg, warnings) = crate::config::load(&parsed)?;
        cfg.args = args;
        for hook in lock(&self.reload_hooks).iter() {
            hook(&cfg)?;
        }
        self.load_config(&cfg);
        for w in warnings {
            tracing::warn!("{w}");
        }
        *lock(&self.config) = cfg;
        tracing::info!("configuration reloaded");
        Ok(())
    }
}

impl LocalAgent for Local {
    fn services(&self) -> Vec<Service> {
        lock(&self.state)
            .services
            .values()
            .map(|s| s.service.clone())
            .collect()
    }

    fn checks(&self) -> Vec<Check> {
        lock(&self.state)
            .checks
            .values()
            .map(|c| c.check.clone())
            .collect()
    }

    fn register_service(&self, def: &Value, replace_checks: bool) -> Result<(), LocalError> {
        self.register_service_inner(def, replace_checks, true)
    }

    fn deregister_service(&self, id: &str) -> Result<(), LocalError> {
        let _registering = lock(&self.registering);
        if !lock(&self.state).services.contains_key(id) {
            return Err(LocalError::NotFound(format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name.")));
        }
        self.forget_registration(Saved::Service, id)?;
        let mut st = lock(&self.state);
        st.services.remove(id);
        let checks: Vec<String> = st
            .checks
            .iter()
            .filter(|(_, c)| c.check.service_id == id)
            .map(|(k, _)| k.clone())
            .collect();
        for c in &checks {
            st.checks.remove(c);
            self.runner.stop(c);
            st.dirty.insert(c.clone());
        }
        st.dirty_services.insert(id.to_string());
        drop(st);
        // Checks registered on their own for the service go with it, at the next start too.
        for c in &checks {
            let _ = self.forget_registration(Saved::Check, c);
        }
        // Drops the statuses of its TTL checks from `local.json`.
        self.persist_due.store(true, Ordering::Relaxed);
        self.changed.notify_one();
        Ok(())
    }

    fn register_check(&self, def: &Value) -> Result<(), LocalError> {
        self.register_check_inner(def, true)
    }

    fn deregister_check(&self, id: &str) -> Result<(), LocalError> {
        let _registering = lock(&self.registering);
        if !lock(&self.state).checks.contains_key(id) {
            return Err(LocalError::NotFound(format!("Unknown check ID {id:?}")));
        }
        self.forget_registration(Saved::Check, id)?;
        {
            let mut st = lock(&self.state);
            st.checks.remove(id);
            self.mark_dirty(&mut st, id);
        }
        self.runner.stop(id);
        self.persist_due.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn update_check(
        &self,
        id: &str,
        status: HealthStatus,
        output: String,
    ) -> Result<(), LocalError> {
        self.update_ttl_check(id, status, output)
    }

    fn maintenance(
        &self,
        service: Option<&str>,
        enable: bool,
        reason: String,
        ttl: Option<Duration>,
    ) -> Result<(), LocalError> {
        self.set_maintenance(service, enable, reason, ttl, true)
    }

    fn reload(&self) -> Result<(), String> {
        self.reload_config().map_err(|e| e.to_string())
    }
}
