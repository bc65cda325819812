//! Consul's ACL rule language, in HCL or JSON, parsed into [`Rules`]: per resource, exact
//! and prefix rules with their access level, and the three global ones (`operator`,
//! `keyring`, `acl`).
//!
//! HCL is read with `hcl-rs`, the parser the agent reads its config files with, into the same
//! JSON shape a JSON policy has, so both go through one reader.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde_json::Value;

/// An access level. The order is the precedence when two rules name the same thing: `deny`
/// over `write` over `list` over `read` (Consul's `takesPrecedenceOver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    Read,
    List,
    Write,
    Deny,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::List => "list",
            Access::Write => "write",
            Access::Deny => "deny",
        }
    }

    fn parse(s: &str, list_ok: bool) -> Option<Access> {
        Some(match s {
            "read" => Access::Read,
            "write" => Access::Write,
            "deny" => Access::Deny,
            "list" if list_ok => Access::List,
            _ => return None,
        })
    }

    /// Whether a rule granting `self` allows `want` (Consul's `enforce`): write grants
    /// everything, list grants list and read, read grants read, deny nothing.
    pub fn grants(self, want: Access) -> bool {
        match self {
            Access::Write => true,
            Access::List => matches!(want, Access::List | Access::Read),
            Access::Read => want == Access::Read,
            Access::Deny => false,
        }
    }
}

/// What a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Key,
    Service,
    Node,
    Session,
    Agent,
    Event,
    Query,
    Operator,
    Keyring,
    Acl,
}

impl Resource {
    /// The resources whose rules name things (`key "a"`, `key_prefix "a"`).
    pub const NAMED: [Resource; 7] = [
        Resource::Key,
        Resource::Service,
        Resource::Node,
        Resource::Session,
        Resource::Agent,
        Resource::Event,
        Resource::Query,
    ];
    /// The resources with one rule each (`operator = "read"`).
    pub const GLOBAL: [Resource; 3] = [Resource::Operator, Resource::Keyring, Resource::Acl];

    /// Its name in rules and in denial messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Key => "key",
            Resource::Service => "service",
            Resource::Node => "node",
            Resource::Session => "session",
            Resource::Agent => "agent",
            Resource::Event => "event",
            Resource::Query => "query",
            Resource::Operator => "operator",
            Resource::Keyring => "keyring",
            Resource::Acl => "acl",
        }
    }
}

/// The exact and prefix rules of one named resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Segments {
    exact: BTreeMap<String, Access>,
    prefix: BTreeMap<String, Access>,
}

impl Segments {
    /// The rule that applies to `name`: an exact one, else the longest matching prefix.
    fn lookup(&self, name: &str) -> Option<Access> {
        if let Some(a) = self.exact.get(name) {
            return Some(*a);
        }
        // Every prefix of `name` is a candidate; the longest one present wins.
        let mut cut: Vec<usize> = name.char_indices().map(|(i, _)| i).collect();
        cut.push(name.len());
        cut.iter()
            .rev()
            .find_map(|&i| self.prefix.get(&name[..i]).copied())
    }

    /// The rules that could apply to some name under `prefix` (the rule for `prefix` itself
    /// and every rule more specific than it).
    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = Access> + 'a {
        let from = (Bound::Included(prefix), Bound::Unbounded);
        let below = |m: &'a BTreeMap<String, Access>| {
            m.range::<str, _>(from)
                .take_while(move |(k, _)| k.starts_with(prefix))
                .map(|(_, a)| *a)
        };
        below(&self.exact).chain(below(&self.prefix))
    }
}

/// Parsed rules: one policy's, or several merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    named: BTreeMap<Resource, Segments>,
    global: BTreeMap<Resource, Access>,
}

fn merge_into(map: &mut BTreeMap<String, Access>, name: &str, a: Access) {
    let slot = map.entry(name.to_string()).or_insert(a);
    *slot = (*slot).max(a);
}

impl Rules {
    /// Parses a policy's `Rules`, HCL or JSON. The error is Consul's reason.
    pub fn parse(text: &str) -> Result<Rules, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Rules::default());
        }
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => hcl::from_str(text).map_err(|e| format!("Failed to parse ACL rules: {e}"))?,
        };
        let mut rules = Rules::default();
        let Value::Object(top) = v else {
            return Err("Failed to parse ACL rules: not an object".into());
        };
        for (k, v) in &top {
            if let Some(r) = Resource::GLOBAL.iter().find(|r| r.as_str() == k) {
                let a = v
                    .as_str()
                    .and_then(|s| Access::parse(s, false))
                    .ok_or_else(|| format!("Invalid {k} policy: {v}"))?;
                rules.set_global(*r, a);
                continue;
            }
            let (base, prefix) = match k.strip_suffix("_prefix") {
                Some(b) => (b, true),
                None => (k.as_str(), false),
            };
            let Some(r) = Resource::NAMED.iter().find(|r| r.as_str() == base) else {
                continue;
            };
            for (name, body) in labelled(v) {
                let policy = body.get("policy").and_then(Value::as_str).unwrap_or("");
                let a = Access::parse(policy, *r == Resource::Key)
                    .ok_or_else(|| format!("Invalid {k} policy: {policy:?}"))?;
                rules.add(*r, name, prefix, a);
            }
        }
        Ok(rules)
    }

    /// Adds one named rule; against an existing rule for the same name, the stronger wins.
    pub fn add(&mut self, r: Resource, name: &str, prefix: bool, a: Access) {
        let seg = self.named.entry(r).or_default();
        merge_into(
            if prefix {
                &mut seg.prefix
            } else {
                &mut seg.exact
            },
            name,
            a,
        );
    }

    pub fn set_global(&mut self, r: Resource, a: Access) {
        let slot = self.global.entry(r).or_insert(a);
        *slot = (*slot).max(a);
    }

    /// Merges `other` into these rules (Consul's policy merger: per name, the stronger).
    pub fn merge(&mut self, other: &Rules) {
        for (r, seg) in &other.named {
            for (n, a) in &seg.exact {
                self.add(*r, n, false, *a);
            }
            for (n, a) in &seg.prefix {
                self.add(*r, n, true, *a);
            }
        }
        for (r, a) in &other.global {
            self.set_global(*r, *a);
        }
    }

    /// The rule that applies to `name` of resource `r` (for a global resource, its one rule).
    pub fn lookup(&self, r: Resource, name: &str) -> Option<Access> {
        if Resource::GLOBAL.contains(&r) {
            return self.global.get(&r).copied();
        }
        self.named.get(&r)?.lookup(name)
    }

    /// Whether any rule under `prefix` could grant less than `write` (Consul's
    /// `KeyWritePrefix`: a recursive delete needs write on every key below).
    pub fn any_below_without_write(&self, r: Resource, prefix: &str) -> bool {
        self.named
            .get(&r)
            .is_some_and(|s| s.under(prefix).any(|a| a != Access::Write))
    }
}

/// The `(name, body)` pairs of a named rule's value: `{"a": {...}, "b": {...}}`, or a list
/// of such objects (repeated HCL blocks, or a JSON list).
fn labelled(v: &Value) -> Vec<(&str, &Value)> {
    match v {
        Value::Object(m) => m.iter().map(|(k, b)| (k.as_str(), b)).collect(),
        Value::Array(l) => l.iter().flat_map(labelled).collect(),
        _ => Vec::new(),
    }
}
