//! `PUT /v1/agent/token/<kind>`: replaces one of the agent's own tokens while it runs
//! (`muster acl set-agent-token`), persisted with `acl.enable_token_persistence`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_server::acl::TokenKind;

use super::{disabled, str_field};
use crate::body::json_value;
use crate::error::{ApiError, ApiResult};
use crate::ApiState;

pub(crate) async fn agent_token_set(
    State(st): State<ApiState>,
    Path(kind): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    if let Some(r) = disabled(&st) {
        return Ok(r);
    }
    let v = json_value(&body).map_err(|e| match e {
        ApiError::BadRequest(m) => ApiError::BadRequest(format!("Request decode failed: {m}")),
        e => e,
    })?;
    let Some(k) = TokenKind::parse(&kind) else {
        return Ok((StatusCode::NOT_FOUND, format!("Token {kind:?} is unknown")).into_response());
    };
    st.acl
        .tokens()
        .set(k, &str_field(&v, "Token"))
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    tracing::info!(token = %kind, "Updated agent's ACL token");
    Ok(StatusCode::OK.into_response())
}
