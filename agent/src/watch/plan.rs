//! One watch plan's loop, as Consul's `api/watch/plan.go` runs it: a blocking read of the
//! local agent's HTTP API with `?index=` the last index seen; the handler runs only when the
//! index moved *and* the result differs from the last one handed over (Consul compares with
//! `reflect.DeepEqual`, here JSON value equality), and once for the first result. An index
//! that goes backwards resets the next read to index 0. A failed read backs off 5 s times the
//! square of the failures in a row, at most 180 s, and the next result runs the handler
//! whatever it holds, as Consul forgets the index on an error.

use std::ops::ControlFlow;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::types::{Spec, WatchType};

/// Consul's `retryInterval`: the back-off's unit.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// Consul's `maxBackoffTime`.
const MAX_BACKOFF: Duration = Duration::from_secs(180);

/// A read's answer: status, `X-Consul-Index` and body; or why no answer came.
pub type Fetched = Result<(u16, u64, Vec<u8>), String>;

/// How a plan reads the agent: `muster watch` with the CLI's client (its address, token and
/// TLS flags), the agent's own watches with a client for its HTTP listener.
pub trait Fetch: Send + Sync {
    /// GETs `path` (with its query); `token`, when given, goes in `X-Consul-Token`.
    fn get<'a>(&'a self, path: &'a str, token: Option<&'a str>) -> BoxFuture<'a, Fetched>;
}

/// What runs on a change: given the index and Consul's JSON for the watch type. `Break`
/// stops the plan (`muster watch` stops when its handler fails).
pub trait Handler: Send {
    fn handle<'a>(&'a mut self, index: u64, data: &'a Value) -> BoxFuture<'a, ControlFlow<()>>;

    /// A failed read, before the back-off; the agent logs it, `muster watch` prints it.
    fn errored(&mut self, type_name: &str, error: &str, retry: Duration) {
        tracing::error!(r#type = %type_name, %error, ?retry, "Watch errored");
    }
}

/// The last index and result, and the rule that decides whether a new one is a change.
#[derive(Debug, Default)]
struct Seen {
    /// Consul's `lastParamVal`: `None` at the start and after an error.
    index: Option<u64>,
    /// Consul's `lastResult`: what the handler was last given.
    result: Option<Value>,
}

impl Seen {
    /// The index the next read blocks on.
    fn wait_index(&self) -> u64 {
        self.index.unwrap_or(0)
    }

    /// Takes a read's answer; true when the handler must run for it. An index that went
    /// backwards starts over from 0 (Consul's `WaitIndexVal.Next`), unless the indexes are
    /// not `ordered`: an event list's index is a hash of its last event's ID, and starting
    /// over there would hand the handler every event again (as Consul's event watch does).
    fn observe(&mut self, index: u64, result: &Value, ordered: bool) -> bool {
        if self.index == Some(index) {
            return false;
        }
        let old = self.index;
        self.index = Some(match old {
            Some(prev) if ordered && prev > index => 0,
            _ => index,
        });
        if old.is_some() && self.result.as_ref() == Some(result) {
            return false;
        }
        self.result = Some(result.clone());
        true
    }

