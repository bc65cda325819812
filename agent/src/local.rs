//! The agent's own services and checks: registered from config files or over HTTP, run by the
//! check runner, persisted in the data dir, and pushed into the catalog by anti-entropy.
//! Maintenance mode is a critical check here too (`_node_maintenance`,
//! `_service_maintenance:<id>`), as in Consul, with an optional expiry.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use muster_api::{LocalAgent, LocalError};
use muster_checks::{CheckUpdate, Runner};
use muster_server::model::{
    CatalogVerb, Check, Command, Consistency, HealthStatus, Node, Query, QueryResult, Service,
    TxnOp,
};
use muster_server::Server;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::defs::{parse_check, parse_service, CheckDef, Ctx};

pub(crate) const NODE_MAINT: &str = "_node_maintenance";
const SERVICE_MAINT_PREFIX: &str = "_service_maintenance:";
const SERF_CHECK: &str = "serfHealth";
/// Full anti-entropy sync at least this often.
const SYNC_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Config,
    Api,
    Maintenance,
}

struct LocalService {
    service: Service,
    source: Source,
    /// The definition as registered over HTTP, kept for persistence.
    raw: Option<Value>,
}

struct LocalCheck {
    check: Check,
    def: Option<CheckDef>,
    source: Source,
    raw: Option<Value>,
    critical_since: Option<Instant>,
    /// Maintenance with a TTL: when it ends by itself.
    expires: Option<SystemTime>,
}

/// The agent's own catalog writes: how many are under way, and the indexes of the latest.
#[derive(Default)]
struct OwnWrites {
    in_flight: usize,
    recent: std::collections::VecDeque<u64>,
}

#[derive(Default)]
struct State {
    services: BTreeMap<String, LocalService>,
    checks: BTreeMap<String, LocalCheck>,
    /// Output last pushed to the catalog, and when: output-only changes are rate-limited.
    synced_output: HashMap<String, Instant>,
    /// Checks whose status changed since the last sync: pushed without a full diff.
    dirty: std::collections::BTreeSet<String>,
}

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

