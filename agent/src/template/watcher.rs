//! One task per distinct query, shared by every template that makes it: blocking reads
//! (`?index=N&wait=…`, Consul's rules: an index that goes backwards restarts from 0, a
//! failed read backs off and restarts from 0), polls for what cannot block (`datacenters`,
//! files). Each answer goes to the [`Brain`]; a change is sent to the runner by query.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::brain::Brain;
use super::deps::Dep;
use crate::watch::Fetch;
use muster_server::sync::lock;

/// How long the agent may hold a blocking read.
const BLOCK: &str = "60s";
/// How long one read may take before the agent counts as unreachable.
const READ_TIMEOUT: Duration = Duration::from_secs(90);
/// How often what cannot block is read again.
const POLL: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Where and how watchers read.
#[derive(Clone)]
pub struct Reader {
    pub fetch: Arc<dyn Fetch>,
    /// Reads may be answered by any server (`max_stale` set).
    pub stale: bool,
    pub brain: Arc<Mutex<Brain>>,
    /// Each changed query, for the runner.
    pub changed: UnboundedSender<Dep>,
}

/// The running watchers, one per query.
#[derive(Default)]
pub struct Watchers {
    running: HashMap<Dep, CancellationToken>,
}

impl Watchers {
    /// Makes the running set exactly `wanted`: starts what is new, stops and forgets what no
    /// template uses any more.
    pub fn set<'a>(
        &mut self,
        wanted: impl Iterator<Item = &'a Dep>,
        reader: &Reader,
        cancel: &CancellationToken,
    ) {
        let wanted: std::collections::HashSet<&Dep> = wanted.collect();
        self.running.retain(|dep, token| {
            let keep = wanted.contains(dep);
            if !keep {
                token.cancel();
                lock(&reader.brain).forget(dep);
            }
            keep
        });
        for dep in wanted {
            if self.running.contains_key(dep) {
                continue;
            }
            let token = cancel.child_token();
            self.running.insert(dep.clone(), token.clone());
            tokio::spawn(watch(dep.clone(), reader.clone(), token));
        }
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

/// The local agent's node name, for `node` without an argument.
async fn local_node(fetch: &dyn Fetch) -> Result<String, String> {
    let (status, _, body) = fetch.get("/v1/agent/self", None).await?;
    if status != 200 {
        return Err(format!(
            "agent/self: unexpected response code: {status} ({})",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    v["Config"]["NodeName"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "agent/self: no Config.NodeName".into())
}

/// One read of `dep` after `index`: its new index and answer.
async fn read(
    dep: &Dep,
    r: &Reader,
    index: u64,
    node: &mut Option<String>,
) -> Result<(u64, Result<gotmpl::Value, String>), String> {
    if let Dep::File(path) = dep {
        return Ok(match tokio::fs::read(path).await {
            Ok(bytes) => (0, dep.decode(200, &bytes)),
            Err(e) => (0, Err(format!("file({path}): {e}"))),
        });
    }
    if matches!(dep, Dep::Node { node: None, .. }) && node.is_none() {
        *node = Some(local_node(r.fetch.as_ref()).await?);
    }
    let Some(path) = dep.path(node.as_deref().unwrap_or("")) else {
        return Err(format!("{}: nothing to read", dep.display()));
    };
    let mut extra = Vec::new();
    if dep.blocks() && index > 0 {
        extra.push(format!("index={index}&wait={BLOCK}"));
    }
    if r.stale {
        extra.push("stale".into());
    }
    let url = if extra.is_empty() {
        path
    } else {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{path}{sep}{}", extra.join("&"))
    };
    // The agent holds a blocking read up to BLOCK plus 1/16 of jitter; no answer well past
    // that is a hung agent, not a quiet one.
    let (status, new_index, body) = tokio::time::timeout(READ_TIMEOUT, r.fetch.get(&url, None))
        .await
        .map_err(|_| {
            format!(
                "{}: no answer from the agent within {READ_TIMEOUT:?}",
                dep.display()
            )
        })?
        .map_err(|e| format!("{}: agent unreachable: {e}", dep.display()))?;
    let answer = dep
        .decode(status, &body)
        .map_err(|e| format!("{}: {e}", dep.display()));
    Ok((new_index, answer))
}

/// Watches `dep` until `cancel`.
async fn watch(dep: Dep, r: Reader, cancel: CancellationToken) {
    let mut index = 0u64;
    let mut backoff = BACKOFF_MIN;
    let mut node = None;
    let mut failures = 0u32;
    loop {
        let outcome = tokio::select! {
            o = read(&dep, &r, index, &mut node) => o,
            _ = cancel.cancelled() => return,
        };
        let (pause, result, at) = match outcome {
            Ok((new_index, Ok(v))) => {
                backoff = BACKOFF_MIN;
                // Consul's rule: an index that goes backwards restarts from 0.
                index = if new_index < index { 0 } else { new_index };
                let pause = (!dep.blocks() || new_index == 0).then_some(POLL);
                (pause, Ok(v), new_index)
            }
            Ok((_, Err(e))) | Err(e) => {
                index = 0;
                failures += 1;
                let pause = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                (Some(pause), Err(e), 0)
            }
        };
        // One failed read in a row is retried before it counts: an election or a dropped
        // connection should not flap the templates' checks.
        let counts = result.is_ok() || failures >= 2;
        if result.is_ok() {
            failures = 0;
        }
        if counts && lock(&r.brain).record(&dep, at, result) && r.changed.send(dep.clone()).is_err()
        {
            return;
        }
        if let Some(p) = pause {
            tokio::select! {
                _ = tokio::time::sleep(p) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
}
