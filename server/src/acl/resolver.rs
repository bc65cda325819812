//! [`Resolver`]: a presented secret into the [`Authorizer`] of its token, with the agent's
//! ACL settings ([`AclConfig`]). On a server, resolutions are cached until the ACL tables
//! change; a client agent asks a server and keeps the answer for `acl.token_ttl`
//! ([`CLIENT_TOKEN_TTL`] unless configured).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::tokens::AgentTokens;
use super::{Authorizer, ANONYMOUS_SECRET};
use crate::model::{Consistency, Query, QueryResult};
use crate::{Error, Server};

/// How long a client agent trusts a resolved token by default (Consul's `acl.token_ttl`).
pub const CLIENT_TOKEN_TTL: Duration = Duration::from_secs(30);
/// The shortest and longest life a token may be given at creation (Consul's server limits).
pub const TOKEN_MIN_EXPIRATION_TTL: Duration = Duration::from_secs(60);
pub const TOKEN_MAX_EXPIRATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// The agent's `acl` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclConfig {
    /// `acl.enabled` (`acl_datacenter` in older files).
    pub enabled: bool,
    /// `acl.default_policy` is `allow` (Consul's default); `deny` otherwise.
    pub default_allow: bool,
    /// `acl.down_policy`: `extend-cache` (default), `deny`, `allow`, `async-cache`.
    pub down_policy: String,
    /// `acl.enable_token_persistence`.
    pub enable_token_persistence: bool,
    /// `acl.tokens.initial_management` (`master`, `acl_master_token`): made a management
    /// token by the first leader.
    pub initial_management: Option<String>,
    /// `acl.tokens.agent` (`acl_agent_token`): the agent's own token.
    pub agent: Option<String>,
    /// `acl.tokens.default` (`acl_token`): used by requests without a token, and by DNS.
    pub default: Option<String>,
    /// `acl.tokens.agent_recovery` (`agent_master`, `acl_agent_master_token`).
    pub agent_recovery: Option<String>,
    /// The data dir, where an operator leaves `acl-bootstrap-reset` to bootstrap again, and
    /// where persisted agent tokens live.
    pub data_dir: Option<std::path::PathBuf>,
    /// This agent's node name: what its `agent_recovery` token may administer.
    pub node_name: String,
    /// This agent's datacenter: policies and identities limited to others grant nothing.
    pub datacenter: String,
    /// `acl.token_ttl`: how long a client agent trusts a token it resolved.
    pub token_ttl: Duration,
    /// `acl.token_min_expiration_ttl` / `token_max_expiration_ttl`: the bounds of a new
    /// token's `ExpirationTTL` (fixed at 1m and 24h in Consul).
    pub token_min_expiration_ttl: Duration,
    pub token_max_expiration_ttl: Duration,
}

impl AclConfig {
    /// ACLs off: Consul's defaults.
    pub fn disabled() -> Self {
        AclConfig {
            default_allow: true,
            down_policy: "extend-cache".into(),
            token_ttl: CLIENT_TOKEN_TTL,
            token_min_expiration_ttl: TOKEN_MIN_EXPIRATION_TTL,
            token_max_expiration_ttl: TOKEN_MAX_EXPIRATION_TTL,
            ..AclConfig::default()
        }
    }
}

/// Why a secret gives no authorizer.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No such token, or it expired: Consul's `ACL not found`.
    #[error("ACL not found")]
    NotFound,
    #[error(transparent)]
    Server(#[from] Error),
}

/// Turns secrets into authorizers, caching them.
pub struct Resolver {
    server: Server,
    config: AclConfig,
    /// By secret: the ACL index (servers) or the time (clients) it was resolved at.
    cache: Mutex<HashMap<String, Cached>>,
    /// The auth methods' token validators, kept between logins (a JWKS stays fetched).
    validators: super::jwt::Validators,
    /// The agent's own tokens (`default`, `agent_recovery`, …), replaceable at run time.
    tokens: AgentTokens,
}

/// A cached resolution: the ACL index (servers) and the time (clients) it was made at, and
/// the authorizer (`None`: no such token).
type Cached = (u64, Instant, Option<Arc<Authorizer>>);

