//! Consul's `acl` block and the older top-level `acl_*` keys, into the server crate's
//! `muster_server::acl::AclConfig`.

use serde_json::Value;

use super::sections::{block, key_error, unknown_key};
use super::Config;
use crate::Result;

/// `acl` keys Consul has that change nothing here yet: accepted with a warning.
const IGNORED: &[&str] = &[
    "policy_ttl",
    "role_ttl",
    "enable_key_list_policy",
    "enable_token_replication",
    "msp_disable_bootstrap",
];

/// Reads a policy name (`allow`/`deny`).
fn default_allow(v: &Value, name: &str, key: &str) -> Result<bool> {
    match v.as_str() {
        Some("allow") => Ok(true),
        Some("deny") => Ok(false),
        _ => Err(key_error(name, key, "expected \"allow\" or \"deny\"")),
    }
}

/// Reads a Go duration string (`"30s"`).
fn duration(v: &Value, name: &str, key: &str) -> Result<std::time::Duration> {
    v.as_str()
        .and_then(muster_api::go_duration)
        .ok_or_else(|| key_error(name, key, "expected a duration such as \"30s\""))
}

fn down_policy(v: &Value, name: &str, key: &str) -> Result<String> {
    match v.as_str() {
        Some(p @ ("allow" | "deny" | "extend-cache" | "async-cache")) => Ok(p.to_string()),
        _ => Err(key_error(
            name,
            key,
            "expected \"allow\", \"deny\", \"extend-cache\" or \"async-cache\"",
        )),
    }
}

fn token(v: &Value, name: &str, key: &str) -> Result<Option<String>> {
    let s = v
        .as_str()
        .ok_or_else(|| key_error(name, key, "expected a string"))?;
    Ok(Some(s.to_string()).filter(|s| !s.is_empty()))
}

