//! ACLs in DNS: a query carries no token, so it is answered with the agent's `default`
//! token (else the anonymous one); a service or node it may not read does not exist.

use std::sync::Arc;

use muster_server::acl::{Access, Authorizer, Resolver, Resource};
use muster_server::model::Node;

/// The authorizer DNS answers with: `None` when ACLs are off. A default token that does
/// not resolve grants nothing.
pub(crate) async fn default_authorizer(acl: Option<&Resolver>) -> Option<Arc<Authorizer>> {
    let acl = acl.filter(|a| a.enabled())?;
    Some(match acl.resolve(None).await {
        Ok(a) => a,
        Err(_) => Arc::new(Authorizer::anonymous(false)),
    })
}

pub(crate) fn may_read(authz: &Option<Arc<Authorizer>>, r: Resource, name: &str) -> bool {
    authz
        .as_ref()
        .is_none_or(|a| a.allowed(r, name, Access::Read))
}

/// The nodes `authz` may read.
pub(crate) fn readable_nodes(
    authz: &Option<Arc<Authorizer>>,
    nodes: Arc<Vec<Node>>,
) -> Arc<Vec<Node>> {
    if authz.is_none() {
        return nodes;
    }
    let kept = nodes
        .iter()
        .filter(|n| may_read(authz, Resource::Node, &n.name))
        .cloned()
        .collect();
    Arc::new(kept)
}
