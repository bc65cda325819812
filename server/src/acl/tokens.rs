//! [`AgentTokens`]: the agent's own tokens (`acl.tokens`), which `PUT /v1/agent/token/<kind>`
//! replaces while it runs. With `enable_token_persistence` they are kept in
//! `<data_dir>/acl-tokens.json` (Consul's file and field names) and preferred over the
//! config at the next start, as Consul does.

use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::AclConfig;
use crate::sync;

/// Consul's name for the file of persisted agent tokens, in the data dir.
pub const PERSISTED_TOKENS_FILE: &str = "acl-tokens.json";

/// The tokens themselves, as Consul's `persistedTokens` writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tokens {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    default: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    agent: String,
    #[serde(
        default,
        rename = "agent_master",
        alias = "agent_recovery",
        skip_serializing_if = "String::is_empty"
    )]
    agent_recovery: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    replication: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    config_file_service_registration: String,
}

/// Which of the agent's tokens a `/v1/agent/token/<kind>` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Default,
    Agent,
    AgentRecovery,
    Replication,
    ConfigFileRegistration,
}

impl TokenKind {
    /// A kind by any name Consul's endpoint accepts (current and legacy).
    pub fn parse(name: &str) -> Option<TokenKind> {
        Some(match name {
            "default" | "acl_token" => TokenKind::Default,
            "agent" | "acl_agent_token" => TokenKind::Agent,
            "agent_recovery" | "agent_master" | "acl_agent_master_token" => {
                TokenKind::AgentRecovery
            }
            "replication" | "acl_replication_token" => TokenKind::Replication,
            "config_file_service_registration" => TokenKind::ConfigFileRegistration,
            _ => return None,
        })
    }
}

