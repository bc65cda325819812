//! [`Authorizer`]: what one token may do, from its policies, its roles' policies and the
//! policies Consul derives from service and node identities, over the agent's default policy.

use std::fmt;

use serde_json::Value;

use super::rules::{Access, Resource, Rules};
use super::{AGENT_RECOVERY_ACCESSOR, ANONYMOUS_ACCESSOR, MANAGEMENT_POLICY_ID};
use crate::model::AclResolved;

/// A request refused by ACLs, as Consul words it (`acl/errors.go`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub accessor: String,
    pub resource: Resource,
    pub access: Access,
    /// What was asked for; empty for a resource without names (`operator`, `acl`).
    pub name: String,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let anonymous = self.accessor == ANONYMOUS_ACCESSOR;
        if anonymous {
            f.write_str("Permission denied: anonymous token")?;
        } else {
            write!(
                f,
                "Permission denied: token with AccessorID '{}'",
                self.accessor
            )?;
        }
        write!(
            f,
            " lacks permission '{}:{}'",
            self.resource.as_str(),
            self.access.as_str()
        )?;
        if !self.name.is_empty() {
            write!(f, " on {:?}", self.name)?;
        }
        if anonymous {
            f.write_str(
                ". The anonymous token is used implicitly when a request does not specify a token.",
            )?;
        }
        Ok(())
    }
}

/// What one token may do.
#[derive(Debug, Clone)]
pub struct Authorizer {
    accessor: String,
    /// A management token (the global-management policy), or ACLs off: everything allowed.
    management: bool,
    rules: Rules,
    /// The agent's `default_policy` is `allow`: what no rule names is allowed (except ACL
    /// administration, which needs a rule or management, as Consul's allow-all authorizer).
    default_allow: bool,
    /// When the token stops working, in Unix milliseconds; 0 for never.
    pub expires_unix_ms: u64,
}

impl Authorizer {
    /// Everything allowed: ACLs are disabled.
    pub fn allow_all() -> Self {
        Authorizer {
            accessor: String::new(),
            management: true,
            rules: Rules::default(),
            default_allow: true,
            expires_unix_ms: 0,
        }
    }

    /// The anonymous token when the store has none yet (before the first leader made it):
    /// no policies, only the default policy.
    pub fn anonymous(default_allow: bool) -> Self {
        Authorizer {
            accessor: ANONYMOUS_ACCESSOR.into(),
            management: false,
            rules: Rules::default(),
            default_allow,
            expires_unix_ms: 0,
        }
    }

    /// The agent recovery token's: write on this agent (`node`), read on every node, and
    /// nothing else whatever the default policy (Consul's `agentRecoveryAuthorizer`).
    pub fn agent_recovery(node: &str) -> Self {
        let mut rules = Rules::default();
        rules.add(Resource::Agent, node, false, Access::Write);
        rules.add(Resource::Node, "", true, Access::Read);
        Authorizer {
            accessor: AGENT_RECOVERY_ACCESSOR.into(),
            management: false,
            rules,
            default_allow: false,
            expires_unix_ms: 0,
        }
    }

    /// The authorizer of a resolved token in datacenter `dc`. A policy whose rules do not
    /// parse grants nothing (it was checked when written); one whose `Datacenters` leave out
    /// `dc`, and identities whose datacenters do, grant nothing here (an empty `dc` skips
    /// that check).
    pub fn new(res: &AclResolved, default_allow: bool, dc: &str) -> Self {
        let mut rules = Rules::default();
        let mut management = false;
        for p in &res.policies {
            let def: Value = serde_json::from_str(&p.definition).unwrap_or_default();
            if !applies_in(&def, "Datacenters", dc) {
                continue;
            }
            management |= p.id == MANAGEMENT_POLICY_ID;
            let text = def.get("Rules").and_then(Value::as_str).unwrap_or("");
            if let Ok(r) = Rules::parse(text) {
                rules.merge(&r);
            }
        }
        identities(&res.token.definition, dc, &mut rules);
        for r in &res.roles {
            identities(&r.definition, dc, &mut rules);
        }
        Authorizer {
            accessor: res.token.accessor_id.clone(),
            management,
            rules,
            default_allow,
            expires_unix_ms: res.token.expires_unix_ms,
        }
    }

