//! From verified claims to what a login's token grants (Consul's `auth.Binder`): the claims
//! an auth method maps into `value.<name>` and `list.<name>` ([`Identity`]), the `${…}`
//! interpolation of a binding rule's `BindName` ([`interpolate`]), and the identities, roles
//! and policies the matching rules bind ([`bind`]). Which rules match is the caller's: their
//! selectors are Consul's filter expressions, evaluated on [`Identity::selectable`].

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::jwt::JwtConfig;

/// Binding to a service identity of the interpolated name.
pub const BIND_SERVICE: &str = "service";
/// Binding to a node identity, in the agent's datacenter.
pub const BIND_NODE: &str = "node";
/// Binding to an existing role, by name.
pub const BIND_ROLE: &str = "role";
/// Binding to an existing policy, by name.
pub const BIND_POLICY: &str = "policy";

/// The claims of a verified token, as an auth method maps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `value.<name>`: every name a `ClaimMappings` entry fills, empty when the claim is absent.
    pub values: BTreeMap<String, String>,
    /// `list.<name>`: every name a `ListClaimMappings` entry fills.
    pub lists: BTreeMap<String, Vec<String>>,
}

/// A claim by name, or by JSON pointer when it starts with `/` (Consul's `getClaim`).
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        claims.pointer(path)
    } else {
        claims.get(path)
    }
    .filter(|v| !v.is_null())
}

/// A scalar claim as text: numbers truncated to integers, as Consul's
/// `stringifyMetadataValue` does.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => i.to_string(),
            None => match n.as_u64() {
                Some(u) => (u as i64).to_string(),
                None => (n.as_f64().unwrap_or(0.0) as i64).to_string(),
            },
        }),
        _ => None,
    }
}

impl Identity {
    /// An identity with every mapped name present and empty (Consul's `NewIdentity`), so a
    /// selector on an absent claim compares with `""`.
    pub fn blank(config: &JwtConfig) -> Identity {
        Identity {
            values: config
                .claim_mappings
                .values()
                .map(|n| (n.clone(), String::new()))
                .collect(),
            lists: config
                .list_claim_mappings
                .values()
                .map(|n| (n.clone(), Vec::new()))
                .collect(),
        }
    }

    /// The mapped claims of `claims` (Consul's `extractClaims`); a claim of a type that does
    /// not map is an error in Consul's words.
    pub fn from_claims(claims: &Value, config: &JwtConfig) -> Result<Identity, String> {
        let mut id = Identity::blank(config);
        for (path, name) in &config.claim_mappings {
            let Some(raw) = claim(claims, path) else {
                continue;
            };
            let v = text(raw).ok_or_else(|| {
                format!("error converting claim '{path}' to string from unknown type {raw}")
            })?;
            id.values.insert(name.clone(), v);
        }
        for (path, name) in &config.list_claim_mappings {
            let Some(raw) = claim(claims, path) else {
                continue;
            };
            let items = match raw {
                Value::Array(a) => a.iter().collect(),
                Value::Object(_) => {
                    return Err(format!(
                        "{path:?} list claim could not be converted to string list"
                    ))
                }
                one => vec![one],
            };
            let mut list = Vec::new();
            for i in items {
                let v = text(i).ok_or_else(|| {
                    format!("value {i} in {path:?} list claim could not be parsed as string")
                })?;
                if !v.is_empty() {
                    list.push(v);
                }
            }
            id.lists.insert(name.clone(), list);
        }
        Ok(id)
    }

    /// What a binding rule's selector reads: `{"value": {…}, "list": {…}}`.
    pub fn selectable(&self) -> Value {
        json!({ "value": self.values, "list": self.lists })
    }

    /// The variables a `BindName` may use: `value.<name>` for each mapped value.
    pub fn projected(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(k, v)| (format!("value.{k}"), v.clone()))
            .collect()
    }
}

