//! Serf-style event handlers: shell commands run for membership events (and, through the
//! same queue, for user events and queries). One agent's handlers run one at a time, in the
//! order the events came and the handlers were given, each bounded by a timeout; a failing
//! or hanging handler is logged and the next event is still delivered.
//!
//! `filter` parses `[FILTER=]SCRIPT`, `coalesce` gathers gossip's member changes into
//! events, `event` says what a handler gets for each, and `script` runs one handler.

mod coalesce;
mod event;
mod filter;
mod script;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) use event::{Event, Responder};
pub use event::{EventMember, MemberEvent, MemberEventKind};
pub use filter::EventScript;
use script::Ending;

/// A handler still running after this is logged as slow (Serf's `warnSlow`).
const WARN_SLOW: Duration = Duration::from_secs(1);

/// A handler's timeout unless `event_handler_timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the runner needs: the handlers, their timeout, and this agent's own name and tags
/// (for `SERF_SELF_*` and `SERF_TAG_*`).
pub(crate) struct RunnerConfig {
    pub(crate) scripts: Vec<EventScript>,
    pub(crate) timeout: Duration,
    pub(crate) self_name: String,
    pub(crate) node_meta: BTreeMap<String, String>,
    /// This agent's public gossip tags (its `role` among them).
    pub(crate) tags: BTreeMap<String, String>,
}

impl RunnerConfig {
    /// The environment every handler gets besides `SERF_EVENT`: `SERF_SELF_NAME`,
    /// `SERF_SELF_ROLE` and a `SERF_TAG_<NAME>` per tag, its name upper-cased and every
    /// character outside `[A-Z0-9_]` made `_` (Serf's rule). The tags are the node meta and
    /// the gossip tags, which win where both have a key.
    fn self_env(&self) -> Vec<(String, String)> {
        let mut all = self.node_meta.clone();
        all.extend(self.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        let role = self.tags.get("role").cloned().unwrap_or_default();
        let mut env = vec![
            ("SERF_SELF_NAME".to_string(), self.self_name.clone()),
            ("SERF_SELF_ROLE".to_string(), role),
        ];
        for (k, v) in all {
            let name: String = k
                .to_uppercase()
                .chars()
                .map(|c| {
                    if c.is_ascii_uppercase() || c.is_ascii_digit() {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            env.push((format!("SERF_TAG_{name}"), v));
        }
        env
    }
}

/// Starts the coalescer and the worker; returns the sender gossip reports member changes on,
/// and the queue further event sources (user events, queries) send to.
pub(crate) fn start(
    config: RunnerConfig,
    cancel: CancellationToken,
) -> (
    mpsc::UnboundedSender<MemberEvent>,
    mpsc::UnboundedSender<Event>,
) {
    let (member_tx, member_rx) = mpsc::unbounded_channel();
    let (queue_tx, queue_rx) = mpsc::unbounded_channel();
    tokio::spawn(coalesce::run(member_rx, queue_tx.clone(), cancel.clone()));
    tokio::spawn(work(config, queue_rx, cancel));
    (member_tx, queue_tx)
}

/// The one worker: each event in turn, each matching handler in turn.
async fn work(
    config: RunnerConfig,
    mut queue: mpsc::UnboundedReceiver<Event>,
    cancel: CancellationToken,
) {
    let self_env = config.self_env();
    while let Some(event) = next(&mut queue, &cancel).await {
        for h in config
            .scripts
            .iter()
            .filter(|h| h.matches(event.kind(), event.name()))
        {
            let mut env = vec![("SERF_EVENT".to_string(), event.kind().to_string())];
            env.extend(self_env.iter().cloned());
            env.extend(event.env());
            tokio::select! {
                _ = cancel.cancelled() => return,
                o = run_one(h, event.kind(), &env, event.stdin(), config.timeout) => {
                    if matches!(o.ending, Ending::Exited(s) if s.success()) {
                        event.respond(&o.stdout);
                    }
                    report(h, event.kind(), config.timeout, o);
                }
            }
        }
    }
}

/// Runs one handler, warning once it runs past `WARN_SLOW`, as Serf does.
async fn run_one(
    h: &EventScript,
    event: &str,
    env: &[(String, String)],
    stdin: Vec<u8>,
    timeout: Duration,
) -> script::Outcome {
    let run = script::run(&h.script, env, stdin, timeout);
    tokio::pin!(run);
    if let Ok(o) = tokio::time::timeout(WARN_SLOW, &mut run).await {
        return o;
    }
    tracing::warn!(handler = %h, event, "event handler slow, running past {WARN_SLOW:?}");
    run.await
}

/// The next item on `rx`; `None` once it is closed or `cancel` fires.
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, cancel: &CancellationToken) -> Option<T> {
    tokio::select! {
        _ = cancel.cancelled() => None,
        v = rx.recv() => v,
    }
}

/// Logs how a handler run ended: a failure or a timeout with its stderr, success at debug.
fn report(h: &EventScript, event: &str, timeout: Duration, o: script::Outcome) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stderr = stderr.trim_end();
    match o.ending {
        Ending::Exited(s) if s.success() => {
            let stdout = String::from_utf8_lossy(&o.stdout);
            tracing::debug!(handler = %h, event, output = %stdout.trim_end(), "event handler done");
        }
        Ending::Exited(status) => {
            tracing::warn!(handler = %h, event, %status, stderr, "event handler failed");
        }
        Ending::TimedOut => {
            tracing::warn!(
                handler = %h, event, timeout = ?timeout, stderr,
                "event handler timed out and was killed with its process group"
            );
        }
        Ending::Error(e) => {
            tracing::warn!(handler = %h, event, error = %e, "event handler could not run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_env_is_serfs() {
        let c = RunnerConfig {
            scripts: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            self_name: "n1".into(),
            node_meta: [("rack-id.x", "r1"), ("role", "meta")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tags: [("role".to_string(), "consul".to_string())].into(),
        };
        let env = c.self_env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SERF_SELF_NAME"), Some("n1"));
        assert_eq!(get("SERF_SELF_ROLE"), Some("consul"));
        assert_eq!(get("SERF_TAG_ROLE"), Some("consul"));
        assert_eq!(get("SERF_TAG_RACK_ID_X"), Some("r1"));
    }

    #[tokio::test]
    async fn handlers_run_in_order_and_a_failure_does_not_stop_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let rec = format!("echo \"$SERF_EVENT $(cat)\" >> {}", out.display());
        let scripts = ["member-join=exit 7", "member-join=sleep 30", &rec]
            .iter()
            .map(|s| EventScript::parse(s).unwrap())
            .collect();
        let config = RunnerConfig {
            scripts,
            timeout: Duration::from_millis(300),
            self_name: "n1".into(),
            node_meta: BTreeMap::new(),
            tags: BTreeMap::new(),
        };
        let cancel = CancellationToken::new();
        let (_members, queue) = start(config, cancel.clone());
        for kind in [MemberEventKind::Join, MemberEventKind::Failed] {
            let member = EventMember {
                name: "a".into(),
                addr: "127.0.0.1".parse().unwrap(),
                tags: BTreeMap::new(),
            };
            queue
                .send(Event::Member {
                    kind,
                    members: vec![member],
                })
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let want = "member-join a\t127.0.0.1\t\t\nmember-failed a\t127.0.0.1\t\t\n";
        while std::fs::read_to_string(&out).unwrap_or_default() != want {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                std::fs::read_to_string(&out)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
    }
}
