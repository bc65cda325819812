//! `/v1/status/leader` and `/v1/status/peers`.

use axum::extract::{RawQuery, State};
use axum::response::Response;

use crate::error::ApiResult;
use crate::params::Params;
use crate::reply::json;
use crate::ApiState;

pub(crate) async fn status_leader(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (leader, _) = st.server.status().await?;
    Ok(json(&leader.unwrap_or_default(), p.pretty()))
}

pub(crate) async fn status_peers(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (_, peers) = st.server.status().await?;
    Ok(json(&peers, p.pretty()))
}
