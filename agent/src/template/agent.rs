//! The agent's own `template` blocks: one runner started with the HTTP API, reading and
//! reporting through the agent's own plain HTTP listener (as its `watches` do), stopped
//! when the agent leaves.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::report::{CheckReporter, Http};
use super::runner::{Mode, Reporter, Runner};
use super::{RunnerConfig, TemplateConfig};
use crate::watch::AgentFetch;

impl Http for AgentFetch {
    fn put<'a>(&'a self, path: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<u16, String>> {
        Box::pin(async move {
            let mut req = self.http.put(format!("{}{path}", self.base)).body(body);
            if let Some(t) = &self.token {
                req = req.header("X-Consul-Token", t);
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            Ok(resp.status().as_u16())
        })
    }
}

/// Starts the runner for `templates` against the HTTP API at `http`, presenting `token` (the
/// agent's own, `acl.tokens.agent`; without one the agent's `default` token applies). The
/// templates were parsed when the config was read (`config::agent_blocks`), so this cannot
/// fail on them.
pub fn start(
    templates: &[TemplateConfig],
    http: Option<SocketAddr>,
    token: Option<String>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let Some(addr) = http.filter(|_| !templates.is_empty()) else {
        return;
    };
    let loopback = Arc::new(AgentFetch::new(addr).with_token(token));
    let reporter: Arc<dyn Reporter> = Arc::new(CheckReporter::new(loopback.clone()));
    let cfg = RunnerConfig {
        templates: templates.to_vec(),
        ..RunnerConfig::default()
    };
    match Runner::new(&cfg, Mode::default(), loopback, Some(reporter)) {
        Ok(runner) => {
            let cancel = cancel.child_token();
            tasks.spawn(async move {
                runner.run(cancel).await;
            });
            tracing::info!(count = templates.len(), "templates started");
        }
        Err(e) => tracing::error!("templates not started: {e}"),
    }
}
