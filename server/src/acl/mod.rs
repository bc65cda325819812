//! ACLs apart from storage: Consul's rule language ([`Rules`]), what a token may do
//! ([`Authorizer`]) and Consul's denial text ([`Denied`]), a secret into its authorizer
//! ([`Resolver`], with the agent's [`AclConfig`]), and the IDs of the built-in
//! management policy and anonymous token; the agent's own tokens ([`AgentTokens`]). Logins: a `jwt` auth method's token checks
//! ([`jwt`]) and what its binding rules grant ([`binder`]). Consul's built-in rule templates
//! ([`templated`]).

mod authorizer;
pub mod binder;
pub mod builtin;
mod jwks;
pub mod jwt;
mod resolver;
mod rules;
pub mod templated;
#[cfg(test)]
mod tests;
mod tokens;

pub use authorizer::{Authorizer, Denied};
pub use resolver::{
    now_unix_ms, AclConfig, ResolveError, Resolver, CLIENT_TOKEN_TTL, TOKEN_MAX_EXPIRATION_TTL,
    TOKEN_MIN_EXPIRATION_TTL,
};
pub use rules::{Access, Resource, Rules};
pub use tokens::{constant_time_eq, AgentTokens, PersistError, TokenKind, PERSISTED_TOKENS_FILE};

/// The built-in `global-management` policy: a token linking it may do anything.
pub const MANAGEMENT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000001";
pub const MANAGEMENT_POLICY_NAME: &str = "global-management";
/// Its rules, as Consul writes them (they grant everything, read through the rules too).
pub const MANAGEMENT_RULES: &str = r#"
acl = "write"
agent_prefix "" { policy = "write" }
event_prefix "" { policy = "write" }
key_prefix "" { policy = "write" }
keyring = "write"
node_prefix "" { policy = "write" }
operator = "write"
query_prefix "" { policy = "write" }
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" { policy = "write" }"#;
/// The anonymous token: used when a request presents none.
pub const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";
pub const ANONYMOUS_SECRET: &str = "anonymous";
/// The accessor the agent recovery token's denials name (it is no stored token).
pub const AGENT_RECOVERY_ACCESSOR: &str = "agent-recovery";