    /// A failed read: Consul's funcs return no index with an error, so the plan forgets it.
    fn failed(&mut self) {
        self.index = None;
    }
}

/// Runs `spec` until `cancel` fires or the handler asks to stop.
pub async fn run(
    spec: &Spec,
    fetch: &dyn Fetch,
    handler: &mut dyn Handler,
    cancel: &CancellationToken,
) {
    let mut seen = Seen::default();
    let mut failures: u32 = 0;
    let base = spec.path();
    let sep = if base.contains('?') { '&' } else { '?' };
    loop {
        let last = seen.wait_index();
        let path = if last == 0 {
            base.clone()
        } else {
            format!("{base}{sep}index={last}")
        };
        let got = tokio::select! {
            _ = cancel.cancelled() => return,
            got = fetch.get(&path, spec.token.as_deref()) => got,
        };
        let (index, mut result) = match got
            .and_then(|(code, index, body)| decode(spec, code, &body).map(|v| (index, v)))
        {
            Ok(r) => r,
            Err(error) => {
                failures += 1;
                seen.failed();
                let retry = (RETRY_INTERVAL * failures.saturating_mul(failures)).min(MAX_BACKOFF);
                handler.errored(&spec.type_name, &error, retry);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(retry) => continue,
                }
            }
        };
        failures = 0;
        let events = matches!(spec.kind, WatchType::Event { .. });
        if events {
            if let Some(i) = seen.index {
                prune_events(&mut result, i);
            }
        }
        if !seen.observe(index, &result, !events) {
            continue;
        }
        let flow = tokio::select! {
            _ = cancel.cancelled() => return,
            flow = handler.handle(index, &result) => flow,
        };
        if flow.is_break() {
            return;
        }
    }
}

/// A read's body as the watch type's result; errors worded as Consul's API client words them.
fn decode(spec: &Spec, code: u16, body: &[u8]) -> Result<Value, String> {
    if code == 404 && spec.not_found_is_empty() {
        return Ok(Value::Null);
    }
    if !(200..300).contains(&code) {
        let text = String::from_utf8_lossy(body);
        return Err(format!(
            "Unexpected response code: {code} ({})",
            text.trim()
        ));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("decode response: {e}"))?;
    Ok(match spec.kind {
        // `kv.Get` returns the one entry the list holds.
        WatchType::Key { .. } => match v {
            Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
            Value::Array(_) => Value::Null,
            other => other,
        },
        _ => v,
    })
}

/// Keeps only the events after the one whose ID maps to `last` (Consul's `eventWatch`: the
/// event list's index is derived from its last event's ID).
fn prune_events(result: &mut Value, last: u64) {
    let Value::Array(events) = result else { return };
    let seen_at = events.iter().position(|e| {
        e.get("ID")
            .and_then(Value::as_str)
            .and_then(id_to_index)
            .is_some_and(|i| i == last)
    });
    if let Some(at) = seen_at {
        events.drain(..=at);
    }
}

