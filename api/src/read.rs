//! Reads with the request's consistency, `?dc` and blocking parameters, and the encoded-reply
//! cache in front of the hottest of them.

use axum::response::Response;
use muster_server::model::{Consistency, Query, QueryResult, ReadMeta};

use crate::error::ApiResult;
use crate::params::Params;
use crate::reply::{json_bytes, with_query_meta};
use crate::ApiState;

/// Runs a read with the request's consistency, `?dc` and blocking parameters.
pub(crate) async fn read(
    st: &ApiState,
    p: &Params,
    q: Query,
) -> ApiResult<(QueryResult, ReadMeta, Consistency)> {
    p.check_dc(&st.agent.datacenter())?;
    let mode = p.consistency()?;
    let (res, meta) = match p.block()? {
        Some((index, wait)) if index > 0 => st.server.read_blocking(mode, q, index, wait).await?,
        _ => st.server.read(mode, q).await?,
    };
    Ok((res, meta, mode))
}

/// Like [`read`], but first asks only for the index, and answers from `cache` when it holds
/// the encoded reply for exactly that index. `encode_fn` turns fresh data into the reply.
///
/// On a server, a miss reads the local catalog under the barrier [`Server::read_meta`]
/// already ran: a follower asks the leader for its read index once per request, not twice.
///
/// [`Server::read_meta`]: muster_server::Server::read_meta
pub(crate) async fn read_cached(
    st: &ApiState,
    p: &Params,
    q: Query,
    cache_key: String,
    encode_fn: impl FnOnce(QueryResult) -> ApiResult<bytes::Bytes>,
) -> ApiResult<Response> {
    p.check_dc(&st.agent.datacenter())?;
    let mode = p.consistency()?;
    let blocking = p.block()?.is_some_and(|(i, _)| i > 0);
    let mut fresh = None;
    if !blocking {
        let mut meta = st.server.read_meta(mode, q.clone()).await?;
        if let Some(body) = st.cache.get(&cache_key, meta.index) {
            return Ok(with_query_meta(json_bytes(body), &meta, mode));
        }
        if let Some(catalog) = st.server.catalog() {
            let (res, index) = catalog.query(&q)?;
            meta.index = index;
            fresh = Some((res, meta, mode));
        }
    }
    let (res, meta, mode) = match fresh {
        Some(f) => f,
        None => read(st, p, q).await?,
    };
    let body = match st.cache.get(&cache_key, meta.index) {
        Some(b) => b,
        None => {
            let b = encode_fn(res)?;
            st.cache.put(cache_key, meta.index, b.clone());
            b
        }
    };
    Ok(with_query_meta(json_bytes(body), &meta, mode))
}