/// Replaces each `${name}` in `template` with its variable, lowercased (as Consul's
/// `InterpolateHIL(…, true)`); `$${` is a literal `${`. An unknown variable is an error.
pub fn interpolate(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| "error interpreting template: unterminated ${".to_string())?;
            let name = tail[..end].trim();
            let v = vars.get(name).ok_or_else(|| {
                format!("error interpreting template: unknown variable accessed: {name}")
            })?;
            out.push_str(&v.to_lowercase());
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A service or node identity name (Consul's `IsValidServiceIdentityName`): lowercase
/// letters, digits, `-` and `_`, not starting or ending with `-` or `_`, at most 256.
pub fn valid_identity_name(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 256
        && s.chars().all(|c| ok(c) || c == '-' || c == '_')
        && s.starts_with(ok)
        && s.ends_with(ok)
}

/// A role (256) or policy (128) name: letters, digits, `-` and `_`.
fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `BindName` interpolated with `vars` and checked for `bind_type`; the error names the
/// bind type, as Consul's `IsValidBindingRule` does.
pub fn bind_name(
    bind_type: &str,
    template: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, String> {
    let valid: fn(&str) -> bool = match bind_type {
        BIND_SERVICE | BIND_NODE => valid_identity_name,
        BIND_ROLE => |s| valid_name(s, 256),
        BIND_POLICY => |s| valid_name(s, 128),
        other => return Err(format!("invalid Binding Rule: unknown BindType {other:?}")),
    };
    let name = interpolate(template, vars)
        .map_err(|e| format!("failed to validate bindType {bind_type:?}: {e}"))?;
    if !valid(&name) {
        return Err(format!(
            "failed to validate bindType {bind_type:?}: invalid bind name: {name:?}"
        ));
    }
    Ok(name)
}

/// Whether a rule's `BindName` can produce a valid name from the variables an auth method
/// offers (each set to `fake`, as Consul checks it when a rule is written).
pub fn check_bind_name(bind_type: &str, template: &str, vars: &[String]) -> Result<(), String> {
    let fake = vars
        .iter()
        .map(|v| (v.clone(), "fake".to_string()))
        .collect();
    bind_name(bind_type, template, &fake).map(|_| ())
}

/// What a login's matching rules grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings {
    pub service_identities: Vec<String>,
    pub node_identities: Vec<String>,
    /// Role IDs.
    pub roles: Vec<String>,
    /// Policy IDs.
    pub policies: Vec<String>,
}

impl Bindings {
    /// Nothing bound: Consul refuses the login rather than make a token that grants nothing.
    pub fn none(&self) -> bool {
        self.service_identities.is_empty()
            && self.node_identities.is_empty()
            && self.roles.is_empty()
            && self.policies.is_empty()
    }

    /// The token definition fields these bindings fill, `datacenter` on node identities.
    pub fn token_fields(&self, datacenter: &str) -> Value {
        let links = |ids: &[String]| ids.iter().map(|id| json!({ "ID": id })).collect::<Vec<_>>();
        json!({
            "ServiceIdentities": self
                .service_identities
                .iter()
                .map(|s| json!({ "ServiceName": s }))
                .collect::<Vec<_>>(),
            "NodeIdentities": self
                .node_identities
                .iter()
                .map(|n| json!({ "NodeName": n, "Datacenter": datacenter }))
                .collect::<Vec<_>>(),
            "Roles": links(&self.roles),
            "Policies": links(&self.policies),
        })
    }
}

/// The bindings of the matching rules (`(BindType, BindName)`), their names interpolated
/// with `identity`'s variables. Roles and policies are looked up by name (`role_id`,
/// `policy_id`); one that does not exist binds nothing, as in Consul.
pub fn bind(
    rules: &[(String, String)],
    identity: &Identity,
    role_id: impl Fn(&str) -> Option<String>,
    policy_id: impl Fn(&str) -> Option<String>,
) -> Result<Bindings, String> {
    let vars = identity.projected();
    let mut b = Bindings::default();
    let push = |list: &mut Vec<String>, v: String| {
        if !list.contains(&v) {
            list.push(v);
        }
    };
    for (bind_type, template) in rules {
        let name = bind_name(bind_type, template, &vars)?;
        match bind_type.as_str() {
            BIND_SERVICE => push(&mut b.service_identities, name),
            BIND_NODE => push(&mut b.node_identities, name),
            BIND_ROLE => {
                if let Some(id) = role_id(&name) {
                    push(&mut b.roles, id);
                }
            }
            _ => {
                if let Some(id) = policy_id(&name) {
                    push(&mut b.policies, id);
                }
            }
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::jwt::JwtValidator;

    fn config() -> JwtValidator {
        JwtValidator::new(&json!({
            "JWKSURL": "http://127.0.0.1:1/",
            "ClaimMappings": {"service": "svc", "/nested/team": "team", "n": "num", "gone": "gone"},
            "ListClaimMappings": {"groups": "groups", "one": "one"},
        }))
        .expect("valid")
    }

    #[test]
    fn claims_map_into_values_and_lists() {
        let v = config();
        let claims = json!({
            "service": "Web", "nested": {"team": "blue"}, "n": 42.9,
            "groups": ["admins", "", 7, true], "one": "solo",
        });
        let id = Identity::from_claims(&claims, &v.config).expect("maps");
        assert_eq!(id.values["svc"], "Web");
        assert_eq!(id.values["team"], "blue");
        assert_eq!(id.values["num"], "42");
        assert_eq!(
            id.values["gone"], "",
            "absent claims are empty, not missing"
        );
        assert_eq!(id.lists["groups"], ["admins", "7", "true"]);
        assert_eq!(id.lists["one"], ["solo"]);
        assert_eq!(
            id.selectable()["list"]["groups"][0],
            "admins",
            "selectors read list.<name>"
        );
        let bad = json!({"service": {"x": 1}});
        assert_eq!(
            Identity::from_claims(&bad, &v.config),
            Err("error converting claim 'service' to string from unknown type {\"x\":1}".into())
        );
    }

    #[test]
    fn bind_names_interpolate_lowercased_and_are_checked() {
        let vars: BTreeMap<String, String> = [("value.svc".to_string(), "Web".to_string())].into();
        assert_eq!(interpolate("${value.svc}-api", &vars), Ok("web-api".into()));
        assert_eq!(interpolate("${ value.svc }", &vars), Ok("web".into()));
        assert_eq!(interpolate("a$${x}", &vars), Ok("a${x}".into()));
        assert_eq!(interpolate("plain", &vars), Ok("plain".into()));
        assert!(interpolate("${value.nope}", &vars)
            .expect_err("unknown")
            .contains("unknown variable accessed: value.nope"));
        assert!(interpolate("${value.svc", &vars).is_err());
        assert_eq!(
            bind_name("service", "svc-${value.svc}", &vars),
            Ok("svc-web".into())
        );
        assert!(bind_name("service", "-${value.svc}", &vars).is_err());
        assert_eq!(
            bind_name("role", "Admins_${value.svc}", &vars),
            Ok("Admins_web".into())
        );
        assert!(bind_name("bogus", "x", &vars)
            .expect_err("unknown type")
            .contains("unknown BindType"));
        assert!(check_bind_name("node", "${value.svc}", &["value.svc".into()]).is_ok());
        assert!(check_bind_name("node", "${value.other}", &["value.svc".into()]).is_err());
    }

    #[test]
    fn bind_collects_identities_and_existing_roles_and_policies() {
        let id = Identity {
            values: [("svc".to_string(), "web".to_string())].into(),
            lists: BTreeMap::new(),
        };
        let rules: Vec<(String, String)> = [
            ("service", "${value.svc}"),
            ("service", "web"),
            ("node", "n-${value.svc}"),
            ("role", "ops"),
            ("role", "missing"),
            ("policy", "read-all"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let b = bind(
            &rules,
            &id,
            |n| (n == "ops").then(|| "r1".to_string()),
            |n| (n == "read-all").then(|| "p1".to_string()),
        )
        .expect("binds");
        assert_eq!(b.service_identities, ["web"]);
        assert_eq!(b.node_identities, ["n-web"]);
        assert_eq!(b.roles, ["r1"]);
        assert_eq!(b.policies, ["p1"]);
        assert!(!b.none());
        let f = b.token_fields("dc1");
        assert_eq!(f["NodeIdentities"][0]["Datacenter"], "dc1");
        let nothing = bind(&rules[4..5], &id, |_| None, |_| None).expect("binds");
        assert!(nothing.none(), "a missing role binds nothing");
    }
}
