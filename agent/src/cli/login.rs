//! `muster login` and `muster logout` (Consul's `command/login`, `command/logout`): a bearer
//! token from a file exchanged through an auth method for an ACL token, whose SecretID is
//! written to a sink file; and that token deleted again.

use std::io::Write;

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::client::Client;
use super::error::{Error, Result};
use super::help::Flag;
use crate::flags::Parsed;

pub(super) const LOGIN_USAGE: &str = "
Usage: muster login [options]

  The login command will exchange the provided third party credentials with the
  requested auth method for a newly minted Consul ACL token. The companion
  command 'muster logout' should be used to destroy any tokens created this way
  to avoid a resource leak.
";
pub(super) const LOGOUT_USAGE: &str = "
Usage: muster logout [options]

  The logout command will destroy the provided token if it was created from
  'muster login'.
";
pub(super) const LOGIN_FLAGS: &[Flag] = &[
    Flag::value("method", "string", "Name of the auth method to login to."),
    Flag::value("type", "string", "Type of the auth method to login to. This field is optional and defaults to no type."),
    Flag::value("bearer-token-file", "string", "Path to a file containing a secret bearer token to use with this auth method."),
    Flag::value("token-sink-file", "string", "The most recent token's SecretID is kept up to date in this file."),
    Flag::multi("meta", "value", "Metadata to set on the token, formatted as key=value. This flag may be specified multiple times to set multiple meta fields."),
];

/// Writes `secret` to `path` with mode 0600, through a temporary file renamed over it.
fn write_sink(path: &str, secret: &str) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub(super) async fn login(p: &Parsed) -> Result<i32> {
    if !p.positional.is_empty() {
        return Err(Error::usage("Should have no non-flag arguments."));
    }
    let method = p
        .value("method")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Error::usage("Missing required '-method' flag"))?;
    let sink = p
        .value("token-sink-file")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| Error::usage("Missing required '-token-sink-file' flag"))?;
    let file = p
        .value("bearer-token-file")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| Error::usage("Missing required '-bearer-token-file' flag"))?;
    let bearer = std::fs::read_to_string(file)
        .map_err(|e| Error::usage(format!("open {file}: {e}")))?
        .trim()
        .to_string();
    if bearer.is_empty() {
        return Err(Error::usage(format!("No bearer token found in {file}")));
    }
    let mut meta = Map::new();
    for kv in p.all("meta") {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        meta.insert(k.to_string(), json!(v));
    }
    // A login presents the bearer token, never an ACL token.
    let c = Client::new(p)?.without_token();
    let body = json!({"AuthMethod": method, "BearerToken": bearer, "Meta": meta});
    let (code, bytes) = c
        .send(
            Method::POST,
            "/v1/acl/login",
            Some(body.to_string().into_bytes()),
        )
        .await?;
    if !(200..300).contains(&code) {
        return Err(Error::status(code, &bytes).context("Error logging in"));
    }
    let t: Value = serde_json::from_slice(&bytes)?;
    let secret = t["SecretID"].as_str().unwrap_or_default();
    write_sink(sink, secret)
        .map_err(|e| Error::refused(format!("Error writing token to file sink: {e}")))?;
    Ok(0)
}

pub(super) async fn logout(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let (code, bytes) = c.send(Method::POST, "/v1/acl/logout", None).await?;
    if !(200..300).contains(&code) {
        return Err(Error::status(code, &bytes).context("Error destroying token"));
    }
    Ok(0)
}
