//! What a watch runs on a change, as Consul's `agent/watch_handler.go` and `consul watch` run
//! it: a script (a shell line run by `$SHELL -c`, else `/bin/sh -c`, or an argument list run
//! directly) with the JSON on stdin and `CONSUL_INDEX` in its environment; or an HTTP request
//! carrying the JSON, with `X-Consul-Index` and the configured headers.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::plan::Handler;

/// Consul's `WatchBufSize`: the agent logs at most the last 4 KiB of a handler's output.
const OUTPUT_LIMIT: usize = 4 * 1024;

/// A handler from a `watches` entry, or `muster watch`'s child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerDef {
    /// `handler` (or `muster watch`'s words joined): one line for the shell.
    Shell(String),
    /// `args` (or `muster watch -shell=false`): run directly.
    Args(Vec<String>),
    /// `handler_type: http`.
    Http(HttpHandlerConfig),
}

/// `http_handler_config`, with Consul's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHandlerConfig {
    /// The URL to call.
    pub path: String,
    /// The request method (Consul: POST).
    pub method: String,
    /// Extra headers, each with its values.
    pub header: BTreeMap<String, Vec<String>>,
    /// The whole request's deadline (Consul: 10 s).
    pub timeout: Duration,
    /// Accept any certificate from an `https://` path.
    pub tls_skip_verify: bool,
}

/// Where a script's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The agent: captured (the last 4 KiB) and logged.
    Log,
    /// `muster watch`: the command's own stdout and stderr.
    Inherit,
}

/// The process a script handler runs: Consul's `exec.Script` or `exec.Subprocess`.
fn command(def: &HandlerDef) -> Option<tokio::process::Command> {
    match def {
        HandlerDef::Shell(line) => {
            let shell = std::env::var("SHELL")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "/bin/sh".into());
            let mut c = tokio::process::Command::new(shell);
            c.arg("-c").arg(line);
            Some(c)
        }
        HandlerDef::Args(args) => {
            let (first, rest) = args.split_first()?;
            let mut c = tokio::process::Command::new(first);
            c.args(rest);
            Some(c)
        }
        HandlerDef::Http(_) => None,
    }
}

/// Go's `json.Encoder.Encode`: the compact JSON and a newline.
fn encode(data: &Value) -> Vec<u8> {
    let mut buf = serde_json::to_vec(data).unwrap_or_else(|_| b"null".to_vec());
    buf.push(b'\n');
    buf
}

/// Runs a script handler once; `Err` says why it failed (it could not start, or it exited
/// non-zero), with what it printed when the output is captured.
pub async fn run_script(
    def: &HandlerDef,
    index: u64,
    data: &Value,
    output: Output,
) -> Result<(), String> {
    let Some(mut cmd) = command(def) else {
        return Err("no command to run".into());
    };
    cmd.env("CONSUL_INDEX", index.to_string())
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    if output == Output::Log {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("Error starting handler: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let input = encode(data);
        // A handler that does not read its stdin is not an error.
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("Error executing handler: {e}"))?;
    if output == Output::Log {
        let mut all = out.stdout;
        all.extend_from_slice(&out.stderr);
        let text = tail(&all);
        tracing::debug!(handler = ?def, output = %text, "watch handler output");
    }
    if out.status.success() {
        return Ok(());
    }
    // Go's `ExitError` wording: `exit status 3`, `signal: 9`.
    use std::os::unix::process::ExitStatusExt;
    let why = match (out.status.code(), out.status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal: {sig}"),
        (None, None) => out.status.to_string(),
    };
    Err(format!("Error executing handler: {why}"))
}

/// The last 4 KiB of `all`, with Consul's note when more was written.
fn tail(all: &[u8]) -> String {
    if all.len() <= OUTPUT_LIMIT {
        return String::from_utf8_lossy(all).into_owned();
    }
    format!(
        "Captured {OUTPUT_LIMIT} of {} bytes\n...\n{}",
        all.len(),
        String::from_utf8_lossy(&all[all.len() - OUTPUT_LIMIT..])
    )
}

/// Sends the JSON to an HTTP handler once; logs what came back.
async fn run_http(config: &HttpHandlerConfig, client: &reqwest::Client, index: u64, data: &Value) {
    let method = match reqwest::Method::from_bytes(config.method.as_bytes()) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(watch = %config.path, error = %e, "Failed to setup http watch");
            return;
        }
    };
    let mut req = client
        .request(method, &config.path)
        .timeout(config.timeout)
        .header("Content-Type", "application/json")
        .header("X-Consul-Index", index.to_string())
        .body(encode(data));
    for (name, values) in &config.header {
        for v in values {
            req = req.header(name, v);
        }
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(watch = %config.path, error = %e, "Failed to invoke http watch handler");
            return;
        }
    };
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    let text = tail(&body);
    if status.is_success() {
        tracing::trace!(watch = %config.path, output = %text, "http watch handler output");
    } else {
        tracing::error!(watch = %config.path, %status, output = %text, "http watch handler failed with output");
    }
}

/// The agent's handler for a `watches` entry: failures are logged and the plan goes on.
pub struct AgentHandler {
    def: HandlerDef,
    http: Option<reqwest::Client>,
}

impl AgentHandler {
    pub fn new(def: HandlerDef) -> AgentHandler {
        let http = match &def {
            HandlerDef::Http(c) => reqwest::Client::builder()
                .danger_accept_invalid_certs(c.tls_skip_verify)
                .build()
                .map_err(|e| tracing::error!(error = %e, "cannot build the http watch client"))
                .ok(),
            _ => None,
        };
        AgentHandler { def, http }
    }
}

impl Handler for AgentHandler {
    fn handle<'a>(&'a mut self, index: u64, data: &'a Value) -> BoxFuture<'a, ControlFlow<()>> {
        Box::pin(async move {
            match (&self.def, &self.http) {
                (HandlerDef::Http(c), Some(client)) => run_http(c, client, index, data).await,
                (HandlerDef::Http(_), None) => {}
                (def, _) => {
                    if let Err(e) = run_script(def, index, data, Output::Log).await {
                        tracing::error!(handler = ?def, error = %e, "Failed to run watch handler");
                    }
                }
            }
            ControlFlow::Continue(())
        })
    }
}
