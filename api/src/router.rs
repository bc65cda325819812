//! Every route, in one place.

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, put};
use axum::Router;

use crate::agent::*;
use crate::catalog::*;
use crate::kv::*;
use crate::status::*;
use crate::{ApiState, MAX_VALUE_SIZE};

/// Builds the `/v1` router. Wrong methods get 405 from axum.
pub fn router(state: ApiState) -> Router {
    let kv = get(kv_get).put(kv_put).delete(kv_delete);
    Router::new()
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/kv/", kv.clone())
        .route("/v1/kv/{*key}", kv)
        .route("/v1/agent/members", get(agent_members))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/join/{addr}", put(agent_join))
        .route("/v1/agent/leave", put(agent_leave))
        .route("/v1/agent/force-leave/{node}", put(agent_force_leave))
        .route("/v1/catalog/nodes", get(catalog_nodes))
        .route("/v1/catalog/node/{node}", get(catalog_node))
        .route("/v1/health/node/{node}", get(health_node))
        // Values over the limit get our own 413 with the sizes; bodies far past it are cut off.
        .layer(DefaultBodyLimit::max(MAX_VALUE_SIZE * 2))
        .with_state(state)
}
