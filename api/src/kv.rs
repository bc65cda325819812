//! `/v1/kv/<key>`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use muster_server::model::{Command, Consistency, LockOp, Query, QueryResult};

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::read::read;
use crate::reply::{json, with_meta, write_reply};
use crate::types::KvPair;
use crate::{ApiState, MAX_VALUE_SIZE};

fn key_of(path: Option<Path<String>>) -> String {
    path.map(|Path(k)| k).unwrap_or_default()
}

pub(crate) async fn kv_get(
    State(st): State<ApiState>,
    path: Option<Path<String>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let key = key_of(path);
    let query = if p.has("keys") {
        Query::KvKeys {
            prefix: key,
            separator: p.get("separator").map(str::to_string),
        }
    } else if p.has("recurse") {
        Query::KvList { prefix: key }
    } else if key.is_empty() {
        // Consul's 400: a watch on no key ends here rather than polling a 404 forever.
        return Err(ApiError::BadRequest("Missing key name".into()));
    } else {
        Query::KvGet { key }
    };
    let (res, meta, _) = read(&st, &p, query).await?;
    let resp = match res {
        // `text/plain` as Consul sends it, so a browser never renders a stored value as a page.
        QueryResult::Kv(Some(e)) if p.has("raw") => {
            ([(header::CONTENT_TYPE, "text/plain")], e.value).into_response()
        }
        QueryResult::Kv(Some(e)) => json(&[KvPair::from(e)], p.pretty()),
        QueryResult::KvList(l) if !l.is_empty() => json(
            &l.into_iter().map(KvPair::from).collect::<Vec<_>>(),
            p.pretty(),
        ),
        QueryResult::Keys(k) if !k.is_empty() => json(&k, p.pretty()),
        _ => StatusCode::NOT_FOUND.into_response(),
    };
    Ok(with_meta(resp, &meta))
}

pub(crate) async fn kv_put(
    State(st): State<ApiState>,
    path: Option<Path<String>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let key = key_of(path);
    if key.is_empty() {
        return Err(ApiError::BadRequest("Missing key name".into()));
    }
    if body.len() > MAX_VALUE_SIZE {
        return Err(ApiError::TooLarge(format!(
            "Value exceeds {MAX_VALUE_SIZE} byte limit ({} bytes given)",
            body.len()
        )));
    }
    let lock = match (p.get("acquire"), p.get("release")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(format!(
                "Conflicting flags: {}",
                q.as_deref().unwrap_or_default()
            )))
        }
        (Some(s), None) => Some(LockOp::Acquire(session_id(s)?)),
        // Consul answers `false` to a release by any string that does not hold the lock,
        // whether or not it could be a session ID; clients rely on that.
        (None, Some(s)) => Some(LockOp::Release(s.to_ascii_lowercase())),
        (None, None) => None,
    };
    let flags = p.u64("flags")?.unwrap_or(0);
    let cas = p.u64("cas")?;
    let acquiring = match &lock {
        Some(LockOp::Acquire(s)) => Some(s.clone()),
        _ => None,
    };
    let cmd = Command::KvSet {
        key,
        value: body.to_vec(),
        flags,
        cas,
        lock,
    };
    let r = st.server.write(cmd).await?;
    if let (false, Some(session)) = (r.success, acquiring) {
        // Consul fails an acquire by a session that does not exist, rather than answering
        // `false` as for a lock held by another.
        let q = Query::Session {
            id: session.clone(),
        };
        let (res, _) = st.server.read(Consistency::Stale, q).await?;
        if matches!(res, QueryResult::Sessions(s) if s.is_empty()) {
            return Err(ApiError::Unavailable(format!(
                "raft apply failed: invalid session {session:?}"
            )));
        }
    }
    Ok(write_reply(r.success, p.pretty()))
}

pub(crate) async fn kv_delete(
    State(st): State<ApiState>,
    path: Option<Path<String>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let key = key_of(path);
    let cmd = if p.has("recurse") {
        Command::KvDeleteTree { prefix: key }
    } else {
        if key.is_empty() {
            return Err(ApiError::BadRequest("Missing key name".into()));
        }
        Command::KvDelete {
            key,
            cas: p.u64("cas")?,
        }
    };
    let r = st.server.write(cmd).await?;
    Ok(write_reply(r.success, p.pretty()))
}

/// A session ID as Consul issues them (a UUID).
fn session_id(s: &str) -> ApiResult<String> {
    if muster_server::is_uuid(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(ApiError::BadRequest(format!("Invalid session ID {s:?}")))
    }
}
