//! Watches, as Consul's `api/watch` runs them: a plan per watch (`plan`) makes blocking reads
//! of the local agent's HTTP API for one view (`types`: a key, a prefix, the services, the
//! nodes, a service's instances, checks, user events) and runs a handler (`handler`) once per
//! change. `muster watch` (`cli/watch.rs`) runs one plan; the agent runs one per `watches`
//! config entry (parsed in `config/watches.rs`) once its HTTP API is up, and stops them with
//! the HTTP server when it leaves.

pub mod handler;
pub mod plan;
pub mod types;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use handler::{HandlerDef, HttpHandlerConfig};
pub use plan::{Fetch, Fetched, Handler};
pub use types::{Spec, WatchType};

/// One `watches` entry: what to watch and what to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchDef {
    pub spec: Spec,
    pub handler: HandlerDef,
}

/// A reply's `X-Consul-Index` (0 when absent or malformed).
pub(crate) fn consul_index(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads the agent's own HTTP listener, as Consul's agent points its plans at its HTTP
/// address (and as its `template` blocks read).
pub(crate) struct AgentFetch {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    /// Sent when a request names no token of its own (the agent's `acl.tokens.agent`).
    pub(crate) token: Option<String>,
}

impl AgentFetch {
    /// The agent's listener at `addr`; a wildcard client address is served on loopback too.
    pub(crate) fn new(mut addr: SocketAddr) -> AgentFetch {
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        AgentFetch {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            token: None,
        }
    }

    /// The same, presenting `token` when a request names none.
    pub(crate) fn with_token(mut self, token: Option<String>) -> AgentFetch {
        self.token = token;
        self
    }
}

impl Fetch for AgentFetch {
    fn get<'a>(&'a self, path: &'a str, token: Option<&'a str>) -> BoxFuture<'a, Fetched> {
        Box::pin(async move {
            let mut req = self.http.get(format!("{}{path}", self.base));
            if let Some(t) = token.or(self.token.as_deref()) {
                req = req.header("X-Consul-Token", t);
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let code = resp.status().as_u16();
            let index = consul_index(resp.headers());
            let body = resp.bytes().await.map_err(|e| e.to_string())?;
            Ok((code, index, body.to_vec()))
        })
    }
}

/// Starts one plan per `watches` entry against the HTTP API at `http`, each stopping when
/// `cancel` fires. Config validation refuses watches without an HTTP listener.
pub fn start(
    watches: &[WatchDef],
    http: Option<SocketAddr>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let Some(addr) = http.filter(|_| !watches.is_empty()) else {
        return;
    };
    let fetch = Arc::new(AgentFetch::new(addr));
    for w in watches {
        let spec = w.spec.clone();
        let mut handler = handler::AgentHandler::new(w.handler.clone());
        let fetch = fetch.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            plan::run(&spec, fetch.as_ref(), &mut handler, &cancel).await;
        });
    }
    tracing::info!(count = watches.len(), "watch plans started");
}
