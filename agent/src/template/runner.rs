//! The render loop: every template renders once to learn its queries, then again whenever a
//! query it used changes, after its quiescence wait (`min` after the last change, at most
//! `max` after the first). A complete render is installed (`write`), and its `command` runs
//! only when the file really changed. Each template's state (passing, or critical with the
//! reason) goes to a [`Reporter`], which makes it the check `template:<dest>`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::brain::Brain;
use super::config::{RunnerConfig, TemplateConfig, Wait, DEFAULT_COMMAND_TIMEOUT};
use super::deps::Dep;
use super::engine::{Engine, Outcome};
use super::watcher::{Reader, Watchers};
use super::write::{install, run, Written};
use crate::watch::Fetch;

/// How long a template may wait for its first answers before it is reported critical.
const STARTUP_GRACE: Duration = Duration::from_secs(10);

/// Where template states go.
pub trait Reporter: Send + Sync {
    /// The state of the template writing `dest`: passing or not, and why.
    fn report<'a>(&'a self, dest: &'a str, passing: bool, output: &'a str) -> BoxFuture<'a, ()>;
}

/// How the runner runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// Render each template once, then stop.
    pub once: bool,
    /// Print renders to stdout instead of writing files; run no commands.
    pub dry: bool,
}

struct Tmpl {
    cfg: TemplateConfig,
    engine: Engine,
    deps: BTreeSet<Dep>,
    /// When to render next.
    due: Option<Instant>,
    /// The first change not yet rendered, for `wait.max`.
    first_change: Option<Instant>,
    /// The last state reported.
    state: Option<(bool, String)>,
    /// Whether a render has been complete at least once (or failed for good, under `once`).
    settled: bool,
    /// When the runner started it.
    since: Instant,
}

/// The templates, their watchers and the shared data.
pub struct Runner {
    templates: Vec<Tmpl>,
    wait: Option<Wait>,
    mode: Mode,
    reader: Reader,
    watchers: Watchers,
    changes: tokio::sync::mpsc::UnboundedReceiver<Dep>,
    reporter: Option<Arc<dyn Reporter>>,
    events: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
}

/// What a supervisor (`-exec`) hears from the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Every template has rendered once.
    Ready,
    /// A file was replaced since.
    Changed,
}

/// A template's source text: its `contents`, or its `source` file.
pub fn load_source(t: &TemplateConfig) -> Result<String, String> {
    match (&t.contents, &t.source) {
        (Some(c), _) => Ok(c.clone()),
        (None, Some(src)) => std::fs::read_to_string(src)
            .map_err(|e| format!("template {}: read {}: {e}", t.name(), src.display())),
        (None, None) => Err(format!(
            "template for {}: one of source or contents is required",
            t.destination.display()
        )),
    }
}

