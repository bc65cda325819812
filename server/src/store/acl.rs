//! ACL reads on the [`Catalog`]: every policy, token and role, a token by its secret with
//! what it grants, and the bootstrap state.

use super::catalog::Catalog;
use super::error::StoreError;
use super::mem::{TableId, Tables};
use super::tables::*;
use crate::codec::decode;
use crate::model::{AclMeta, AclPolicy, AclResolved, AclRole, AclToken};
use crate::Result;

/// The IDs in a definition's `Policies` or `Roles` links (`[{"ID": …}]`).
fn link_ids(definition: &str, field: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(definition).unwrap_or_default();
    v.get(field)
        .and_then(|l| l.as_array())
        .map(|l| {
            l.iter()
                .filter_map(|x| x.get("ID").and_then(|i| i.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn all<T: serde::de::DeserializeOwned>(snap: &Tables, t: TableId) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for (_, v) in snap.table(t).iter() {
        out.push(decode(v).map_err(StoreError::from)?);
    }
    Ok(out)
}

fn one<T: serde::de::DeserializeOwned>(snap: &Tables, t: TableId, id: &str) -> Result<Option<T>> {
    match snap.table(t).get(id) {
        Some(v) => Ok(Some(decode(v).map_err(StoreError::from)?)),
        None => Ok(None),
    }
}

impl Catalog {
    pub fn acl_policies(&self) -> Result<Vec<AclPolicy>> {
        all(&self.read(), ACL_POLICIES)
    }

    pub fn acl_tokens(&self) -> Result<Vec<AclToken>> {
        all(&self.read(), ACL_TOKENS)
    }

    pub fn acl_roles(&self) -> Result<Vec<AclRole>> {
        all(&self.read(), ACL_ROLES)
    }

    pub fn acl_meta(&self) -> Result<AclMeta> {
        Ok(one(&self.read(), ACL_META, ACL_META_ROW)?.unwrap_or_default())
    }

    /// The token whose SecretID is `secret`, with its policies and roles (links to deleted
    /// ones are skipped, as Consul's resolution skips them).
    pub fn acl_resolve(&self, secret: &str) -> Result<Option<AclResolved>> {
        let snap = self.read();
        let Some(accessor) = snap.table(ACL_SECRETS).get(secret) else {
            return Ok(None);
        };
        let accessor = String::from_utf8_lossy(accessor).into_owned();
        let Some(token) = one::<AclToken>(&snap, ACL_TOKENS, &accessor)? else {
            return Ok(None);
        };
        let mut roles = Vec::new();
        for id in link_ids(&token.definition, "Roles") {
            if let Some(r) = one::<AclRole>(&snap, ACL_ROLES, &id)? {
                roles.push(r);
            }
        }
        let mut ids = link_ids(&token.definition, "Policies");
        for r in &roles {
            ids.extend(link_ids(&r.definition, "Policies"));
        }
        let mut policies: Vec<AclPolicy> = Vec::new();
        for id in ids {
            if policies.iter().any(|p| p.id == id) {
                continue;
            }
            if let Some(p) = one::<AclPolicy>(&snap, ACL_POLICIES, &id)? {
                policies.push(p);
            }
        }
        Ok(Some(AclResolved {
            token,
            policies,
            roles,
        }))
    }
}
