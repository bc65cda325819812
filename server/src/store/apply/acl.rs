//! ACL writes: bootstrap, and setting and deleting policies, tokens and roles. Names
//! (policies, roles) and secrets (tokens) are unique; a write that would break that fails and
//! changes nothing. Every change bumps the one ACL index.

use super::{get, put, Apply};
use crate::codec::decode;
use crate::model::{AclMeta, AclPolicy, AclRole, AclToken};
use crate::store::error::Result;
use crate::store::mem::{put_raw, TableId};
use crate::store::tables::*;

impl Apply<'_> {
    /// Stores the first management token, unless ACLs were bootstrapped already and
    /// `reset_index` is not the index of that bootstrap.
    pub(super) fn acl_bootstrap(&mut self, token: AclToken, reset_index: u64) -> Result<bool> {
        let meta = get::<AclMeta>(&*self.table(ACL_META)?, ACL_META_ROW)?.unwrap_or_default();
        if meta.bootstrap_index != 0 && meta.bootstrap_index != reset_index {
            return Ok(false);
        }
        if !self.acl_token_set(token)? {
            return Ok(false);
        }
        let meta = AclMeta {
            bootstrap_index: self.index,
        };
        put(&mut *self.table(ACL_META)?, ACL_META_ROW, &meta)?;
        Ok(true)
    }

    /// Whether a row of `table` other than `id` has this name; `named` reads a row's ID and
    /// name.
    fn acl_name_taken<T: serde::de::DeserializeOwned>(
        &self,
        table: TableId,
        id: &str,
        name: &str,
        named: impl Fn(&T) -> (&str, &str),
    ) -> Result<bool> {
        for (_, v) in self.table(table)?.iter() {
            let row: T = decode(v)?;
            let (row_id, row_name) = named(&row);
            if row_name == name && row_id != id {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(super) fn acl_policy_set(&mut self, mut p: AclPolicy) -> Result<bool> {
        if self.acl_name_taken(ACL_POLICIES, &p.id, &p.name, |o: &AclPolicy| {
            (&o.id, &o.name)
        })? {
            return Ok(false);
        }
        let old = get::<AclPolicy>(&*self.table(ACL_POLICIES)?, &p.id)?;
        p.create_index = old.map_or(self.index, |o| o.create_index);
        p.modify_index = self.index;
        put(&mut *self.table(ACL_POLICIES)?, &p.id.clone(), &p)?;
        self.bump(IDX_ACL)?;
        Ok(true)
    }

    pub(super) fn acl_role_set(&mut self, mut r: AclRole) -> Result<bool> {
        if self.acl_name_taken(ACL_ROLES, &r.id, &r.name, |o: &AclRole| (&o.id, &o.name))? {
            return Ok(false);
        }
        let old = get::<AclRole>(&*self.table(ACL_ROLES)?, &r.id)?;
        r.create_index = old.map_or(self.index, |o| o.create_index);
        r.modify_index = self.index;
        put(&mut *self.table(ACL_ROLES)?, &r.id.clone(), &r)?;
        self.bump(IDX_ACL)?;
        Ok(true)
    }

    /// Deletes a policy or a role by ID.
    pub(super) fn acl_delete(&mut self, table: TableId, id: &str) -> Result<bool> {
        if self.table(table)?.remove(id).is_some() {
            self.bump(IDX_ACL)?;
        }
        Ok(true)
    }

    pub(super) fn acl_token_set(&mut self, mut t: AclToken) -> Result<bool> {
        if let Some(m) = super::acl_auth::token_method(&t) {
            if !self.table(ACL_AUTH_METHODS)?.contains_key(m.as_str()) {
                return Ok(false);
            }
        }
        if let Some(owner) = self.table(ACL_SECRETS)?.get(t.secret_id.as_str()) {
            if **owner != *t.accessor_id.as_bytes() {
                return Ok(false);
            }
        }
        let old = get::<AclToken>(&*self.table(ACL_TOKENS)?, &t.accessor_id)?;
        if let Some(old) = &old {
            self.table(ACL_SECRETS)?.remove(old.secret_id.as_str());
        }
        t.create_index = old.map_or(self.index, |o| o.create_index);
        t.modify_index = self.index;
        put_raw(
            &mut *self.table(ACL_SECRETS)?,
            &t.secret_id,
            t.accessor_id.as_bytes(),
        );
        put(&mut *self.table(ACL_TOKENS)?, &t.accessor_id.clone(), &t)?;
        self.bump(IDX_ACL)?;
        Ok(true)
    }

    pub(super) fn acl_token_delete(&mut self, accessor_id: &str) -> Result<bool> {
        let old = self.table(ACL_TOKENS)?.remove(accessor_id);
        if let Some(old) = old {
            let old: AclToken = decode(&old)?;
            self.table(ACL_SECRETS)?.remove(old.secret_id.as_str());
            self.bump(IDX_ACL)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Command;
    use crate::store::apply::{apply_command, Changes};
    use crate::store::mem::{Live, Tables, WriteTxn};
    use crate::store::Catalog;

    pub(in crate::store::apply) fn apply(db: &mut Tables, index: u64, cmd: Command) -> bool {
        let txn = WriteTxn::new(db);
        let mut ch = Changes::default();
        let res = apply_command(&txn, index, cmd, &mut ch).expect("apply");
        *db = txn.finish(None, Default::default());
        res.success
    }

    fn token(accessor: &str, secret: &str, definition: &str) -> AclToken {
        AclToken {
            accessor_id: accessor.into(),
            secret_id: secret.into(),
            definition: definition.into(),
            ..AclToken::default()
        }
    }

    pub(in crate::store::apply) fn catalog(db: &Tables) -> Catalog {
        let live = Arc::new(Live::default());
        live.publish(db.clone());
        Catalog::new(live)
    }

    #[test]
    fn bootstrap_once_then_only_with_the_reset_index() {
        let mut db = Tables::default();
        let boot = |a: &str, reset_index| Command::AclBootstrap {
            token: Box::new(token(a, &format!("s-{a}"), "{}")),
            reset_index,
        };
        assert!(apply(&mut db, 5, boot("a1", 0)));
        assert!(
            !apply(&mut db, 6, boot("a2", 0)),
            "second bootstrap refused"
        );
        assert!(
            !apply(&mut db, 7, boot("a2", 4)),
            "wrong reset index refused"
        );
        assert_eq!(catalog(&db).acl_meta().expect("meta").bootstrap_index, 5);
        assert!(
            apply(&mut db, 8, boot("a3", 5)),
            "reset index of the bootstrap"
        );
        assert_eq!(catalog(&db).acl_meta().expect("meta").bootstrap_index, 8);
        assert_eq!(catalog(&db).acl_tokens().expect("tokens").len(), 2);
    }

    #[test]
    fn tokens_resolve_by_secret_with_their_roles_policies() {
        let mut db = Tables::default();
        let policy = |id: &str, name: &str| {
            Command::AclPolicySet(Box::new(AclPolicy {
                id: id.into(),
                name: name.into(),
                definition: "{}".into(),
                ..AclPolicy::default()
            }))
        };
        assert!(apply(&mut db, 1, policy("p1", "one")));
        assert!(apply(&mut db, 2, policy("p2", "two")));
        assert!(!apply(&mut db, 3, policy("p3", "one")), "names are unique");
        let role = AclRole {
            id: "r1".into(),
            name: "role".into(),
            definition: r#"{"Policies":[{"ID":"p2"},{"ID":"p1"}]}"#.into(),
            ..AclRole::default()
        };
        assert!(apply(&mut db, 4, Command::AclRoleSet(Box::new(role))));
        let def = r#"{"Policies":[{"ID":"p1"},{"ID":"gone"}],"Roles":[{"ID":"r1"}]}"#;
        assert!(apply(
            &mut db,
            5,
            Command::AclTokenSet(Box::new(token("t1", "s1", def)))
        ));
        let clash = token("t2", "s1", "{}");
        assert!(
            !apply(&mut db, 6, Command::AclTokenSet(Box::new(clash))),
            "secrets unique"
        );

        let r = catalog(&db)
            .acl_resolve("s1")
            .expect("read")
            .expect("found");
        assert_eq!(r.token.accessor_id, "t1");
        let ids: Vec<&str> = r.policies.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["p1", "p2"]);
        assert_eq!(r.roles.len(), 1);

        assert!(apply(
            &mut db,
            7,
            Command::AclTokenDelete {
                accessor_id: "t1".into()
            }
        ));
        assert!(catalog(&db).acl_resolve("s1").expect("read").is_none());
        assert!(db.table(ACL_SECRETS).is_empty());
        assert_eq!(db.index(IDX_ACL), 7);
    }
}
