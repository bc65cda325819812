//! `/v1/kv/<key>`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_server::model::{Command, Query, QueryResult};

use crate::error::{ApiError, ApiResult};
use crate::params::{json, set_meta, with_meta, Params};
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
    p.check_dc(&st.agent.datacenter())?;
    let mode = p.consistency()?;
    let key = key_of(path);
    let query = if p.has("keys") {
        Query::KvKeys {
            prefix: key,
            separator: p.get("separator").map(str::to_string),
        }
    } else if p.has("recurse") {
        Query::KvList { prefix: key }
    } else {
        Query::KvGet { key }
    };
    let (res, meta) = st.server.read(mode, query).await?;
    let resp = match res {
        QueryResult::Kv(Some(e)) if p.has("raw") => e.value.into_response(),
        QueryResult::Kv(Some(e)) => json(&[KvPair::from(e)], p.pretty()),
        QueryResult::KvList(l) if !l.is_empty() => json(
            &l.into_iter().map(KvPair::from).collect::<Vec<_>>(),
            p.pretty(),
        ),
        QueryResult::Keys(k) if !k.is_empty() => json(&k, p.pretty()),
        _ => StatusCode::NOT_FOUND.into_response(),
    };
    Ok(with_meta(resp, &meta, mode))
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
    if p.has("acquire") || p.has("release") {
        return Err(ApiError::BadRequest(
            "Sessions (acquire/release) are not supported yet".into(),
        ));
    }
    let flags = p.u64("flags")?.unwrap_or(0);
    let cas = p.u64("cas")?;
    let r = st
        .server
        .write(Command::KvSet {
            key,
            value: body.to_vec(),
            flags,
            cas,
        })
        .await?;
    Ok(write_reply(r.success, r.index, p.pretty()))
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
    Ok(write_reply(r.success, r.index, p.pretty()))
}

/// `true`/`false`, with the index the write was applied at.
fn write_reply(ok: bool, index: u64, pretty: bool) -> Response {
    let mut resp = json(&ok, pretty);
    let meta = muster_server::model::ReadMeta {
        index,
        known_leader: true,
        last_contact_ms: 0,
    };
    set_meta(
        resp.headers_mut(),
        &meta,
        muster_server::model::Consistency::Default,
    );
    resp
}