/// Consul's `Event.IDToIndex`: the XOR of a UUID's two 64-bit halves.
pub fn id_to_index(uuid: &str) -> Option<u64> {
    if uuid.len() != 36 || !uuid.is_ascii() {
        return None;
    }
    let lower = format!("{}{}{}", &uuid[0..8], &uuid[9..13], &uuid[14..18]);
    let upper = format!("{}{}", &uuid[19..23], &uuid[24..36]);
    let low = u64::from_str_radix(&lower, 16).ok()?;
    let high = u64::from_str_radix(&upper, 16).ok()?;
    Some(low ^ high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runs_for_the_first_result_then_only_for_changes() {
        let mut s = Seen::default();
        assert!(
            s.observe(5, &json!(null), true),
            "the first result runs the handler"
        );
        assert!(!s.observe(5, &json!(null), true), "same index: no run");
        assert!(
            !s.observe(7, &json!(null), true),
            "index moved, same result: no run"
        );
        assert!(s.observe(9, &json!([{"k": 1}]), true));
        assert_eq!(s.wait_index(), 9);
    }

    #[test]
    fn an_index_going_backwards_resets_to_zero() {
        let mut s = Seen::default();
        assert!(s.observe(10, &json!(1), true));
        assert!(!s.observe(4, &json!(1), true));
        assert_eq!(s.wait_index(), 0);
        assert!(s.observe(4, &json!(2), true));
        assert_eq!(s.wait_index(), 4);
        // An event list's index is a hash: a smaller one is just the next.
        let mut s = Seen::default();
        assert!(s.observe(10, &json!([1]), false));
        assert!(s.observe(4, &json!([2]), false));
        assert_eq!(s.wait_index(), 4);
    }

    #[test]
    fn after_an_error_the_next_result_runs_the_handler() {
        let mut s = Seen::default();
        assert!(s.observe(3, &json!("a"), true));
        s.failed();
        assert_eq!(s.wait_index(), 0);
        assert!(s.observe(3, &json!("a"), true));
    }

    #[test]
    fn event_ids_map_to_consuls_index_and_prune_the_seen_ones() {
        let a = "00000000-0000-0001-0000-000000000003";
        let b = "00000000-0000-0002-0000-000000000000";
        assert_eq!(id_to_index(a), Some(1 ^ 3));
        assert_eq!(id_to_index("nope"), None);
        let mut list = json!([{"ID": a}, {"ID": b}]);
        prune_events(&mut list, 5);
        assert_eq!(list, json!([{"ID": a}, {"ID": b}]), "no event has index 5");
        prune_events(&mut list, 1 ^ 3);
        assert_eq!(list, json!([{"ID": b}]));
    }

    /// Answers from a script, recording the paths asked; cancels the plan when it runs out.
    struct Scripted {
        answers: std::sync::Mutex<Vec<Fetched>>,
        paths: std::sync::Mutex<Vec<String>>,
        done: CancellationToken,
    }

    impl Fetch for Scripted {
        fn get<'a>(&'a self, path: &'a str, _: Option<&'a str>) -> BoxFuture<'a, Fetched> {
            Box::pin(async move {
                self.paths.lock().unwrap().push(path.to_string());
                let next = {
                    let mut a = self.answers.lock().unwrap();
                    (!a.is_empty()).then(|| a.remove(0))
                };
                match next {
                    Some(answer) => answer,
                    None => {
                        self.done.cancel();
                        futures::future::pending().await
                    }
                }
            })
        }
    }

    #[derive(Default)]
    struct Calls(Vec<(u64, Value)>);

    impl Handler for Calls {
        fn handle<'a>(&'a mut self, i: u64, v: &'a Value) -> BoxFuture<'a, ControlFlow<()>> {
            self.0.push((i, v.clone()));
            Box::pin(async { ControlFlow::Continue(()) })
        }
    }

    #[tokio::test]
    async fn an_event_watch_hands_over_only_new_events() {
        let spec = super::super::types::parse(
            json!({"type": "event", "name": "deploy"})
                .as_object()
                .unwrap()
                .clone(),
            &[],
        )
        .unwrap();
        let (e1, e2) = (
            "00000000-0000-0001-0000-000000000003",
            "00000000-0000-0004-0000-000000000000",
        );
        let (i1, i2) = (id_to_index(e1).unwrap(), id_to_index(e2).unwrap());
        let list = |ids: &[&str]| {
            let v: Vec<Value> = ids
                .iter()
                .map(|id| json!({"ID": id, "Name": "deploy"}))
                .collect();
            serde_json::to_vec(&v).unwrap()
        };
        let fetch = Scripted {
            answers: std::sync::Mutex::new(vec![
                Ok((200, i1, list(&[e1]))),
                Ok((200, i2, list(&[e1, e2]))),
                Ok((200, i2, list(&[e1, e2]))),
            ]),
            paths: Default::default(),
            done: CancellationToken::new(),
        };
        let mut calls = Calls::default();
        let done = fetch.done.clone();
        run(&spec, &fetch, &mut calls, &done).await;
        let ids = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|e| e["ID"].as_str().unwrap().into())
                .collect()
        };
        assert_eq!(calls.0.len(), 2, "{:?}", calls.0);
        assert_eq!(ids(&calls.0[0].1), [e1]);
        assert_eq!(
            ids(&calls.0[1].1),
            [e2],
            "only the event after the last index"
        );
        let paths = fetch.paths.lock().unwrap().clone();
        assert_eq!(paths[0], "/v1/event/list?name=deploy");
        assert_eq!(paths[1], format!("/v1/event/list?name=deploy&index={i1}"));
    }
}
