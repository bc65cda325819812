//! The HTTP client every command talks to the local agent with. Commands talk HTTP, as
//! Consul's do, and find the agent and their token as Consul's API client does: `-http-addr`,
//! else `MUSTER_HTTP_ADDR`, else `CONSUL_HTTP_ADDR`, else 127.0.0.1:8500; `-token-file` or
//! `CONSUL_HTTP_TOKEN_FILE` (which win when the file holds a token), else `-token`, else
//! `CONSUL_HTTP_TOKEN`, sent as `X-Consul-Token`; `-datacenter` as `?dc=` on every request.
//! HTTPS when the address says `https://` or `CONSUL_HTTP_SSL` is true, with the TLS
//! settings of `client_tls`.

use super::client_tls::{client_config, env, env_bool};
use super::error::{Error, Result};
use crate::flags::Parsed;

/// An HTTP client for the local agent.
pub(crate) struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    datacenter: Option<String>,
    /// `CONSUL_HTTP_AUTH`: HTTP basic authentication, `user[:password]`.
    auth: Option<(String, Option<String>)>,
}

impl Client {
    /// The client the parsed common flags and the environment describe. Fails as Consul's
    /// `api.NewClient` does: on an unknown scheme or an unreadable token file.
    pub(crate) fn new(p: &Parsed) -> Result<Client> {
        let addr = p
            .value("http-addr")
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .or_else(|| env("MUSTER_HTTP_ADDR"))
            .or_else(|| env("CONSUL_HTTP_ADDR"))
            .unwrap_or_else(|| "127.0.0.1:8500".into());
        let ssl = env_bool("CONSUL_HTTP_SSL").unwrap_or(false);
        let base = match addr.split_once("://") {
            Some(("http", rest)) if !ssl => format!("http://{rest}"),
            Some(("http" | "https", rest)) => format!("https://{rest}"),
            Some((scheme, _)) => {
                return Err(Error::Connect(format!("Unknown protocol scheme: {scheme}")))
            }
            None if ssl => format!("https://{addr}"),
            None => format!("http://{addr}"),
        };
        let http = if base.starts_with("https://") {
            reqwest::Client::builder()
                .use_preconfigured_tls(client_config(p)?)
                .build()
                .map_err(|e| Error::Connect(format!("TLS client: {e}")))?
        } else {
            reqwest::Client::new()
        };
        let token_file = p
            .value("token-file")
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .or_else(|| env("CONSUL_HTTP_TOKEN_FILE"));
        let mut token = p
            .value("token")
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .or_else(|| env("CONSUL_HTTP_TOKEN"));
        if let Some(file) = token_file {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                Error::Connect(format!("Error loading token file: open {file}: {e}"))
            })?;
            if !text.trim().is_empty() {
                token = Some(text.trim().to_string());
            }
        }
        let auth = env("CONSUL_HTTP_AUTH").map(|a| match a.split_once(':') {
            Some((user, pass)) => (user.to_string(), Some(pass.to_string())),
            None => (a, None),
        });
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
            token,
            datacenter: p
                .value("datacenter")
                .filter(|d| !d.is_empty())
                .map(str::to_string),
            auth,
        })
    }

    /// This client without an ACL token (a login presents its bearer token instead).
    pub(crate) fn without_token(mut self) -> Client {
        self.token = None;
        self
    }

    fn unreachable(&self, e: &reqwest::Error) -> Error {
        Error::Unreachable {
            agent: self.base.clone(),
            cause: root_cause(e),
        }
    }

    /// A request to `path` (which may hold a query) with the token and datacenter attached.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(dc) = &self.datacenter {
            req = req.query(&[("dc", dc)]);
        }
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t);
        }
        if let Some((user, pass)) = &self.auth {
            req = req.basic_auth(user, pass.as_ref());
        }
        req
    }

    /// Sends a request; returns the status and body whatever the status.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>)> {
        let mut req = self.request(method, path);
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
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let code = resp.status().as_u16();
        let index = crate::watch::consul_index(resp.headers());
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

    /// Sends a request whose answer streams on until the agent ends it, handing each chunk
    /// to `each` as it arrives; fails with the agent's message unless it answered 2xx.
    pub(crate) async fn stream_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut resp = self
            .request(method, path)
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let code = resp.status().as_u16();
        if !(200..300).contains(&code) {
            let bytes = resp.bytes().await.map_err(Error::ReadReply)?;
            return Err(Error::status(code, &bytes));
        }
        while let Some(chunk) = resp.chunk().await.map_err(Error::ReadReply)? {
            each(&chunk)?;
        }
        Ok(())
    }

    /// Sends a request whose answer is a stream of JSON lines, each decoded into `T` and
    /// handed to `each` as it arrives; fails with the agent's message unless it answered 2xx.
    pub(crate) async fn stream_lines<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        mut each: impl FnMut(T),
    ) -> Result<()> {
        let mut pending = Vec::new();
        self.stream_raw(method, path, body, |chunk| {
            pending.extend_from_slice(chunk);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                each(serde_json::from_slice(&line)?);
            }
            Ok(())
        })
        .await
    }

    /// A GET whose 2xx JSON answer is decoded into `T`.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let body = self.call(reqwest::Method::GET, path, None).await?;
        Ok(serde_json::from_slice(&body)?)
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

/// The query string for `-stale` (where the command reads with it) plus `extra`, each value
/// percent-encoded (an empty value makes a bare key, as `?recurse`).
pub(crate) fn qs(p: &Parsed, extra: &[(&str, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if p.bool("stale") {
        parts.push("stale".into());
    }
    for (k, v) in extra {
        if v.is_empty() {
            parts.push(k.to_string());
        } else {
            parts.push(format!("{k}={}", url_escape(v)));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_escaped_and_bare_keys_kept() {
        let p = Parsed::default();
        assert_eq!(
            qs(
                &p,
                &[("recurse", String::new()), ("node-meta", "rack:r 1".into())]
            ),
            "?recurse&node-meta=rack%3Ar%201"
        );
    }
}
