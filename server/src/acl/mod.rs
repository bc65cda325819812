//! ACLs apart from storage: Consul's rule language ([`Rules`]), what a token may do
//! ([`Authorizer`]) and Consul's denial text ([`Denied`]), a secret into its authorizer
//! ([`Resolver`], with the agent's [`AclConfig`]), and the IDs of the built-in
//! management policy and anonymous token.

mod authorizer;
pub mod builtin;
mod resolver;
mod rules;
#[cfg(test)]
mod tests;

pub use authorizer::{Authorizer, Denied};
pub use resolver::{now_unix_ms, AclConfig, ResolveError, Resolver, CLIENT_TOKEN_TTL};
pub use rules::{Access, Resource, Rules};

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
