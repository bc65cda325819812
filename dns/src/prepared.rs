//! `<query>.query[.<dc>].<domain>`: a prepared query run for DNS, as Consul's
//! `preparedQueryLookup`. The instances are the query's execution, in its order (shuffled,
//! or sorted by distance); the TTL is the query's `DNS.TTL`, else the configured service TTL.
//! An unknown query or one that selects no instance is NXDOMAIN; a query that cannot be
//! resolved (a template that does not render) is SERVFAIL.

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
    let instances: Vec<Instance> = nodes
        .into_iter()
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
