//! `/v1/agent/*` for the agent itself and its cluster membership: members, self, join, leave,
//! force-leave and reload. Its own services and checks are in [`crate::agent_local`].

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::agent_local::local;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::reply::json;
use crate::ApiState;

pub(crate) async fn agent_members(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref());
    json(&st.agent.members(), p.pretty())
}

pub(crate) async fn agent_self(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref());
    json(&st.agent.self_info(), p.pretty())
}

pub(crate) async fn agent_join(
    State(st): State<ApiState>,
    Path(addr): Path<String>,
) -> ApiResult<Response> {
    st.agent.join(addr).await.map_err(ApiError::Unavailable)?;
    Ok(().into_response())
}

pub(crate) async fn agent_leave(State(st): State<ApiState>) -> Response {
    st.agent.leave();
    ().into_response()
}

pub(crate) async fn agent_force_leave(
    State(st): State<ApiState>,
    Path(node): Path<String>,
) -> ApiResult<Response> {
    st.agent
        .force_leave(node)
        .await
        .map_err(ApiError::BadRequest)?;
    Ok(().into_response())
}

pub(crate) async fn agent_reload(State(st): State<ApiState>) -> ApiResult<Response> {
    Ok(match local(&st)?.reload() {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    })
}
