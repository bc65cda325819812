//! Response bodies and headers: JSON (indented with `?pretty`), Consul's `X-Consul-*` read
//! headers, and the `true`/`false` reply of a write (which, as Consul's, carries no index
//! headers).

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use muster_server::model::{Consistency, ReadMeta};
use serde::Serialize;

use crate::error::{ApiError, ApiResult};

/// Serializes `v` as JSON, indented with `?pretty`.
pub(crate) fn json<T: Serialize>(v: &T, pretty: bool) -> Response {
    match encode(v, pretty) {
        Ok(b) => json_bytes(b),
        Err(e) => e.into_response(),
    }
}

pub(crate) fn encode<T: Serialize>(v: &T, pretty: bool) -> ApiResult<bytes::Bytes> {
    let body = if pretty {
        serde_json::to_vec_pretty(v)
    } else {
        serde_json::to_vec(v)
    };
    body.map(Into::into)
        .map_err(|e| ApiError::Unavailable(format!("encode response: {e}")))
}

/// An already-encoded JSON body.
pub(crate) fn json_bytes(b: bytes::Bytes) -> Response {
    ([("content-type", "application/json")], b).into_response()
}

/// Adds Consul's read headers: `X-Consul-Index`, `-KnownLeader` and `-LastContact` (KV and
/// session reads, which in Consul 1.10 do not report their consistency).
pub(crate) fn with_meta(mut resp: Response, meta: &ReadMeta) -> Response {
    set_meta(resp.headers_mut(), meta);
    resp
}

/// [`with_meta`] plus `X-Consul-Effective-Consistency`, as Consul's catalog and health reads
/// send it.
pub(crate) fn with_query_meta(mut resp: Response, meta: &ReadMeta, mode: Consistency) -> Response {
    set_meta(resp.headers_mut(), meta);
    resp.headers_mut().insert(
        "x-consul-effective-consistency",
        HeaderValue::from_static(mode.as_str()),
    );
    resp
}

fn set_meta(h: &mut HeaderMap, meta: &ReadMeta) {
    h.insert("x-consul-index", HeaderValue::from(meta.index.max(1)));
    let known = if meta.known_leader { "true" } else { "false" };
    h.insert("x-consul-knownleader", HeaderValue::from_static(known));
    let contact = if meta.last_contact_ms == u64::MAX {
        0
    } else {
        meta.last_contact_ms
    };
    h.insert("x-consul-lastcontact", HeaderValue::from(contact));
}

/// `true`/`false`. Consul sends no index or leader headers on a write.
pub(crate) fn write_reply(ok: bool, pretty: bool) -> Response {
    json(&ok, pretty)
}
