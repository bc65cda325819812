//! The HTTP client every command talks to the local agent with, and the flags every command
//! shares. Commands talk HTTP, as Consul's do, so `CONSUL_HTTP_ADDR` and `-http-addr` work
//! the same.

use super::error::{Error, Result};
use crate::flags::{self, Kind, Parsed};

/// Flags every client command accepts.
const COMMON: &[(&str, Kind)] = &[
    ("http-addr", Kind::Value),
    ("stale", Kind::Bool),
    ("token", Kind::Value),
    ("datacenter", Kind::Value),
];

/// The common flags followed by a command's own.
pub(crate) fn spec(extra: &[(&'static str, Kind)]) -> Vec<(&'static str, Kind)> {
    COMMON.iter().chain(extra).copied().collect()
}

/// Parses a command's arguments against the common flags plus its own.
pub(crate) fn parse(args: &[String], extra: &[(&'static str, Kind)]) -> Result<Parsed> {
    Ok(flags::parse(args, &spec(extra))?)
}

/// An HTTP client for the local agent.
pub(crate) struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub(crate) fn new(p: &Parsed) -> Client {
        let addr = p
            .value("http-addr")
            .map(str::to_string)
            .or_else(|| std::env::var("MUSTER_HTTP_ADDR").ok())
            .or_else(|| std::env::var("CONSUL_HTTP_ADDR").ok())
            .unwrap_or_else(|| "127.0.0.1:8500".into());
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        Client {
            base,
            http: reqwest::Client::new(),
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> Error {
        Error::Unreachable {
            agent: self.base.clone(),
            cause: root_cause(e),
        }
    }

    /// Sends a request; returns the status and body whatever the status.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>)> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let code = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(Error::ReadReply)?.to_vec();
        Ok((code, bytes))
    }

    /// A GET returning the status, `X-Consul-Index` and body; blocking reads may take minutes.
    pub(crate) async fn send_indexed(&self, path: &str) -> Result<(u16, u64, Vec<u8>)> {
        let url = format!("{}{}", self.base, path);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let code = resp.status().as_u16();
        let index = resp
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = resp.bytes().await.map_err(Error::ReadReply)?.to_vec();
        Ok((code, index, body))
    }

    /// Sends a request and fails with the agent's message unless it answered 2xx.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let (code, bytes) = self.send(method, path, body).await?;
        if !(200..300).contains(&code) {
            return Err(Error::status(code, &bytes));
        }
        Ok(bytes)
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

/// The query string for the common `-stale` and `-datacenter` flags plus `extra` (an empty
/// value makes a bare key, as `?recurse`).
pub(crate) fn qs(p: &Parsed, extra: &[(&str, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if p.bool("stale") {
        parts.push("stale".into());
    }
    if let Some(dc) = p.value("datacenter") {
        parts.push(format!("dc={dc}"));
    }
    for (k, v) in extra {
        if v.is_empty() {
            parts.push(k.to_string());
        } else {
            parts.push(format!("{k}={v}"));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}
