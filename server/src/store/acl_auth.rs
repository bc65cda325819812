//! Auth method and binding rule reads on the [`Catalog`].

use super::acl::all;
use super::catalog::Catalog;
use super::tables::{ACL_AUTH_METHODS, ACL_BINDING_RULES};
use crate::model::{AclAuthMethod, AclBindingRule};
use crate::Result;

impl Catalog {
    /// Every auth method, by name.
    pub fn acl_auth_methods(&self) -> Result<Vec<AclAuthMethod>> {
        all(&self.read(), ACL_AUTH_METHODS)
    }

    /// Every binding rule, by ID.
    pub fn acl_binding_rules(&self) -> Result<Vec<AclBindingRule>> {
        all(&self.read(), ACL_BINDING_RULES)
    }
}