/// Applies the `acl { ... }` block.
pub(super) fn apply_acl(
    cfg: &mut Config,
    v: &Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<()> {
    let acl = &mut cfg.acl;
    for (k, v) in block(v, name, "acl")? {
        let key = format!("acl.{k}");
        match k.as_str() {
            "enabled" => {
                acl.enabled = v
                    .as_bool()
                    .ok_or_else(|| key_error(name, &key, "expected a boolean"))?
            }
            "default_policy" => acl.default_allow = default_allow(v, name, &key)?,
            "down_policy" => acl.down_policy = down_policy(v, name, &key)?,
            "token_ttl" => acl.token_ttl = duration(v, name, &key)?,
            "token_min_expiration_ttl" => acl.token_min_expiration_ttl = duration(v, name, &key)?,
            "token_max_expiration_ttl" => acl.token_max_expiration_ttl = duration(v, name, &key)?,
            "enable_token_persistence" => {
                acl.enable_token_persistence = v
                    .as_bool()
                    .ok_or_else(|| key_error(name, &key, "expected a boolean"))?
            }
            "tokens" => {
                for (t, v) in block(v, name, &key)? {
                    let key = format!("acl.tokens.{t}");
                    match t.as_str() {
                        "initial_management" | "master" => {
                            acl.initial_management = token(v, name, &key)?
                        }
                        "agent" => acl.agent = token(v, name, &key)?,
                        "default" => acl.default = token(v, name, &key)?,
                        "agent_recovery" | "agent_master" => {
                            acl.agent_recovery = token(v, name, &key)?
                        }
                        "replication" | "config_file_service_registration" => ignored.push(key),
                        _ => return Err(unknown_key(name, &key)),
                    }
                }
            }
            k if IGNORED.contains(&k) => ignored.push(key),
            _ => return Err(unknown_key(name, &key)),
        }
    }
    Ok(())
}

/// Applies one of the pre-1.4 top-level `acl_*` keys; false if `k` is not one.
pub(super) fn apply_legacy(
    cfg: &mut Config,
    k: &str,
    v: &Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<bool> {
    let acl = &mut cfg.acl;
    match k {
        // Setting the ACL datacenter is how ACLs were turned on before the `acl` block.
        "acl_datacenter" => acl.enabled = true,
        "acl_default_policy" => acl.default_allow = default_allow(v, name, k)?,
        "acl_down_policy" => acl.down_policy = down_policy(v, name, k)?,
        "acl_ttl" => acl.token_ttl = duration(v, name, k)?,
        "acl_master_token" => acl.initial_management = token(v, name, k)?,
        "acl_token" => acl.default = token(v, name, k)?,
        "acl_agent_token" => acl.agent = token(v, name, k)?,
        "acl_agent_master_token" => acl.agent_recovery = token(v, name, k)?,
        "acl_replication_token" | "acl_enforce_version_8" | "acl_enable_key_list_policy" => {
            ignored.push(k.to_string())
        }
        _ => return Ok(false),
    }
    Ok(true)
}

impl Config {
    /// The one-line warning an agent logs at start when its HTTP and DNS listeners reach
    /// beyond this machine with ACLs off: anyone who can connect may then write anything.
    pub fn exposure_warning(&self) -> Option<String> {
        if self.acl.enabled || self.client_addr.is_loopback() {
            return None;
        }
        Some(format!(
            "client address {} reaches beyond this machine and ACLs are disabled: anyone who \
             can connect may write any key, deregister any service and start maintenance; \
             enable ACLs (acl {{ enabled = true }}) or keep -client on 127.0.0.1",
            self.client_addr
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{load, Config, AGENT_FLAGS};

    /// Loads config files `(name, text)` from one config dir.
    fn load_files(files: &[(&str, &str)]) -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let args = [
            "-dev".to_string(),
            "-config-dir".to_string(),
            dir.path().display().to_string(),
        ];
        let p = crate::flags::parse(&args, AGENT_FLAGS).expect("flags");
        load(&p).expect("loads").0
    }

    #[test]
    fn acl_block_legacy_keys_and_aliases() {
        let cfg = load_files(&[(
            "acl.hcl",
            r#"acl {
  enabled = true
  default_policy = "deny"
  down_policy = "extend-cache"
  enable_token_persistence = true
  tokens {
    master = "root"
    agent = "ag"
    default = "dflt"
  }
}"#,
        )]);
        assert!(cfg.acl.enabled);
        assert!(!cfg.acl.default_allow);
        assert!(cfg.acl.enable_token_persistence);
        assert_eq!(cfg.acl.initial_management.as_deref(), Some("root"));
        assert_eq!(cfg.acl.agent.as_deref(), Some("ag"));
        assert_eq!(cfg.acl.default.as_deref(), Some("dflt"));

        let old = load_files(&[(
            "old.json",
            r#"{"acl_datacenter": "dc1", "acl_default_policy": "deny",
                "acl_master_token": "root", "acl_token": "t",
                "acl": {"tokens": {"agent_master": "rec", "initial_management": "im"}}}"#,
        )]);
        assert!(old.acl.enabled);
        assert!(!old.acl.default_allow);
        assert_eq!(old.acl.default.as_deref(), Some("t"));
        assert_eq!(old.acl.agent_recovery.as_deref(), Some("rec"));
        assert!(old.acl.initial_management.is_some());

        let off = load_files(&[]);
        assert!(!off.acl.enabled);
        assert!(off.acl.default_allow, "Consul's default policy is allow");
    }

    #[test]
    fn ttls_and_the_exposure_warning() {
        let cfg = load_files(&[(
            "acl.hcl",
            r#"client_addr = "0.0.0.0"
acl {
  enabled = true
  token_ttl = "5s"
  token_min_expiration_ttl = "1s"
  token_max_expiration_ttl = "1h"
}"#,
        )]);
        let s = std::time::Duration::from_secs;
        assert_eq!(cfg.acl.token_ttl, s(5));
        assert_eq!(cfg.acl.token_min_expiration_ttl, s(1));
        assert_eq!(cfg.acl.token_max_expiration_ttl, s(3600));
        assert_eq!(cfg.exposure_warning(), None, "ACLs on");

        let open = load_files(&[("c.hcl", r#"client_addr = "0.0.0.0""#)]);
        assert_eq!(open.acl.token_ttl, s(30));
        let w = open.exposure_warning().expect("a warning");
        assert!(
            w.starts_with("client address 0.0.0.0 reaches beyond"),
            "{w}"
        );
        let local = load_files(&[("c.hcl", r#"client_addr = "127.0.0.2""#)]);
        assert_eq!(local.exposure_warning(), None, "loopback");
    }
}
