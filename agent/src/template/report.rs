//! Each template's state as the TTL check `template:<dest>` on the agent the renderer reads
//! from: registered on first report (and again when the agent forgot it), updated with the
//! state and its reason, refreshed by the runner every minute so it expires when the renderer
//! is gone. A failure to report is logged once until reporting works again.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::json;

use super::runner::Reporter;
use crate::watch::Fetch;
use muster_server::sync::lock;

/// The agent's HTTP API: reads, and the writes a reporter makes.
pub trait Http: Fetch {
    /// A PUT of a JSON body; the status, or why it was not answered.
    fn put<'a>(&'a self, path: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<u16, String>>;
}

/// How long a template check stays as reported without a refresh.
const TTL: &str = "3m";

pub struct CheckReporter {
    http: Arc<dyn Http>,
    warned: Mutex<bool>,
}

impl CheckReporter {
    pub fn new(http: Arc<dyn Http>) -> CheckReporter {
        CheckReporter {
            http,
            warned: Mutex::new(false),
        }
    }

    async fn put(&self, path: &str, body: serde_json::Value) -> Result<u16, String> {
        self.http.put(path, body.to_string().into_bytes()).await
    }
}

impl Reporter for CheckReporter {
    fn report<'a>(&'a self, dest: &'a str, passing: bool, output: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let id = format!("template:{dest}");
            let status = if passing { "passing" } else { "critical" };
            let update = format!("/v1/agent/check/update/{}", crate::cli::url_escape(&id));
            let body = json!({"Status": status, "Output": output});
            let mut result = self.put(&update, body.clone()).await;
            if matches!(result, Ok(404 | 500)) {
                let reg = json!({"ID": id, "Name": id, "TTL": TTL, "Status": status,
                                 "Notes": "muster template: the state of this destination's template"});
                result = match self.put("/v1/agent/check/register", reg).await {
                    Ok(200) => self.put(&update, body).await,
                    other => other,
                };
            }
            let failed = match result {
                Ok(200) => None,
                Ok(code) => Some(format!("status {code}")),
                Err(e) => Some(e),
            };
            let mut warned = lock(&self.warned);
            match failed {
                Some(why) if !*warned => {
                    tracing::warn!("cannot report check {id:?} to the agent: {why}");
                    *warned = true;
                }
                Some(_) => {}
                None => *warned = false,
            }
        })
    }
}