    pub fn accessor(&self) -> &str {
        &self.accessor
    }

    pub fn is_management(&self) -> bool {
        self.management
    }

    /// Whether the token has expired at `now_unix_ms`.
    pub fn expired(&self, now_unix_ms: u64) -> bool {
        self.expires_unix_ms != 0 && now_unix_ms >= self.expires_unix_ms
    }

    /// Whether `want` on `name` of `r` is allowed.
    pub fn allowed(&self, r: Resource, name: &str, want: Access) -> bool {
        if self.management {
            return true;
        }
        match self.rules.lookup(r, name) {
            Some(a) => a.grants(want),
            None => self.default_allow && r != Resource::Acl,
        }
    }

    /// As [`Self::allowed`], with Consul's denial when not.
    pub fn check(&self, r: Resource, name: &str, want: Access) -> Result<(), Denied> {
        if self.allowed(r, name, want) {
            return Ok(());
        }
        Err(Denied {
            accessor: self.accessor.clone(),
            resource: r,
            access: want,
            name: name.to_string(),
        })
    }

    /// Whether every key under `prefix` may be written (a recursive delete): the rule for
    /// the prefix grants write and no more specific rule takes it away.
    pub fn allowed_write_prefix(&self, r: Resource, prefix: &str) -> bool {
        self.management
            || (self.allowed(r, prefix, Access::Write)
                && !self.rules.any_below_without_write(r, prefix))
    }
}

/// Whether a definition whose `field` lists datacenters (none: all) applies in `dc`.
fn applies_in(def: &Value, field: &str, dc: &str) -> bool {
    match def.get(field).and_then(Value::as_array) {
        Some(l) if !l.is_empty() && !dc.is_empty() => l.iter().any(|d| d.as_str() == Some(dc)),
        _ => true,
    }
}

/// Adds the policies Consul derives from a definition's `ServiceIdentities`,
/// `TemplatedPolicies` and `NodeIdentities` (`structs.ACLServiceIdentity.SyntheticPolicy`,
/// `ACLTemplatedPolicy`, `ACLNodeIdentity`).
fn identities(definition: &str, dc: &str, rules: &mut Rules) {
    let def: Value = serde_json::from_str(definition).unwrap_or_default();
    let list = |f: &str| {
        def.get(f)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for s in list("ServiceIdentities") {
        let Some(name) = s.get("ServiceName").and_then(Value::as_str) else {
            continue;
        };
        if !applies_in(&s, "Datacenters", dc) {
            continue;
        }
        rules.add(Resource::Service, name, false, Access::Write);
        rules.add(
            Resource::Service,
            &format!("{name}-sidecar-proxy"),
            false,
            Access::Write,
        );
        rules.add(Resource::Service, "", true, Access::Read);
        rules.add(Resource::Node, "", true, Access::Read);
    }
    for t in list("TemplatedPolicies") {
        if !applies_in(&t, "Datacenters", dc) {
            continue;
        }
        let template = t.get("TemplateName").and_then(Value::as_str).unwrap_or("");
        let name = t
            .get("TemplateVariables")
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str);
        // Checked when written; one that no longer renders grants nothing.
        if let Ok(r) = super::templated::render(template, name).and_then(|t| Rules::parse(&t)) {
            rules.merge(&r);
        }
    }
    for n in list("NodeIdentities") {
        let Some(name) = n.get("NodeName").and_then(Value::as_str) else {
            continue;
        };
        // A node identity names the one datacenter its node is in.
        let its_dc = n.get("Datacenter").and_then(Value::as_str).unwrap_or("");
        if !dc.is_empty() && !its_dc.is_empty() && its_dc != dc {
            continue;
        }
        rules.add(Resource::Node, name, false, Access::Write);
        rules.add(Resource::Service, "", true, Access::Read);
    }
}
