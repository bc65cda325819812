//! `ApiError`: what a handler fails with, and the HTTP answer each becomes (4xx with the
//! reason; 5xx logged, with an opaque body).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An HTTP error in Consul's shape: a status code and a one-line plain-text reason.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; nothing was applied.
    #[error("{0}")]
    BadRequest(String),
    /// 404 with no body.
    #[error("not found")]
    NotFound,
    /// 404 with the reason: the named thing does not exist (`Requested policy does not exist`).
    #[error("{0}")]
    Missing(String),
    /// 403 with the reason: refused by ACLs (`Permission denied: …`, `ACL not found`).
    #[error("{0}")]
    Forbidden(String),
    /// 413: the body or value is over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 500 with Consul's text, for errors an operator must see verbatim (`No cluster leader`).
    #[error("{0}")]
    Unavailable(String),
    /// An error from the state store.
    #[error(transparent)]
    Server(#[from] muster_server::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use muster_server::Error as E;
        let (code, msg) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound => (StatusCode::NOT_FOUND, String::new()),
            ApiError::Missing(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            ApiError::Unavailable(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
            ApiError::Server(E::InvalidRequest(m)) => (StatusCode::BAD_REQUEST, m),
            ApiError::Server(e @ (E::NoLeader | E::NoServers)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
            ApiError::Server(e) => {
                tracing::error!(error = %e, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        };
        (code, msg).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
