//! `<query>.query[.<dc>].<domain>`: a prepared query run for DNS, as Consul's
//! `preparedQueryLookup`. The instances are the query's execution, in its order (shuffled,
//! or sorted by distance); the TTL is the query's `DNS.TTL`, else the configured service TTL.
//! An unknown query or one that selects no instance is NXDOMAIN; a query that cannot be
//! resolved (a template that does not render) is SERVFAIL. With ACLs, the query's token (else
//! the agent's default) must read an instance's node and service for it to be answered.

use std::sync::Arc;

use muster_server::acl::{Authorizer, Resolver, Resource};
use muster_server::model::{Consistency, PreparedExecute, PreparedRun, Query, QueryResult};
use muster_server::prepared::Definition;
use muster_server::Server;

use crate::answer::{Answer, Question};
use crate::instance::Instance;
use crate::name::Names;
use crate::DnsConfig;

/// Runs query `name` for DNS and answers `q` with what it selects.
pub(crate) async fn lookup(
    server: &Server,
    acl: Option<&Resolver>,
    config: &DnsConfig,
    names: &Names,
    q: &Question<'_>,
    name: &str,
) -> muster_server::Result<Answer> {
    // DNS carries no `?near`; the query's own `Near` still applies, `_agent` being this agent.
    let req = PreparedExecute {
        id_or_name: name.to_string(),
        agent_node: config.node_name.clone(),
        ..PreparedExecute::default()
    };
    let query = Query::PreparedQueryExecute(Box::new(req));
    let mode = if config.allow_stale {
        Consistency::Stale
    } else {
        Consistency::Default
    };
    let (mut res, meta) = server.read(mode, query.clone()).await?;
    if mode == Consistency::Stale && u128::from(meta.last_contact_ms) > config.max_stale.as_millis()
    {
        res = server.read(Consistency::Default, query).await?.0;
    }
    let (found, nodes) = match res {
        QueryResult::PreparedQueryRun(PreparedRun::Found { query, nodes }) => (query, nodes),
        QueryResult::PreparedQueryRun(PreparedRun::Failed(why)) => {
            return Err(muster_server::Error::InvalidRequest(why))
        }
        _ => {
            return Ok(Answer::empty(
                hickory_proto::op::ResponseCode::NXDomain,
                true,
            ))
        }
    };
    let def = Definition::of(&found);
    let ttl = match def.dns.ttl.as_str() {
        "" => config.ttl_of(&def.service.service),
        t => {
            muster_server::go_duration(t).map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32)
        }
    };
    // As over HTTP: the query's own token if it has one, else the agent's default; only
    // instances whose node and service that token may read are answered.
    let authz = match (acl.filter(|a| a.enabled()), def.token.as_str()) {
        (Some(a), t) if !t.is_empty() => Some(
            a.resolve(Some(t))
                .await
                .unwrap_or_else(|_| Arc::new(Authorizer::anonymous(false))),
        ),
        _ => crate::acl::default_authorizer(acl).await,
    };
    let instances: Vec<Instance> = nodes
        .into_iter()
        .filter(|h| {
            crate::acl::may_read(&authz, Resource::Node, &h.node.name)
                && crate::acl::may_read(&authz, Resource::Service, &h.service.name)
        })
        .filter_map(|h| Instance::new(h, names))
        .collect();
    Ok(Answer::instances(
        q,
        instances.iter().collect(),
        ttl,
        config,
        true,
    ))
}
