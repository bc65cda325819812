//! Query-string parsing with Consul's conventions: flags without a value (`?recurse`), the
//! consistency mode, `?dc` and `?pretty`, and the `X-Consul-*` response headers.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use muster_server::model::{Consistency, ReadMeta};
use serde::Serialize;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Default)]
pub(crate) struct Params {
    map: HashMap<String, Vec<String>>,
}

impl Params {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            map.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Params { map }
    }

    pub(crate) fn has(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.map.get(k).and_then(|v| v.first()).map(String::as_str)
    }

    pub(crate) fn u64(&self, k: &str) -> ApiResult<Option<u64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::BadRequest(format!("Invalid {k} value {v:?}: not a number"))
            }),
        }
    }

    pub(crate) fn consistency(&self) -> ApiResult<Consistency> {
        match (self.has("stale"), self.has("consistent")) {
            (true, true) => Err(ApiError::BadRequest(
                "Cannot specify ?stale with ?consistent, conflicting semantics.".into(),
            )),
            (true, false) => Ok(Consistency::Stale),
            (false, true) => Ok(Consistency::Consistent),
            (false, false) => Ok(Consistency::Default),
        }
    }

    /// Checks `?dc`: our own datacenter is accepted, any other has no path.
    pub(crate) fn check_dc(&self, own: &str) -> ApiResult<()> {
        match self.get("dc") {
            Some(dc) if !dc.is_empty() && dc != own => {
                Err(ApiError::Unavailable("No path to datacenter".into()))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn pretty(&self) -> bool {
        self.has("pretty")
    }
}

/// Serializes `v` as JSON, indented with `?pretty`.
pub(crate) fn json<T: Serialize>(v: &T, pretty: bool) -> Response {
    let body = if pretty {
        serde_json::to_vec_pretty(v)
    } else {
        serde_json::to_vec(v)
    };
    match body {
        Ok(b) => ([("content-type", "application/json")], b).into_response(),
        Err(e) => ApiError::Unavailable(format!("encode response: {e}")).into_response(),
    }
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