/// Why a token could not be set.
#[derive(Debug, thiserror::Error)]
#[error("Failed to persist tokens - {0}")]
pub struct PersistError(#[from] std::io::Error);

/// The agent's tokens, readable on every request and replaceable at run time.
#[derive(Debug)]
pub struct AgentTokens {
    tokens: RwLock<Tokens>,
    /// Held across a whole `set` (read, write the file, publish): two at once must not
    /// lose one or interleave their files.
    setting: Mutex<()>,
    /// Where they persist (`enable_token_persistence` and a data dir), else `None`.
    file: Option<PathBuf>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl AgentTokens {
    /// The tokens of `config`, overridden by those persisted earlier (a file that does not
    /// read is reported and ignored: the configured tokens still work).
    pub fn load(config: &AclConfig) -> AgentTokens {
        let mut tokens = Tokens {
            default: config.default.clone().unwrap_or_default(),
            agent: config.agent.clone().unwrap_or_default(),
            agent_recovery: config.agent_recovery.clone().unwrap_or_default(),
            ..Tokens::default()
        };
        let file = config
            .data_dir
            .as_ref()
            .filter(|_| config.enable_token_persistence)
            .map(|d| d.join(PERSISTED_TOKENS_FILE));
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<Tokens>(&bytes) {
                    Ok(saved) => tokens.merge(saved),
                    Err(e) => tracing::warn!(file = %path.display(), error = %e,
                        "ACL: persisted agent tokens do not parse; using the configured ones"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %path.display(), error = %e,
                    "ACL: cannot read persisted agent tokens; using the configured ones"),
            }
        }
        AgentTokens {
            tokens: RwLock::new(tokens),
            setting: Mutex::new(()),
            file,
        }
    }

    /// The `default` token: used by requests that present none, and by DNS.
    pub fn default_token(&self) -> Option<String> {
        non_empty(&sync::read(&self.tokens).default)
    }

    /// The `agent_recovery` token.
    pub fn agent_recovery(&self) -> Option<String> {
        non_empty(&sync::read(&self.tokens).agent_recovery)
    }

    /// Whether `secret` is the `agent_recovery` token, compared in time that depends on the
    /// lengths only (a guess must not learn how much of it was right); asked on every request,
    /// so nothing is copied.
    pub fn is_agent_recovery(&self, secret: &str) -> bool {
        let t = sync::read(&self.tokens);
        let r = t.agent_recovery.as_bytes();
        !r.is_empty() && constant_time_eq(r, secret.as_bytes())
    }

    /// Replaces one token; with persistence on, the file is written first (atomically), so
    /// a token is never in effect without being saved.
    pub fn set(&self, kind: TokenKind, secret: &str) -> Result<(), PersistError> {
        let _one_at_a_time = sync::lock(&self.setting);
        let mut next = sync::read(&self.tokens).clone();
        let slot = match kind {
            TokenKind::Default => &mut next.default,
            TokenKind::Agent => &mut next.agent,
            TokenKind::AgentRecovery => &mut next.agent_recovery,
            TokenKind::Replication => &mut next.replication,
            TokenKind::ConfigFileRegistration => &mut next.config_file_service_registration,
        };
        *slot = secret.to_string();
        if let Some(path) = &self.file {
            write_private(
                path,
                &serde_json::to_vec(&next).map_err(std::io::Error::other)?,
            )?;
        }
        *sync::write(&self.tokens) = next;
        Ok(())
    }
}

/// Replaces `path` with `bytes` readable by the owner only (it holds secrets), durably: a
/// crash leaves the old file or the new one.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Tokens {
    /// Takes every token `saved` has.
    fn merge(&mut self, saved: Tokens) {
        for (mine, theirs) in [
            (&mut self.default, saved.default),
            (&mut self.agent, saved.agent),
            (&mut self.agent_recovery, saved.agent_recovery),
            (&mut self.replication, saved.replication),
            (
                &mut self.config_file_service_registration,
                saved.config_file_service_registration,
            ),
        ] {
            if !theirs.is_empty() {
                *mine = theirs;
            }
        }
    }
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only: a guess at a
/// secret must not learn how much of it was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisted_tokens_override_the_config_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = AclConfig {
            enabled: true,
            enable_token_persistence: true,
            default: Some("from-config".into()),
            data_dir: Some(dir.path().to_path_buf()),
            ..AclConfig::disabled()
        };
        let t = AgentTokens::load(&config);
        assert_eq!(t.default_token().as_deref(), Some("from-config"));
        t.set(TokenKind::Default, "set-at-run-time").expect("set");
        t.set(TokenKind::AgentRecovery, "recovery").expect("set");
        assert_eq!(t.default_token().as_deref(), Some("set-at-run-time"));
        let file = dir.path().join(PERSISTED_TOKENS_FILE);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "the tokens file is the owner's only");
        let text = std::fs::read_to_string(&file).expect("file");
        assert_eq!(
            text,
            r#"{"default":"set-at-run-time","agent_master":"recovery"}"#
        );
        let again = AgentTokens::load(&config);
        assert_eq!(again.default_token().as_deref(), Some("set-at-run-time"));
        assert_eq!(again.agent_recovery().as_deref(), Some("recovery"));
        assert!(again.is_agent_recovery("recovery"));
        assert!(!again.is_agent_recovery("recoverx") && !again.is_agent_recovery(""));
        // Without persistence, nothing is written and the config wins.
        let plain = AgentTokens::load(&AclConfig {
            enable_token_persistence: false,
            ..config
        });
        assert_eq!(plain.default_token().as_deref(), Some("from-config"));
        assert_eq!(
            TokenKind::parse("acl_agent_master_token"),
            Some(TokenKind::AgentRecovery)
        );
        assert_eq!(TokenKind::parse("nope"), None);
    }

    #[test]
    fn a_corrupt_file_leaves_the_configured_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(PERSISTED_TOKENS_FILE), "{not json").expect("write");
        let t = AgentTokens::load(&AclConfig {
            enable_token_persistence: true,
            default: Some("configured".into()),
            data_dir: Some(dir.path().to_path_buf()),
            ..AclConfig::disabled()
        });
        assert_eq!(t.default_token().as_deref(), Some("configured"));
    }
}