impl Runner {
    /// Parses every template; the first that does not parse is the error (with its name,
    /// line and column).
    pub fn new(
        cfg: &RunnerConfig,
        mode: Mode,
        fetch: Arc<dyn Fetch>,
        reporter: Option<Arc<dyn Reporter>>,
    ) -> Result<Runner, String> {
        let brain = Arc::new(Mutex::new(Brain::default()));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let now = Instant::now();
        let templates = cfg
            .templates
            .iter()
            .map(|t| {
                let engine = Engine::new(&t.name(), &load_source(t)?, &t.options, brain.clone())?;
                Ok(Tmpl {
                    cfg: t.clone(),
                    engine,
                    deps: BTreeSet::new(),
                    due: Some(now),
                    first_change: None,
                    state: None,
                    settled: false,
                    since: now,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Runner {
            templates,
            wait: cfg.wait,
            mode,
            reader: Reader {
                fetch,
                stale: cfg.max_stale.is_some_and(|d| !d.is_zero()),
                brain,
                changed: tx,
            },
            watchers: Watchers::default(),
            changes: rx,
            reporter,
            events: None,
        })
    }

    /// Sends [`Event`]s to `tx`.
    pub fn with_events(mut self, tx: tokio::sync::mpsc::UnboundedSender<Event>) -> Runner {
        self.events = Some(tx);
        self
    }

    /// Runs until `cancel` (or, under `once`, until every template settled); the exit code:
    /// 0, or 1 when a template ended in failure under `once`.
    pub async fn run(mut self, cancel: CancellationToken) -> i32 {
        let refresh = Duration::from_secs(60);
        let mut ready = false;
        let mut next_refresh = Instant::now() + refresh;
        loop {
            let now = Instant::now();
            let mut replaced = false;
            for i in 0..self.templates.len() {
                if self.templates[i].due.is_some_and(|d| d <= now) {
                    replaced |= self.render(i).await;
                }
            }
            if let Some(events) = &self.events {
                let all_ok = self
                    .templates
                    .iter()
                    .all(|t| t.state.as_ref().is_some_and(|s| s.0));
                if !ready && all_ok {
                    ready = true;
                    let _ = events.send(Event::Ready);
                } else if ready && replaced {
                    let _ = events.send(Event::Changed);
                }
            }
            let wanted: BTreeSet<Dep> = self
                .templates
                .iter()
                .flat_map(|t| t.deps.iter().cloned())
                .collect();
            let before = self.watchers.len();
            self.watchers.set(wanted.iter(), &self.reader, &cancel);
            if self.watchers.len() != before {
                tracing::debug!("watching {} queries", self.watchers.len());
            }
            if self.mode.once && self.templates.iter().all(|t| t.settled) {
                cancel.cancel();
                let failed = self
                    .templates
                    .iter()
                    .any(|t| !t.state.as_ref().is_some_and(|s| s.0));
                return i32::from(failed);
            }
            if Instant::now() >= next_refresh {
                next_refresh = Instant::now() + refresh;
                for t in &self.templates {
                    if let (Some(r), Some((ok, out))) = (&self.reporter, &t.state) {
                        r.report(&t.cfg.destination.display().to_string(), *ok, out)
                            .await;
                    }
                }
            }
            let wake = self
                .templates
                .iter()
                .filter_map(|t| t.due)
                .min()
                .unwrap_or(next_refresh)
                .min(next_refresh);
            tokio::select! {
                Some(dep) = self.changes.recv() => self.changed(&dep),
                _ = tokio::time::sleep_until(wake) => {}
                _ = cancel.cancelled() => return 0,
            }
        }
    }

    /// Schedules every template that used `dep`, after its wait.
    fn changed(&mut self, dep: &Dep) {
        let now = Instant::now();
        for t in self.templates.iter_mut().filter(|t| t.deps.contains(dep)) {
            let wait = t.cfg.wait.or(self.wait).filter(|w| !w.min.is_zero());
            let first = *t.first_change.get_or_insert(now);
            t.due = Some(match wait {
                None => now,
                Some(w) => (now + w.min).min(first + w.max),
            });
        }
    }

    /// Renders template `i`; true when its file was replaced.
    async fn render(&mut self, i: usize) -> bool {
        let mut replaced = false;
        let r = self.templates[i].engine.render();
        let t = &mut self.templates[i];
        tracing::debug!("render {} => {}", t.cfg.name(), t.cfg.destination.display());
        t.deps = r.used;
        t.due = None;
        t.first_change = None;
        let name = t.cfg.name();
        let dest = t.cfg.destination.display().to_string();
        let waiting = matches!(r.outcome, Outcome::Waiting(_));
        let (ok, why) = match r.outcome {
            Outcome::Rendered(out) => {
                t.settled = true;
                if self.mode.dry {
                    println!("> {dest}\n{out}");
                    (true, format!("rendered {name} (dry run)"))
                } else {
                    let result = install(&t.cfg, &out).await;
                    replaced = matches!(result, Ok(Written::Replaced));
                    written(&t.cfg, &name, result).await
                }
            }
            Outcome::Waiting(missing) => {
                tracing::debug!(template = %name, "waiting for {}", missing.join(", "));
                (
                    false,
                    format!("{name}: waiting for data: {}", missing.join(", ")),
                )
            }
            Outcome::Failed(errors) => {
                t.settled |= self.mode.once;
                let why = format!("{name}: keeping the last {dest}: {}", errors.join("; "));
                tracing::warn!("{why}");
                (false, why)
            }
            Outcome::Error(e) => {
                t.settled = true;
                tracing::error!("{e}");
                (false, e)
            }
            Outcome::Short(short) => {
                t.settled |= self.mode.once;
                let why = format!("{name}: keeping the last {dest}: {}", short.join("; "));
                tracing::warn!("{why}");
                (false, why)
            }
        };
        // Waiting for the first answers is not reported during the startup grace: the check
        // is node-level, and a critical one would hide this node's services from the very
        // queries it waits for. Past the grace, a template still waiting is reported (and
        // logged) as critical, so one that waits forever is not silent.
        let starting =
            !t.settled && t.state.is_none() && waiting && t.since.elapsed() < STARTUP_GRACE;
        if starting && t.due.is_none() {
            t.due = Some(t.since + STARTUP_GRACE);
        }
        if !starting && t.state.as_ref() != Some(&(ok, why.clone())) {
            if waiting {
                tracing::warn!("{why}");
            }
            t.state = Some((ok, why.clone()));
            if let Some(r) = &self.reporter {
                r.report(&dest, ok, &why).await;
            }
        }
        replaced
    }
}

/// After an install: log it, run the command on a real change, and say the state.
async fn written(
    cfg: &TemplateConfig,
    name: &str,
    result: Result<Written, String>,
) -> (bool, String) {
    let dest = cfg.destination.display();
    match result {
        Ok(Written::Unchanged) => (true, format!("{dest} is up to date with {name}")),
        Ok(Written::Replaced) => {
            tracing::info!("rendered {name} => {dest}");
            let Some(cmd) = &cfg.command else {
                return (true, format!("rendered {name} => {dest}"));
            };
            match run(cmd, cfg.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT)).await {
                Ok(_) => (true, format!("rendered {name} => {dest}; ran {cmd:?}")),
                Err(e) => {
                    let why = format!("rendered {dest}, but command {cmd:?} failed: {e}");
                    tracing::error!("{why}");
                    (false, why)
                }
            }
        }
        Ok(Written::Refused(why)) => {
            let why = format!("{name}: keeping the last {dest}: {why}");
            tracing::warn!("{why}");
            (false, why)
        }
        Err(e) => {
            let why = format!("{name}: {e}");
            tracing::error!("{why}");
            (false, why)
        }
    }
}
