//! Rule precedence, as a table across every resource: exact over prefix, the longest
//! prefix, deny on equal terms, and the access levels each rule grants.

use super::*;
use crate::model::{AclPolicy, AclResolved, AclToken};

fn authorizer(rules: &[&str], default_allow: bool) -> Authorizer {
    let policies = rules
        .iter()
        .enumerate()
        .map(|(i, r)| AclPolicy {
            id: format!("p{i}"),
            name: format!("p{i}"),
            definition: serde_json::json!({ "Rules": r }).to_string(),
            ..AclPolicy::default()
        })
        .collect();
    let res = AclResolved {
        token: AclToken {
            accessor_id: "acc".into(),
            definition: "{}".into(),
            ..AclToken::default()
        },
        policies,
        roles: Vec::new(),
    };
    Authorizer::new(&res, default_allow, "dc1")
}

/// `(policies' rules, name asked, access asked, allowed)`, with `R` standing for the
/// resource's rule word; each row runs for every named resource.
const TABLE: &[(&[&str], &str, Access, bool)] = &[
    // Exact beats prefix, either way round.
    (
        &[r#"R_prefix "a" { policy = "deny" }\nR "ab" { policy = "write" }"#],
        "ab",
        Access::Write,
        true,
    ),
    (
        &[r#"R_prefix "a" { policy = "write" }\nR "ab" { policy = "deny" }"#],
        "ab",
        Access::Read,
        false,
    ),
    // An exact rule names only itself.
    (
        &[r#"R "ab" { policy = "write" }"#],
        "abc",
        Access::Read,
        false,
    ),
    // The longest prefix wins.
    (
        &[r#"R_prefix "" { policy = "write" }\nR_prefix "ab" { policy = "read" }"#],
        "abc",
        Access::Write,
        false,
    ),
    (
        &[r#"R_prefix "" { policy = "write" }\nR_prefix "ab" { policy = "read" }"#],
        "abc",
        Access::Read,
        true,
    ),
    (
        &[r#"R_prefix "" { policy = "deny" }\nR_prefix "ab" { policy = "write" }"#],
        "abc",
        Access::Write,
        true,
    ),
    (
        &[r#"R_prefix "" { policy = "deny" }\nR_prefix "ab" { policy = "write" }"#],
        "aXc",
        Access::Read,
        false,
    ),
    // Deny wins on equal terms, across policies.
    (
        &[
            r#"R "ab" { policy = "write" }"#,
            r#"R "ab" { policy = "deny" }"#,
        ],
        "ab",
        Access::Read,
        false,
    ),
    (
        &[
            r#"R_prefix "a" { policy = "write" }"#,
            r#"R_prefix "a" { policy = "deny" }"#,
        ],
        "ab",
        Access::Read,
        false,
    ),
    // Otherwise the stronger of two equal rules.
    (
        &[
            r#"R "ab" { policy = "read" }"#,
            r#"R "ab" { policy = "write" }"#,
        ],
        "ab",
        Access::Write,
        true,
    ),
    // Read grants read only; write grants both.
    (
        &[r#"R "ab" { policy = "read" }"#],
        "ab",
        Access::Write,
        false,
    ),
    (
        &[r#"R "ab" { policy = "write" }"#],
        "ab",
        Access::Read,
        true,
    ),
    // Nothing matches: the default policy (deny here).
    (
        &[r#"R "zz" { policy = "write" }"#],
        "ab",
        Access::Read,
        false,
    ),
];

#[test]
fn precedence_table_for_every_named_resource() {
    for r in Resource::NAMED {
        for (i, (rules, name, want, allowed)) in TABLE.iter().enumerate() {
            let rules: Vec<String> = rules
                .iter()
                .map(|t| t.replace('R', r.as_str()).replace("\\n", "\n"))
                .collect();
            let refs: Vec<&str> = rules.iter().map(String::as_str).collect();
            let a = authorizer(&refs, false);
            assert_eq!(
                a.allowed(r, name, *want),
                *allowed,
                "row {i} for {}: {rules:?} asking {want:?} on {name:?}",
                r.as_str()
            );
        }
    }
}

#[test]
fn global_resources_and_the_default_policy() {
    for r in Resource::GLOBAL {
        let read = authorizer(&[&format!(r#"{} = "read""#, r.as_str())], true);
        assert!(read.allowed(r, "", Access::Read));
        assert!(!read.allowed(r, "", Access::Write), "{r:?}");
        let write = format!(r#"{} = "write""#, r.as_str());
        let deny = format!(r#"{} = "deny""#, r.as_str());
        let both = authorizer(&[&write, &deny], true);
        assert!(!both.allowed(r, "", Access::Read), "deny wins for {r:?}");
    }
    let open = authorizer(&[], true);
    assert!(open.allowed(Resource::Key, "x", Access::Write));
    assert!(open.allowed(Resource::Operator, "", Access::Write));
    assert!(
        !open.allowed(Resource::Acl, "", Access::Read),
        "acl needs a rule"
    );
}

#[test]
fn key_list_and_json_rules() {
    let a = authorizer(&[r#"{"key_prefix": {"app/": {"policy": "list"}}}"#], false);
    assert!(a.allowed(Resource::Key, "app/x", Access::List));
    assert!(a.allowed(Resource::Key, "app/x", Access::Read));
    assert!(!a.allowed(Resource::Key, "app/x", Access::Write));
    assert!(
        Rules::parse(r#"service "a" { policy = "list" }"#).is_err(),
        "list is for keys"
    );
    assert!(Rules::parse(r#"key "a" { policy = "nope" }"#).is_err());
}

#[test]
fn write_prefix_needs_write_on_everything_below() {
    let a = authorizer(
        &[r#"key_prefix "app/" { policy = "write" }
key "app/locked" { policy = "read" }"#],
        false,
    );
    assert!(!a.allowed_write_prefix(Resource::Key, "app/"));
    assert!(a.allowed_write_prefix(Resource::Key, "app/x/"));
}

#[test]
fn management_identities_and_denial_text() {
    let m = Authorizer::new(
        &AclResolved {
            token: AclToken::default(),
            policies: vec![AclPolicy {
                id: MANAGEMENT_POLICY_ID.into(),
                definition: serde_json::json!({ "Rules": MANAGEMENT_RULES }).to_string(),
                ..AclPolicy::default()
            }],
            roles: Vec::new(),
        },
        false,
        "dc1",
    );
    assert!(m.is_management());
    assert!(m.allowed(Resource::Acl, "", Access::Write));
    assert!(Rules::parse(MANAGEMENT_RULES).is_ok());

    let svc = Authorizer::new(
        &AclResolved {
            token: AclToken {
                accessor_id: "acc".into(),
                definition: r#"{"ServiceIdentities":[{"ServiceName":"web"}]}"#.into(),
                ..AclToken::default()
            },
            ..AclResolved::default()
        },
        false,
        "dc1",
    );
    assert!(svc.allowed(Resource::Service, "web", Access::Write));
    assert!(svc.allowed(Resource::Service, "web-sidecar-proxy", Access::Write));
    assert!(svc.allowed(Resource::Service, "db", Access::Read));
    assert!(!svc.allowed(Resource::Service, "db", Access::Write));
    assert!(svc.allowed(Resource::Node, "n1", Access::Read));
    let denied = svc
        .check(Resource::Key, "other/x", Access::Write)
        .unwrap_err();
    assert_eq!(
        denied.to_string(),
        "Permission denied: token with AccessorID 'acc' lacks permission 'key:write' on \"other/x\""
    );
    let anon = Authorizer::anonymous(false).check(Resource::Operator, "", Access::Read);
    assert_eq!(
        anon.unwrap_err().to_string(),
        "Permission denied: anonymous token lacks permission 'operator:read'. The anonymous \
         token is used implicitly when a request does not specify a token."
    );
}

#[test]
fn policies_and_identities_apply_only_in_their_datacenters() {
    let policy = |dcs: serde_json::Value| AclPolicy {
        id: "p".into(),
        definition: serde_json::json!({
            "Rules": r#"key_prefix "" { policy = "write" }"#,
            "Datacenters": dcs,
        })
        .to_string(),
        ..AclPolicy::default()
    };
    let with = |p: AclPolicy, token_def: &str| AclResolved {
        token: AclToken {
            definition: token_def.into(),
            ..AclToken::default()
        },
        policies: vec![p],
        roles: Vec::new(),
    };
    let key = |a: &Authorizer| a.allowed(Resource::Key, "x", Access::Write);
    assert!(key(&Authorizer::new(
        &with(policy(serde_json::json!([])), "{}"),
        false,
        "dc1"
    )));
    assert!(key(&Authorizer::new(
        &with(policy(serde_json::json!(["dc1", "dc2"])), "{}"),
        false,
        "dc1"
    )));
    assert!(!key(&Authorizer::new(
        &with(policy(serde_json::json!(["dc2"])), "{}"),
        false,
        "dc1"
    )));
    let ids = r#"{"ServiceIdentities":[{"ServiceName":"web","Datacenters":["dc2"]}],
        "NodeIdentities":[{"NodeName":"n1","Datacenter":"dc2"}]}"#;
    let a = Authorizer::new(&with(policy(serde_json::json!(["dc2"])), ids), false, "dc1");
    assert!(!a.allowed(Resource::Service, "web", Access::Write));
    assert!(!a.allowed(Resource::Node, "n1", Access::Write));
    let b = Authorizer::new(&with(policy(serde_json::json!(["dc2"])), ids), false, "dc2");
    assert!(b.allowed(Resource::Service, "web", Access::Write));
    assert!(b.allowed(Resource::Node, "n1", Access::Write));
}
