//! Check wiring: starting a check's probe in `muster_checks`' runner, applying its results,
//! TTL updates over HTTP, and the housekeeping loop (maintenance expiry, reaping services
//! critical past `deregister_critical_service_after`, saving TTL statuses).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use muster_api::{LocalAgent, LocalError};
use muster_checks::{CheckUpdate, Probe};
use muster_server::model::{Check, HealthStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Local, LocalCheck, Source, State};
use crate::defs::CheckDef;
use muster_server::sync::lock;

impl LocalCheck {
    /// A TTL check: its status comes from HTTP updates, and survives a restart.
    pub(super) fn is_ttl(&self) -> bool {
        self.def
            .as_ref()
            .is_some_and(|d| matches!(d.spec.probe, Probe::Ttl { .. }))
    }
}

impl Local {
    pub(super) fn add_check(
        &self,
        st: &mut State,
        def: CheckDef,
        source: Source,
        service_name: &str,
        on_its_own: bool,
    ) {
        let (kind, interval, timeout) = consul_type(&def, on_its_own);
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
            kind: kind.into(),
            interval,
            timeout,
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
                critical_since,
                expires: None,
            },
        );
    }

    /// Applies check results from the runner.
    pub(super) async fn apply_updates(
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
                let ttl = c.is_ttl();
                self.mark_dirty(&mut st, &u.id);
                if ttl {
                    self.persist_due
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    /// Ends expired maintenance and reaps services critical past
    /// `deregister_critical_service_after`, once a second (Consul's deregistration reaper
    /// runs every 30 s).
    pub(super) async fn housekeeping(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
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
                    self.mark_dirty(&mut st, id);
                }
                drop(st);
                self.persist();
            }
            for sid in reap {
                tracing::info!(service = %sid, "deregistering service critical past deregister_critical_service_after");
                let _ = LocalAgent::deregister_service(self.as_ref(), &sid);
            }
        }
    }

    /// A TTL check's status and output, as `/v1/agent/check/update` sets them.
    pub(super) fn update_ttl_check(
        &self,
        id: &str,
        status: HealthStatus,
        output: String,
    ) -> Result<(), LocalError> {
        let mut st = lock(&self.state);
        let Some(c) = st.checks.get_mut(id) else {
            return Err(LocalError::NotFound(format!("Unknown check ID {id:?}")));
        };
        if !c.is_ttl() {
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
}

/// The largest char boundary at or below `n`.
fn floor_char(s: &str, mut n: usize) -> usize {
    while n > 0 && !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// Consul's `Type`, `Interval` and `Timeout` for a check: the durations only for a check
/// registered on its own (a TTL check's read `0s`), as Consul reports them.
fn consul_type(def: &CheckDef, on_its_own: bool) -> (&'static str, String, String) {
    use muster_api::types::go_duration_string as go;
    let (kind, interval, timeout) = match &def.spec.probe {
        Probe::Ttl { .. } => ("ttl", Duration::ZERO, Duration::ZERO),
        Probe::Script { .. } => ("script", def.spec.interval, def.spec.timeout),
        Probe::Http { .. } => ("http", def.spec.interval, def.spec.timeout),
        Probe::Tcp { .. } => ("tcp", def.spec.interval, def.spec.timeout),
    };
    let dur = |d| if on_its_own { go(d) } else { String::new() };
    (kind, dur(interval), dur(timeout))
}
