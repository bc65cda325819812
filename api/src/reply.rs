//! Response bodies and headers: JSON (indented with `?pretty`), Consul's `X-Consul-*` read
//! headers, and the `true`/`false` reply of a write.

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

/// Adds Consul's read headers.
pub(crate) fn with_meta(mut resp: Response, meta: &ReadMeta, mode: Consistency) -> Response {
    set_meta(resp.headers_mut(), meta, mode);
    resp
}

pub(crate) fn set_meta(h: &mut HeaderMap, meta: &ReadMeta, mode: Consistency) {
    h.insert("x-consul-index", HeaderValue::from(meta.index.max(1)));
    let known = if meta.known_leader { "true" } else { "false" };
    h.insert("x-consul-knownleader", HeaderValue::from_static(known));
    let contact = if meta.last_contact_ms == u64::MAX {
        0
    } else {
        meta.last_contact_ms
    };
    h.insert("x-consul-lastcontact", HeaderValue::from(contact));
    h.insert(
        "x-consul-effective-consistency",
        HeaderValue::from_static(mode.as_str()),
    );
}

/// `true`/`false`, with the index the write was applied at.
pub(crate) fn write_reply(ok: bool, index: u64, pretty: bool) -> Response {
    let mut resp = json(&ok, pretty);
    let meta = ReadMeta {
        index,
        known_leader: true,
        last_contact_ms: 0,
    };
    set_meta(resp.headers_mut(), &meta, Consistency::Default);
    resp
}
