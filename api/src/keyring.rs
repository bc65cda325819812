//! `/v1/operator/keyring`: the gossip keyring of every member, listed or changed in one call.
//! The agent carries the operation to the members and gathers their answers
//! ([`crate::AgentControl::keyring`]); this file turns them into Consul's response and errors.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::ApiState;

/// A keyring operation, as `muster keyring` and the HTTP verbs name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringOp {
    List,
    Install(String),
    Use(String),
    Remove(String),
}

/// One member's answer: its keyring after the operation, or why the operation failed there.
#[derive(Debug, Clone, Default)]
pub struct KeyringAnswer {
    pub node: String,
    pub error: Option<String>,
    /// Base64 keys, primary first.
    pub keys: Vec<String>,
}

/// The answers gathered, and how many members were asked (this agent included).
#[derive(Debug, Clone, Default)]
pub struct KeyringOutcome {
    pub answers: Vec<KeyringAnswer>,
    pub num_nodes: usize,
}

/// Consul's `KeyringResponse`, for the LAN pool (Muster has no WAN pool).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyringResponse {
    #[serde(rename = "WAN")]
    wan: bool,
    datacenter: String,
    segment: String,
    messages: BTreeMap<String, String>,
    keys: BTreeMap<String, usize>,
    primary_keys: BTreeMap<String, usize>,
    num_nodes: usize,
}

fn response(dc: String, out: &KeyringOutcome) -> KeyringResponse {
    let mut r = KeyringResponse {
        wan: false,
        datacenter: dc,
        segment: String::new(),
        messages: BTreeMap::new(),
        keys: BTreeMap::new(),
        primary_keys: BTreeMap::new(),
        num_nodes: out.num_nodes,
    };
    for a in &out.answers {
        if let Some(e) = &a.error {
            r.messages.insert(a.node.clone(), e.clone());
            continue;
        }
        for k in &a.keys {
            *r.keys.entry(k.clone()).or_default() += 1;
        }
        if let Some(p) = a.keys.first() {
            *r.primary_keys.entry(p.clone()).or_default() += 1;
        }
    }
    r
}

/// Serf's summary of a fan-out that did not succeed everywhere, with each member's message,
/// worded as Consul's `keyringErrorsOrNil` and go-multierror print them.
fn failure(r: &KeyringResponse, out: &KeyringOutcome) -> Option<String> {
    let failed = out.answers.iter().filter(|a| a.error.is_some()).count();
    let summary = if failed > 0 {
        format!("{failed}/{} nodes reported failure", out.num_nodes)
    } else if out.answers.len() < out.num_nodes {
        format!(
            "{}/{} nodes responded success",
            out.answers.len(),
            out.num_nodes
        )
    } else {
        return None;
    };
    let mut errs = vec![format!("{} (LAN) error: {summary}", r.datacenter)];
    errs.extend(r.messages.iter().map(|(node, m)| format!("{node}: {m}")));
    let n = errs.len();
    let head = if n == 1 {
        "1 error occurred:".to_string()
    } else {
        format!("{n} errors occurred:")
    };
    let items: String = errs.iter().map(|e| format!("\n\t* {e}")).collect();
    Some(format!("{head}{items}\n\n"))
}

/// The `Key` of a request body, its name matched case-insensitively as Consul's decoder does.
/// A body that is not a JSON object is `None`; a missing `Key` is empty, which no member
/// accepts.
fn body_key(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let key = v
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("key"))
        .and_then(|(_, v)| v.as_str());
    Some(key.unwrap_or_default().to_string())
}

/// GET lists, POST installs, PUT uses, DELETE removes a key on every member.
pub(crate) async fn operator_keyring(
    State(st): State<ApiState>,
    method: Method,
    body: Bytes,
) -> Response {
    let op = match method {
        Method::GET => KeyringOp::List,
        Method::POST | Method::PUT | Method::DELETE => {
            let Some(key) = body_key(&body) else {
                return (
                    StatusCode::BAD_REQUEST,
                    "Request decode failed: expected an object",
                )
                    .into_response();
            };
            match method {
                Method::POST => KeyringOp::Install(key),
                Method::PUT => KeyringOp::Use(key),
                _ => KeyringOp::Remove(key),
            }
        }
        _ => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
    };
    let list = op == KeyringOp::List;
    let Some(out) = st.agent.keyring(op).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "encryption not enabled").into_response();
    };
    let r = response(st.agent.datacenter(), &out);
    if list {
        return Json(vec![r]).into_response();
    }
    match failure(&r, &out) {
        Some(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        None => ().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(node: &str, keys: &[&str], error: Option<&str>) -> KeyringAnswer {
        KeyringAnswer {
            node: node.into(),
            error: error.map(str::to_string),
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn answers_are_counted_per_key_and_failures_worded_as_serf() {
        let out = KeyringOutcome {
            answers: vec![
                answer("a", &["K1", "K2"], None),
                answer("b", &["K2", "K1"], None),
                answer("c", &[], Some("Removing the primary key is not allowed")),
            ],
            num_nodes: 4,
        };
        let r = response("dc1".into(), &out);
        assert_eq!(r.keys, BTreeMap::from([("K1".into(), 2), ("K2".into(), 2)]));
        assert_eq!(r.primary_keys["K1"], 1);
        assert_eq!(r.num_nodes, 4);
        assert_eq!(
            failure(&r, &out).unwrap(),
            "2 errors occurred:\n\t* dc1 (LAN) error: 1/4 nodes reported failure\n\t* c: \
             Removing the primary key is not allowed\n\n"
        );
        let quiet = KeyringOutcome {
            answers: vec![answer("a", &["K1"], None)],
            num_nodes: 2,
        };
        let r = response("dc1".into(), &quiet);
        assert!(failure(&r, &quiet)
            .unwrap()
            .contains("1/2 nodes responded success"));
        assert_eq!(body_key(br#"{"key": "K"}"#).as_deref(), Some("K"));
    }
}
