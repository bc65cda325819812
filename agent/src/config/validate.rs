//! Consul's rules for the loaded configuration: a data dir, a valid datacenter and node name,
//! and the warnings for settings that will not do what the operator may expect.

use super::Config;
use crate::{Error, Result};

/// Consul's rules for names and directories, refusing what Consul only warns about where
/// accepting it is dangerous (a NUL or a newline in a node name).
pub(super) fn validate(cfg: &mut Config, warnings: &mut Vec<String>) -> Result<()> {
    match &cfg.data_dir {
        None if !cfg.dev => {
            return Err(Error::Config(
                "data_dir is required: pass -data-dir DIR (or -dev for a throwaway agent)".into(),
            ))
        }
        Some(d) if d.as_os_str().is_empty() => {
            return Err(Error::Config(
                "data_dir cannot be empty: pass -data-dir DIR (an empty path would \
                 put the agent's state in the current directory)"
                    .into(),
            ))
        }
        Some(d) if d.exists() && !d.is_dir() => {
            return Err(Error::Config(format!(
                "data_dir {:?} is not a directory",
                d.display()
            )))
        }
        _ => {}
    }
    super::node::validate_meta(&cfg.node_meta)?;
    if let Some(key) = &cfg.encrypt {
        crate::cluster::keyring::decode_key(key)
            .map_err(|e| Error::Config(format!("encrypt has invalid key: {e}")))?;
    }
    super::tls::validate(cfg)?;
    if cfg.bootstrap_expect > 0 && !cfg.server {
        return Err(Error::Config("-bootstrap-expect requires -server".into()));
    }
    if cfg.server
        && cfg.bootstrap_expect == 0
        && cfg.start_join.is_empty()
        && cfg.retry_join.is_empty()
    {
        warnings.push(
            "bootstrap_expect is 0 and no -join or -retry-join is given: this server will not \
             elect a leader by itself; it waits until an existing cluster adds it. To form a new \
             cluster pass -bootstrap-expect N (the number of servers), or -join an existing one"
                .into(),
        );
    }
    // Consul lowercases the datacenter, then allows only [a-z0-9_-].
    cfg.datacenter = cfg.datacenter.to_ascii_lowercase();
    let dc = &cfg.datacenter;
    if dc.is_empty() {
        return Err(Error::Config("datacenter cannot be empty".into()));
    }
    if !dc
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(Error::Config(format!(
            "datacenter {dc:?} is invalid: it can only contain lowercase alphanumeric, - or _ \
             characters"
        )));
    }
    if let Some(primary) = &cfg.primary_datacenter {
        // Configs copied from a Consul cluster name their (single) datacenter here: only a
        // different one means something Muster will not do.
        if !primary.eq_ignore_ascii_case(dc) {
            warnings.push(format!(
                "primary_datacenter {primary:?} is not this agent's datacenter {dc:?}: Muster \
                 runs a single datacenter, so it is ignored"
            ));
        }
    }
    let node = &cfg.node_name;
    if let Some(why) = invalid_node_name(node) {
        return Err(Error::Config(format!(
            "node name {node:?} is invalid: {why}"
        )));
    }
    if !dns_label(node) {
        warnings.push(format!(
            "node name {node:?} will not be discoverable via DNS: valid characters are \
             alphanumerics and dashes, 1 to 63 of them"
        ));
    }
    Ok(())
}

/// Why a node name is refused: empty, too long, or holding control characters (a NUL ends
/// the name in C strings and logs; a newline forges log lines) or a `/` (it cannot be named
/// in a URL path such as `/v1/catalog/node/<name>`).
pub(crate) fn invalid_node_name(n: &str) -> Option<String> {
    if n.is_empty() {
        return Some("it cannot be empty".into());
    }
    if n.len() > 256 {
        return Some(format!(
            "it is {} bytes long, over the limit of 256",
            n.len()
        ));
    }
    if let Some(c) = n.chars().find(|c| c.is_control() || *c == '/') {
        return Some(format!(
            "it contains {c:?}; control characters and '/' are not allowed"
        ));
    }
    None
}

/// Consul's DNS rule for node names: alphanumerics and dashes, at most 63.
fn dns_label(n: &str) -> bool {
    n.len() <= 63 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}
