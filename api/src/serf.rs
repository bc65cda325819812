//! Serf's queries and remote exec, which Consul's HTTP API lacks (Consul's exec goes through
//! KV): `PUT /v1/agent/query/<name>` and `PUT /v1/agent/exec`. The agent carries them on the
//! gossip layer and members answer it directly ([`crate::AgentControl::query`],
//! [`crate::AgentControl::exec`]); never Raft. Both answer a stream of JSON lines, one per
//! ack, response, output chunk or exit as it arrives, then a summary line, so `muster query`
//! and `muster exec` print as things happen and curl users can read the same.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::go_duration;
use muster_server::acl::{Access, Resource};

use crate::acl::RequestToken;
use crate::params::Params;
use crate::ApiState;

/// A query to dispatch: Serf's `QueryParam`.
#[derive(Debug, Clone, Default)]
pub struct QueryRequest {
    pub name: String,
    pub payload: Vec<u8>,
    /// Regexes matched against a whole node name; a node matches any one of them.
    pub nodes: Vec<String>,
    /// Tag name and regex; a node must match every one.
    pub tags: Vec<(String, String)>,
    /// How long to gather answers; `None`: Serf's default for the cluster's size.
    pub timeout: Option<Duration>,
    pub request_ack: bool,
}

/// One line of a query's answer stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", rename_all = "lowercase")]
pub enum QueryEvent {
    Ack {
        #[serde(rename = "From")]
        from: String,
    },
    Response {
        #[serde(rename = "From")]
        from: String,
        /// The handler's output, as text (lossy where it is not UTF-8).
        #[serde(rename = "Payload")]
        payload: String,
    },
    /// A member could not answer (its response was over the limit, say).
    Error {
        #[serde(rename = "From")]
        from: String,
        #[serde(rename = "Error")]
        reason: String,
    },
    /// The last line: who was expected (the live members the asking agent can tell match
    /// the filters) and who acked and responded.
    Done {
        #[serde(rename = "Expected")]
        expected: Vec<String>,
        #[serde(rename = "Acks")]
        acks: Vec<String>,
        #[serde(rename = "Responses")]
        responses: Vec<String>,
    },
}

/// A command to run on the members: Consul's `rExecSpec` plus its filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecRequest {
    /// Run with `/bin/sh -c` when `Shell` (the default).
    pub command: String,
    /// Run directly, without a shell (`-shell=false`).
    pub args: Vec<String>,
    /// A script to run with the shell (`muster exec -`), as text.
    pub script: String,
    pub node: String,
    pub service: String,
    pub tag: String,
    /// The quiet period after which the stream ends (Go duration; Consul's `-wait`, 2s).
    pub wait: String,
}

/// One line of an exec's answer stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", rename_all = "lowercase")]
pub enum ExecEvent {
    Ack {
        #[serde(rename = "Node")]
        node: String,
    },
    Output {
        #[serde(rename = "Node")]
        node: String,
        /// The chunk as text (lossy where it is not UTF-8).
        #[serde(rename = "Output")]
        output: String,
    },
    /// Output beyond the per-node limit was dropped.
    Truncated {
        #[serde(rename = "Node")]
        node: String,
        #[serde(rename = "Limit")]
        limit: usize,
    },
    Exit {
        #[serde(rename = "Node")]
        node: String,
        #[serde(rename = "Code")]
        code: i32,
    },
    /// The member will not run it (remote exec disabled there), and why.
    Refused {
        #[serde(rename = "Node")]
        node: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
    /// The member acknowledged but gave no exit code: it died, or went quiet.
    Lost {
        #[serde(rename = "Node")]
        node: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
    /// The last line.
    Done {
        #[serde(rename = "Acks")]
        acks: usize,
        #[serde(rename = "Exits")]
        exits: usize,
    },
}

/// Whether the caller may run a command on the named node (`agent:write` on it): the reason
/// when not. Asked as each member answers, so a denied member is told not to run and the
/// caller sees why.
pub type NodeCheck = std::sync::Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Consul's `-wait` default for exec.
pub const EXEC_DEFAULT_WAIT: Duration = Duration::from_secs(2);

/// A stream of JSON lines from `rx`. When the client goes away the stream, and with it `rx`,
/// is dropped: the agent's sender fails and its task ends.
fn lines<T: Serialize + Send + 'static>(rx: mpsc::Receiver<T>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(Bytes::from(line)), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `PUT /v1/agent/query/<name>?node=RE&tag=K=RE&timeout=D&no-ack`, the body as payload.
pub(crate) async fn query(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref());
    let mut tags = Vec::new();
    for t in p.all("tag") {
        match t.split_once('=') {
            Some((k, re)) if !k.is_empty() => tags.push((k.to_string(), re.to_string())),
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("Invalid tag filter {t:?}: expected key=regexp"),
                )
                    .into_response()
            }
        }
    }
    let timeout = match p.get("timeout").filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => match go_duration(t).filter(|d| !d.is_zero()) {
            Some(d) => Some(d),
            None => {
                return (StatusCode::BAD_REQUEST, format!("Invalid timeout {t:?}")).into_response()
            }
        },
    };
    let req = QueryRequest {
        name,
        payload: body.to_vec(),
        nodes: p.all("node").to_vec(),
        tags,
        timeout,
        request_ack: !p.has("no-ack"),
    };
    match st.agent.query(req).await {
        Ok(rx) => lines(rx),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// `PUT /v1/agent/exec` with an [`ExecRequest`] body.
pub(crate) async fn exec(
    State(st): State<ApiState>,
    tok: Option<Extension<RequestToken>>,
    body: Bytes,
) -> Response {
    let req: ExecRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: {e}"),
            )
                .into_response()
        }
    };
    let may_run: NodeCheck = match tok {
        Some(Extension(t)) => std::sync::Arc::new(move |node: &str| {
            t.authz
                .check(Resource::Agent, node, Access::Write)
                .map_err(|d| d.to_string())
        }),
        None => std::sync::Arc::new(|_: &str| Ok(())),
    };
    match st.agent.exec(req, may_run).await {
        Ok(rx) => lines(rx),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}