pub struct Local {
    node: String,
    node_id: String,
    datacenter: String,
    address: String,
    path: PathBuf,
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
    full_sync: std::sync::atomic::AtomicBool,
    /// TTL statuses changed since the last save; saved by housekeeping, not on every update.
    persist_due: std::sync::atomic::AtomicBool,
    is_server: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Local {
    /// Something beyond check statuses changed: compare everything on the next sync.
    fn mark_full(&self) {
        self.full_sync
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// A check's status changed: push just that check on the next sync.
    fn mark_dirty(&self, st: &mut State, id: &str) {
        st.dirty.insert(id.to_string());
        self.changed.notify_one();
    }

    /// Builds the local state from config files and the persisted file; starts the checks.
    /// Fails with the file and field named when a definition is invalid.
    pub fn start(
        config: &Config,
        data_dir: &std::path::Path,
        node_id: &str,
        address: &str,
        is_server: bool,
        cancel: CancellationToken,
    ) -> Result<(Arc<Local>, Vec<String>), String> {
        let (runner, updates) = Runner::new(cancel.clone());
        let local = Arc::new(Local {
            node: config.node_name.clone(),
            node_id: node_id.to_string(),
            datacenter: config.datacenter.clone(),
            address: address.to_string(),
            path: data_dir.join("local.json"),
            allow_http_scripts: config.enable_script_checks,
            config: Mutex::new(config.clone()),
            check_update_interval: config.check_update_interval,
            state: Mutex::default(),
            runner,
            changed: Notify::new(),
            own: Mutex::default(),
            own_done: Notify::new(),
            full_sync: std::sync::atomic::AtomicBool::new(true),
            persist_due: std::sync::atomic::AtomicBool::new(false),
            is_server,
        });
        let warnings = local.load_config(config)?;
        local.restore();
        tokio::spawn(local.clone().apply_updates(updates, cancel.clone()));
        tokio::spawn(local.clone().housekeeping(cancel));
        Ok((local, warnings))
    }

    /// Parses every config-file definition first; only then replaces the running ones.
    fn load_config(&self, config: &Config) -> Result<Vec<String>, String> {
        let (services, checks, warnings) = parse_config_defs(config)?;
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
        for def in services {
            for c in &def.checks {
                self.add_check(&mut st, c.clone(), Source::Config, None, &def.service.name);
            }
            st.services.insert(
                def.service.id.clone(),
                LocalService {
                    service: def.service,
                    source: Source::Config,
                    raw: None,
                },
            );
        }
        for c in checks {
            let sname = st
                .services
                .get(&c.service_id)
                .map(|s| s.service.name.clone())
                .unwrap_or_default();
            self.add_check(&mut st, c, Source::Config, None, &sname);
        }
        drop(st);
        self.mark_full();
        Ok(warnings)
    }

    fn add_check(
        &self,
        st: &mut State,
        def: CheckDef,
        source: Source,
        raw: Option<Value>,
        service_name: &str,
    ) {
        // A re-registered check keeps its status unless the definition sets one.
        let check = Check {
            node: self.node.clone(),
            id: def.id.clone(),
            name: def.name.clone(),
            status: def.status,
            notes: def.notes.clone(),
            output: String::new(),
            service_id: def.service_id.clone(),
            service_name: service_name.to_string(),
            ..Default::default()
        };
        self.runner.start(def.spec.clone());
        let critical_since = (check.status == HealthStatus::Critical).then(Instant::now);
        st.checks.insert(
            def.id.clone(),
            LocalCheck {
                check,
                def: Some(def),
                source,
                raw,
                critical_since,
                expires: None,
            },
        );
    }

    /// Reloads HTTP registrations, TTL statuses and maintenance from the data dir.
    fn restore(&self) {
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

    fn persist(&self) {
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
            if c.def
                .as_ref()
                .is_some_and(|d| matches!(d.spec.probe, muster_checks::Probe::Ttl { .. }))
            {
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

    fn register_service_inner(
        &self,
        raw: &Value,
        replace_checks: bool,
        persist: bool,
    ) -> Result<(), LocalError> {
        let mut ctx = Ctx {
            origin: "service definition",
            warnings: Vec::new(),
        };
        let def = parse_service(&mut ctx, raw).map_err(LocalError::Invalid)?;
        if def.checks.iter().any(|c| c.is_script) && !self.allow_http_scripts {
            return Err(LocalError::Invalid(script_refusal("enable_script_checks")));
        }
        for w in ctx.warnings {
            tracing::warn!("{w}");
        }
        let mut st = lock(&self.state);
        let id = def.service.id.clone();
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
            }
        }
        for c in def.checks {
            let keep = st
                .checks
                .get(&c.id)
                .map(|old| (old.check.status, old.check.output.clone()));
            self.add_check(&mut st, c.clone(), Source::Api, None, &def.service.name);
            if let (Some((status, output)), Some(lc)) = (keep, st.checks.get_mut(&c.id)) {
                lc.check.status = status;
                lc.check.output = output;
            }
        }
        st.services.insert(
            id,
            LocalService {
                service: def.service,
                source: Source::Api,
                raw: Some(raw.clone()),
            },
        );
        drop(st);
        if persist {
            self.persist();
        }
        self.mark_full();
        Ok(())
    }

    fn register_check_inner(&self, raw: &Value, persist: bool) -> Result<(), LocalError> {
        let mut ctx = Ctx {
            origin: "check definition",
            warnings: Vec::new(),
        };
        let def = parse_check(&mut ctx, raw, None, None).map_err(LocalError::Invalid)?;
        if def.is_script && !self.allow_http_scripts {
            return Err(LocalError::Invalid(script_refusal("enable_script_checks")));
        }
        let mut st = lock(&self.state);
        let sname = if def.service_id.is_empty() {
            String::new()
        } else {
            match st.services.get(&def.service_id) {
                Some(s) => s.service.name.clone(),
                None => {
                    return Err(LocalError::Invalid(format!(
                        "ServiceID {:?} does not exist",
                        def.service_id
                    )))
                }
            }
        };
        self.add_check(&mut st, def, Source::Api, Some(raw.clone()), &sname);
        drop(st);
        if persist {
            self.persist();
        }
        self.mark_full();
        Ok(())
    }

    fn set_maintenance(
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
                ..Default::default()
            };
            let expires = ttl.map(|t| SystemTime::now() + t);
            st.checks.insert(
                id,
                LocalCheck {
                    check,
                    def: None,
                    source: Source::Maintenance,
                    raw: None,
                    critical_since: None,
                    expires,
                },
            );
        } else {
            st.checks.remove(&id);
        }
        drop(st);
        if persist {
            self.persist();
        }
        self.mark_full();
        Ok(())
    }

    /// Applies check results from the runner.
    async fn apply_updates(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<CheckUpdate>,
        cancel: CancellationToken,
    ) {
        loop {
            let u = tokio::select! {
                _ = cancel.cancelled() => return,
                u = rx.recv() => match u { Some(u) => u, None => return },
            };
            let mut st = lock(&self.state);
            let Some(c) = st.checks.get_mut(&u.id) else {
                continue;
            };
            let status_changed = c.check.status != u.status;
            c.check.status = u.status;
            c.check.output = u.output;
            if status_changed {
                c.critical_since = (u.status == HealthStatus::Critical).then(Instant::now);
                let ttl = c
                    .def
                    .as_ref()
                    .is_some_and(|d| matches!(d.spec.probe, muster_checks::Probe::Ttl { .. }));
                self.mark_dirty(&mut st, &u.id);
                if ttl {
                    self.persist_due
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    /// Ends expired maintenance and reaps services critical past
    /// `deregister_critical_service_after`.
    async fn housekeeping(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self
                .persist_due
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                self.persist();
            }
            let now = SystemTime::now();
            let (expired, reap): (Vec<String>, Vec<String>) = {
                let st = lock(&self.state);
                let expired = st
                    .checks
                    .values()
                    .filter(|c| c.expires.is_some_and(|e| e <= now))
                    .map(|c| c.check.id.clone())
                    .collect();
                let reap = st
                    .checks
                    .values()
                    .filter(|c| {
                        let after = c.def.as_ref().and_then(|d| d.deregister_after);
                        matches!((after, c.critical_since), (Some(a), Some(t)) if t.elapsed() >= a)
                            && !c.check.service_id.is_empty()
                    })
                    .map(|c| c.check.service_id.clone())
                    .collect();
                (expired, reap)
            };
            if !expired.is_empty() {
                let mut st = lock(&self.state);
                for id in &expired {
                    tracing::info!(check = %id, "maintenance TTL ended");
                    st.checks.remove(id);
                }
                drop(st);
                self.persist();
                self.mark_full();
            }
            for sid in reap {
                tracing::info!(service = %sid, "deregistering service critical past deregister_critical_service_after");
                let _ = LocalAgent::deregister_service(self.as_ref(), &sid);
            }
        }
    }

    /// Keeps the catalog in line with local state: at once after a change, and every minute.
    pub async fn sync_loop(self: Arc<Self>, server: Server, cancel: CancellationToken) {
        tokio::spawn(self.clone().watch_own_node(server.clone(), cancel.clone()));
        let mut retry = false;
        loop {
            let wait = if retry {
                Duration::from_secs(1)
            } else {
                SYNC_EVERY
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(wait) => self.full_sync.store(true, std::sync::atomic::Ordering::Relaxed),
            }
            retry = match self.sync_once(&server).await {
                Ok(()) => false,
                Err(e) => {
                    tracing::debug!(error = %e, "anti-entropy sync failed; retrying");
                    true
                }
            };
        }
    }

    /// Repairs the catalog as soon as something changes this node's entries behind the
    /// agent's back (Consul waits for the next periodic sync): a blocking query on this node.
    async fn watch_own_node(self: Arc<Self>, server: Server, cancel: CancellationToken) {
        let mut index = 0;
        loop {
            let q = Query::NodeChecks {
                name: self.node.clone(),
            };
            // Index 0 (this node is not in the catalog yet, say before a leader exists) would
            // answer at once, every time: wait for it to appear instead of spinning.
            let min = index.max(1);
            let read = server.wait_index(Consistency::Stale, q, min, Duration::from_secs(300));
            let res = tokio::select! {
                _ = cancel.cancelled() => return,
                r = read => r,
            };
            match res {
                Ok(meta) => {
                    if index != 0 && meta.index != index && !self.is_own(meta.index).await {
                        self.mark_full();
                    }
                    index = meta.index;
                }
                Err(_) => {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// A catalog write of the agent's own, remembered so that the node watch does not take
    /// it for a change behind the agent's back.
    async fn write_own(
        &self,
        server: &Server,
        cmd: Command,
    ) -> muster_server::Result<muster_server::model::CommandResult> {
        lock(&self.own).in_flight += 1;
        let res = server.write(cmd).await;
        {
            let mut own = lock(&self.own);
            own.in_flight -= 1;
            if let Ok(r) = &res {
                own.recent.push_back(r.index);
                if own.recent.len() > 64 {
                    own.recent.pop_front();
                }
            }
        }
        self.own_done.notify_waiters();
        res
    }

    /// Whether the change at `index` was the agent's own. A watch can see a write before the
    /// writer learns its index: wait for writes in flight (briefly) before deciding.
    async fn is_own(&self, index: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let done = self.own_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            {
                let own = lock(&self.own);
                if own.recent.contains(&index) {
                    return true;
                }
                if own.in_flight == 0 || Instant::now() >= deadline {
                    return false;
                }
            }
            tokio::select! {
                _ = done => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    async fn sync_once(&self, server: &Server) -> muster_server::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.full_sync.swap(false, Relaxed) {
            // Only statuses changed: push those checks as they are, no catalog read.
            let ops: Vec<TxnOp> = {
                let mut st = lock(&self.state);
                let ids = std::mem::take(&mut st.dirty);
                ids.iter()
                    .filter_map(|id| st.checks.get(id))
                    .map(|c| TxnOp::Check {
                        verb: CatalogVerb::Set,
                        check: c.check.clone(),
                    })
                    .collect()
            };
            if ops.is_empty() {
                return Ok(());
            }
            let res = self.write_own(server, Command::Txn(ops)).await;
            match res {
                Ok(r) if r.txn.as_ref().is_none_or(|t| t.errors.is_empty()) => return Ok(()),
                // The catalog is not what we thought (or unreachable): fall back to a full sync.
                Ok(_) => self.full_sync.store(true, Relaxed),
                Err(e) => {
                    self.full_sync.store(true, Relaxed);
                    return Err(e);
                }
            }
            self.full_sync.store(false, Relaxed);
        }
        let res = self.full_sync_once(server).await;
        if res.is_err() {
            self.full_sync.store(true, Relaxed);
        }
        res
    }

    async fn full_sync_once(&self, server: &Server) -> muster_server::Result<()> {
        lock(&self.state).dirty.clear();
        let (node, services) = match server
            .read(
                Consistency::Default,
                Query::Node {
                    name: self.node.clone(),
                },
            )
            .await?
            .0
        {
            QueryResult::Node(Some((n, s))) => (Some(n), s),
            _ => (None, Vec::new()),
        };
        let remote_checks = match server
            .read(
                Consistency::Default,
                Query::NodeChecks {
                    name: self.node.clone(),
                },
            )
            .await?
            .0
        {
            QueryResult::Checks(c) => c,
            _ => Vec::new(),
        };
        let mut ops = Vec::new();
        if node.as_ref().is_none_or(|n| n.address != self.address) {
            let n = Node {
                name: self.node.clone(),
                id: self.node_id.clone(),
                address: self.address.clone(),
                datacenter: self.datacenter.clone(),
                ..Default::default()
            };
            ops.push(TxnOp::Node {
                verb: CatalogVerb::Set,
                node: n,
            });
        }
        let mut output_synced = Vec::new();
        {
            let st = lock(&self.state);
            let remote: HashMap<&str, &Service> =
                services.iter().map(|s| (s.id.as_str(), s)).collect();
            let same = |a: &Service, b: &Service| {
                a.id == b.id
                    && a.name == b.name
                    && a.tags == b.tags
                    && a.address == b.address
                    && a.port == b.port
                    && a.meta == b.meta
                    && a.weight_passing == b.weight_passing
                    && a.weight_warning == b.weight_warning
                    && a.enable_tag_override == b.enable_tag_override
            };
            for ls in st.services.values() {
                if !remote
                    .get(ls.service.id.as_str())
                    .is_some_and(|r| same(r, &ls.service))
                {
                    ops.push(TxnOp::Service {
                        verb: CatalogVerb::Set,
                        node: self.node.clone(),
                        service: ls.service.clone(),
                    });
                }
            }
            for r in &services {
                // The leader manages the `consul` service on servers.
                let leader_managed = self.is_server && r.id == "consul";
                if !leader_managed && !st.services.contains_key(&r.id) {
                    ops.push(TxnOp::Service {
                        verb: CatalogVerb::Delete,
                        node: self.node.clone(),
                        service: r.clone(),
                    });
                }
            }
            let remote_by_id: HashMap<&str, &Check> =
                remote_checks.iter().map(|c| (c.id.as_str(), c)).collect();
            for lc in st.checks.values() {
                let want = &lc.check;
                let push = match remote_by_id.get(want.id.as_str()) {
                    None => true,
                    Some(r) => {
                        let same_but_output = r.status == want.status
                            && r.notes == want.notes
                            && r.name == want.name
                            && r.service_id == want.service_id;
                        let output_due = st
                            .synced_output
                            .get(&want.id)
                            .is_none_or(|t| t.elapsed() >= self.check_update_interval);
                        !same_but_output || (r.output != want.output && output_due)
                    }
                };
                if push {
                    output_synced.push(want.id.clone());
                    ops.push(TxnOp::Check {
                        verb: CatalogVerb::Set,
                        check: want.clone(),
                    });
                }
            }
            for r in &remote_checks {
                if !st.checks.contains_key(&r.id) && r.id != SERF_CHECK {
                    ops.push(TxnOp::Check {
                        verb: CatalogVerb::Delete,
                        check: r.clone(),
                    });
                }
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        // Services before their checks; deletes of checks before their services go.
        ops.sort_by_key(|o| match o {
            TxnOp::Node { .. } => 0,
            TxnOp::Service {
                verb: CatalogVerb::Set,
                ..
            } => 1,
            TxnOp::Check { .. } => 2,
            _ => 3,
        });
        let started = Instant::now();
        let n = ops.len();
        for chunk in ops.chunks(128) {
            let r = self.write_own(server, Command::Txn(chunk.to_vec())).await?;
            tracing::debug!(ops = n, index = r.index, took = ?started.elapsed(), "anti-entropy pushed changes");
            if let Some(t) = r.txn.filter(|t| !t.errors.is_empty()) {
                return Err(muster_server::Error::InvalidRequest(format!(
                    "sync refused: {:?}",
                    t.errors
                )));
            }
        }
        let now = Instant::now();
        let mut st = lock(&self.state);
        for id in output_synced {
            st.synced_output.insert(id, now);
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

/// Parses (and so validates) every service and check definition of the config files.
#[allow(clippy::type_complexity)]
pub fn parse_config_defs(
    config: &Config,
) -> Result<(Vec<crate::defs::ServiceDef>, Vec<CheckDef>, Vec<String>), String> {
    let scripts = config.enable_local_script_checks || config.enable_script_checks;
    let mut warnings = Vec::new();
    let mut services = Vec::new();
    let mut checks = Vec::new();
    for (origin, v) in config.services.iter() {
        let mut ctx = Ctx {
            origin,
            warnings: Vec::new(),
        };
        let def = parse_service(&mut ctx, v)?;
        if def.checks.iter().any(|c| c.is_script) && !scripts {
            return Err(format!(
                "{origin}: {}",
                script_refusal("enable_local_script_checks")
            ));
        }
        warnings.extend(ctx.warnings);
        services.push(def);
    }
    for (origin, v) in config.checks.iter() {
        let mut ctx = Ctx {
            origin,
            warnings: Vec::new(),
        };
        let def = parse_check(&mut ctx, v, None, None)?;
        if def.is_script && !scripts {
            return Err(format!(
                "{origin}: {}",
                script_refusal("enable_local_script_checks")
            ));
        }
        warnings.extend(ctx.warnings);
        checks.push(def);
    }
    Ok((services, checks, warnings))
}

fn script_refusal(setting: &str) -> String {
    format!("Scripts are disabled on this agent; to enable, configure '{setting}' to true")
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
        let mut st = lock(&self.state);
        if st.services.remove(id).is_none() {
            return Err(LocalError::NotFound(format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name.")));
        }
        let checks: Vec<String> = st
            .checks
            .iter()
            .filter(|(_, c)| c.check.service_id == id)
            .map(|(k, _)| k.clone())
            .collect();
        for c in checks {
            st.checks.remove(&c);
            self.runner.stop(&c);
        }
        drop(st);
        self.persist();
        self.mark_full();
        Ok(())
    }

    fn register_check(&self, def: &Value) -> Result<(), LocalError> {
        self.register_check_inner(def, true)
    }

    fn deregister_check(&self, id: &str) -> Result<(), LocalError> {
        if lock(&self.state).checks.remove(id).is_none() {
            return Err(LocalError::NotFound(format!("Unknown check ID {id:?}")));
        }
        self.runner.stop(id);
        self.persist();
        self.mark_full();
        Ok(())
    }

    fn update_check(
        &self,
        id: &str,
        status: HealthStatus,
        output: String,
    ) -> Result<(), LocalError> {
        let mut st = lock(&self.state);
        let Some(c) = st.checks.get_mut(id) else {
            return Err(LocalError::NotFound(format!("Unknown check ID {id:?}")));
        };
        if !c
            .def
            .as_ref()
            .is_some_and(|d| matches!(d.spec.probe, muster_checks::Probe::Ttl { .. }))
        {
            return Err(LocalError::Invalid(format!(
                "Check {id:?} is not a TTL check"
            )));
        }
        let changed = c.check.status != status;
        if changed {
            c.critical_since = (status == HealthStatus::Critical).then(Instant::now);
        }
        c.check.status = status;
        c.check.output =
            output[..floor_char(&output, muster_checks::MAX_OUTPUT.min(output.len()))].to_string();
        if changed {
            self.persist_due
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.mark_dirty(&mut st, id);
        drop(st);
        self.runner.ttl_touch(id);
        Ok(())
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
        let args = lock(&self.config).args.clone();
        let parsed = crate::flags::parse(&args, crate::config::AGENT_FLAGS)?;
        let (mut cfg, warnings) = crate::config::load(&parsed)?;
        cfg.args = args;
        let more = self.load_config(&cfg)?;
        for w in warnings.into_iter().chain(more) {
            tracing::warn!("{w}");
        }
        *lock(&self.config) = cfg;
        tracing::info!("configuration reloaded");
        Ok(())
    }
}

/// The largest char boundary at or below `n`.
fn floor_char(s: &str, mut n: usize) -> usize {
    while n > 0 && !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}
