//! `/v1/event/fire/<name>` and `/v1/event/list`: user events, as Consul's `event_endpoint.go`
//! serves them. The agent carries an event to the members on the gossip layer and keeps the
//! last ones it received ([`crate::AgentControl::fire_event`], [`crate::AgentControl::events`]);
//! never Raft. This file parses the request, enforces the size limit and answers Consul's JSON.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::params::Params;
use crate::ApiState;

/// Name and payload together may take this many bytes (Serf's default `UserEventSizeLimit`).
pub const USER_EVENT_SIZE_LIMIT: usize = 512;

/// Consul's `UserEvent`, as the API answers it and as it travels between agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserEvent {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    /// Base64 in JSON; `null` when the event has none.
    #[serde(serialize_with = "ser_payload", deserialize_with = "de_payload")]
    pub payload: Option<Vec<u8>>,
    pub node_filter: String,
    pub service_filter: String,
    pub tag_filter: String,
    pub version: u32,
    #[serde(rename = "LTime")]
    pub ltime: u64,
}

fn ser_payload<S: Serializer>(p: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
        None => s.serialize_none(),
    }
}

fn de_payload<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    })
    .transpose()
}

/// What a caller asks to fire: the name, the regex filters and the payload.
#[derive(Debug, Clone, Default)]
pub struct FireRequest {
    pub name: String,
    pub node_filter: String,
    pub service_filter: String,
    pub tag_filter: String,
    pub payload: Option<Vec<u8>>,
}

/// Consul's `uuidToUint64`: the index of an event list is derived from its last event's ID.
pub fn uuid_to_u64(id: &str) -> u64 {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return 0;
    }
    let low = u64::from_str_radix(&hex[..16], 16).unwrap_or(0);
    let high = u64::from_str_radix(&hex[16..], 16).unwrap_or(0);
    low ^ high
}

/// `PUT /v1/event/fire/` without a name.
pub(crate) async fn fire_unnamed() -> Response {
    (StatusCode::BAD_REQUEST, "Missing name").into_response()
}

/// `PUT /v1/event/fire/<name>?node=&service=&tag=`, the body as payload.
pub(crate) async fn fire(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref());
    if name.is_empty() {
        return fire_unnamed().await;
    }
    if name.len() + body.len() > USER_EVENT_SIZE_LIMIT {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "user event exceeds the limit of {USER_EVENT_SIZE_LIMIT} bytes \
                 (name and payload together; this one has {})",
                name.len() + body.len()
            ),
        )
            .into_response();
    }
    let filter = |k: &str| p.get(k).unwrap_or_default().to_string();
    let req = FireRequest {
        name,
        node_filter: filter("node"),
        service_filter: filter("service"),
        tag_filter: filter("tag"),
        payload: (!body.is_empty()).then(|| body.to_vec()),
    };
    match st.agent.fire_event(req).await {
        Ok(ev) => crate::reply::json(&ev, p.pretty()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// `GET /v1/event/list?name=`, blocking on `?index=` (the last event's ID as a number).
pub(crate) async fn list(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref());
    let block = match p.block() {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let deadline = block.map(|(_, wait)| tokio::time::Instant::now() + wait);
    let name = p.get("name").unwrap_or_default().to_string();
    loop {
        let (mut events, mut changed) = st.agent.events();
        if !name.is_empty() {
            events.retain(|e| e.name == name);
        }
        // A list without events answers 1, so a watch on it does not spin.
        let index = events.last().map_or(1, |e| uuid_to_u64(&e.id));
        let waiting = matches!(block, Some((min, _)) if min == index);
        if let (true, Some(deadline), Some(rx)) = (waiting, deadline, changed.as_mut()) {
            if let Ok(Ok(())) = tokio::time::timeout_at(deadline, rx.changed()).await {
                continue;
            }
        }
        let mut resp = crate::reply::json(&events, p.pretty());
        resp.headers_mut()
            .insert("x-consul-index", HeaderValue::from(index));
        return resp;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_consuls_uuid_fold() {
        // lower 64 bits XOR upper 64 bits of the UUID's hex digits.
        let id = "00000000-0000-0001-0000-000000000003";
        assert_eq!(uuid_to_u64(id), 1 ^ 3);
        assert_eq!(uuid_to_u64("nonsense"), 0);
    }

    #[test]
    fn payload_is_base64_or_null() {
        let mut e = UserEvent {
            id: "x".into(),
            name: "deploy".into(),
            payload: Some(b"hi".to_vec()),
            node_filter: String::new(),
            service_filter: String::new(),
            tag_filter: String::new(),
            version: 1,
            ltime: 7,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["Payload"], "aGk=");
        assert_eq!(v["LTime"], 7);
        assert_eq!(serde_json::from_value::<UserEvent>(v).unwrap(), e);
        e.payload = None;
        assert!(serde_json::to_value(&e).unwrap()["Payload"].is_null());
    }
}