/// Now, in Unix milliseconds.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Resolver {
    pub fn new(server: Server, config: AclConfig) -> Self {
        Resolver {
            server,
            tokens: AgentTokens::load(&config),
            config,
            cache: Mutex::default(),
            validators: Default::default(),
        }
    }

    /// The agent's own tokens.
    pub fn tokens(&self) -> &AgentTokens {
        &self.tokens
    }

    /// The auth methods' validators.
    pub fn validators(&self) -> &super::jwt::Validators {
        &self.validators
    }

    pub fn config(&self) -> &AclConfig {
        &self.config
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The authorizer for a request presenting `secret` (none: the agent's default token,
    /// else the anonymous token). ACLs off: everything allowed.
    pub async fn resolve(&self, secret: Option<&str>) -> Result<Arc<Authorizer>, ResolveError> {
        if !self.config.enabled {
            return Ok(Arc::new(Authorizer::allow_all()));
        }
        let default;
        let secret = match secret.filter(|s| !s.is_empty()) {
            Some(s) => s,
            None => {
                default = self.tokens.default_token();
                default.as_deref().unwrap_or(ANONYMOUS_SECRET)
            }
        };
        // The agent recovery token is the agent's own: it works with no server to ask.
        if self.tokens.is_agent_recovery(secret) {
            return Ok(Arc::new(Authorizer::agent_recovery(&self.config.node_name)));
        }
        let found = self.lookup(secret).await?;
        match found {
            Some(a) if a.expired(now_unix_ms()) => Err(ResolveError::NotFound),
            Some(a) => Ok(a),
            // Before the first leader has written the anonymous token, it has no policies.
            None if secret == ANONYMOUS_SECRET => {
                Ok(Arc::new(Authorizer::anonymous(self.config.default_allow)))
            }
            None => Err(ResolveError::NotFound),
        }
    }

    /// No server answered: Consul's `down_policy`. `allow` allows everything, `deny` denies
    /// everything, and `extend-cache` (and `async-cache`) keeps using what was resolved
    /// before, however old, denying tokens never seen.
    fn servers_down(
        &self,
        secret: &str,
        e: Error,
    ) -> Result<Option<Arc<Authorizer>>, ResolveError> {
        tracing::warn!(error = %e, policy = %self.config.down_policy, "ACL: servers unreachable, applying down_policy");
        match self.config.down_policy.as_str() {
            "allow" => Ok(Some(Arc::new(Authorizer::allow_all()))),
            "deny" => Ok(Some(Arc::new(Authorizer::anonymous(false)))),
            _ => match crate::sync::lock(&self.cache).get(secret) {
                Some((_, _, a)) => Ok(a.clone()),
                None => Ok(Some(Arc::new(Authorizer::anonymous(false)))),
            },
        }
    }

    async fn lookup(&self, secret: &str) -> Result<Option<Arc<Authorizer>>, ResolveError> {
        let index = match self.server.catalog() {
            Some(c) => Some(c.table_index("acl")?),
            None => None,
        };
        if let Some((at, when, a)) = crate::sync::lock(&self.cache).get(secret) {
            let fresh = match index {
                Some(i) => *at == i,
                None => when.elapsed() < self.config.token_ttl,
            };
            if fresh {
                return Ok(a.clone());
            }
        }
        let q = Query::AclResolve {
            secret: secret.to_string(),
        };
        let (res, meta) = match self.server.read(Consistency::Stale, q).await {
            Ok(r) => r,
            Err(e) => return self.servers_down(secret, e),
        };
        let a = match res {
            QueryResult::AclResolved(Some(r)) => Some(Arc::new(Authorizer::new(
                &r,
                self.config.default_allow,
                &self.config.datacenter,
            ))),
            _ => None,
        };
        let mut cache = crate::sync::lock(&self.cache);
        if cache.len() > 4096 {
            cache.clear();
        }
        let at = index.unwrap_or(meta.index);
        cache.insert(secret.to_string(), (at, Instant::now(), a.clone()));
        Ok(a)
    }
}
