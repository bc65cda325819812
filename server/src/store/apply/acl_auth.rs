//! Auth method and binding rule writes. Deleting an auth method deletes its binding rules
//! and the tokens its logins made, in the same command, as Consul's state store does. Every
//! change bumps the one ACL index.

use super::{get, put, Apply};
use crate::codec::decode;
use crate::model::{AclAuthMethod, AclBindingRule, AclToken};
use crate::store::error::Result;
use crate::store::tables::*;

/// The auth method a token's definition names (`AuthMethod`), if any: a token naming one
/// that does not exist is refused, so a login racing the method's deletion leaves no token.
pub(super) fn token_method(t: &AclToken) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&t.definition).ok()?;
    Some(v.get("AuthMethod")?.as_str()?.to_string())
}

impl Apply<'_> {
    pub(super) fn acl_auth_method_set(&mut self, mut m: AclAuthMethod) -> Result<bool> {
        let old = get::<AclAuthMethod>(&*self.table(ACL_AUTH_METHODS)?, &m.name)?;
        m.create_index = old.map_or(self.index, |o| o.create_index);
        m.modify_index = self.index;
        put(&mut *self.table(ACL_AUTH_METHODS)?, &m.name.clone(), &m)?;
        self.bump(IDX_ACL)?;
        Ok(true)
    }

    pub(super) fn acl_auth_method_delete(&mut self, name: &str) -> Result<bool> {
        if self.table(ACL_AUTH_METHODS)?.remove(name).is_none() {
            return Ok(true);
        }
        let rules: Vec<String> = {
            let t = self.table(ACL_BINDING_RULES)?;
            let mut ids = Vec::new();
            for (k, v) in t.iter() {
                if decode::<AclBindingRule>(v)?.auth_method == name {
                    ids.push(k.to_string());
                }
            }
            ids
        };
        for id in rules {
            self.table(ACL_BINDING_RULES)?.remove(id.as_str());
        }
        let tokens: Vec<String> = {
            let t = self.table(ACL_TOKENS)?;
            let mut ids = Vec::new();
            for (k, v) in t.iter() {
                if token_method(&decode::<AclToken>(v)?).as_deref() == Some(name) {
                    ids.push(k.to_string());
                }
            }
            ids
        };
        for accessor in tokens {
            self.acl_token_delete(&accessor)?;
        }
        self.bump(IDX_ACL)?;
        Ok(true)
    }

    pub(super) fn acl_binding_rule_set(&mut self, mut r: AclBindingRule) -> Result<bool> {
        if !self
            .table(ACL_AUTH_METHODS)?
            .contains_key(r.auth_method.as_str())
        {
            return Ok(false);
        }
        let old = get::<AclBindingRule>(&*self.table(ACL_BINDING_RULES)?, &r.id)?;
        r.create_index = old.map_or(self.index, |o| o.create_index);
        r.modify_index = self.index;
        put(&mut *self.table(ACL_BINDING_RULES)?, &r.id.clone(), &r)?;
        self.bump(IDX_ACL)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::acl::tests::{apply, catalog};
    use crate::model::Command;
    use crate::store::mem::Tables;

    use super::*;

    fn rule(id: &str, method: &str) -> Command {
        Command::AclBindingRuleSet(Box::new(AclBindingRule {
            id: id.into(),
            auth_method: method.into(),
            definition: "{}".into(),
            ..AclBindingRule::default()
        }))
    }

    fn token(accessor: &str, definition: &str) -> Command {
        Command::AclTokenSet(Box::new(AclToken {
            accessor_id: accessor.into(),
            secret_id: format!("s-{accessor}"),
            definition: definition.into(),
            ..AclToken::default()
        }))
    }

    #[test]
    fn deleting_a_method_deletes_its_rules_and_login_tokens() {
        let mut db = Tables::default();
        assert!(!apply(&mut db, 1, rule("r0", "m1")), "no such method yet");
        for (i, name) in ["m1", "m2"].iter().enumerate() {
            let m = AclAuthMethod {
                name: name.to_string(),
                definition: r#"{"Type":"jwt"}"#.into(),
                ..AclAuthMethod::default()
            };
            assert!(apply(
                &mut db,
                2 + i as u64,
                Command::AclAuthMethodSet(Box::new(m))
            ));
        }
        assert!(apply(&mut db, 4, rule("r1", "m1")));
        assert!(apply(&mut db, 5, rule("r2", "m2")));
        assert!(apply(&mut db, 6, token("t1", r#"{"AuthMethod":"m1"}"#)));
        assert!(apply(&mut db, 7, token("t2", r#"{"AuthMethod":"m2"}"#)));
        assert!(apply(&mut db, 8, token("t3", "{}")));
        let c = catalog(&db);
        assert_eq!(c.acl_auth_methods().expect("read")[0].create_index, 2);

        let del = Command::AclAuthMethodDelete { name: "m1".into() };
        assert!(apply(&mut db, 9, del));
        let c = catalog(&db);
        let names: Vec<String> = c
            .acl_auth_methods()
            .expect("read")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["m2"]);
        let rules: Vec<String> = c
            .acl_binding_rules()
            .expect("read")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(rules, ["r2"]);
        let tokens: Vec<String> = c
            .acl_tokens()
            .expect("read")
            .into_iter()
            .map(|t| t.accessor_id)
            .collect();
        assert_eq!(tokens, ["t2", "t3"]);
        assert!(c.acl_resolve("s-t1").expect("read").is_none());
        assert_eq!(db.index(IDX_ACL), 9);
        let late = token("t4", r#"{"AuthMethod":"m1"}"#);
        assert!(!apply(&mut db, 10, late), "a token of a deleted method");
    }
}
