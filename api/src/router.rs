//! Every route, in one place.

use axum::extract::DefaultBodyLimit;
use axum::http::header::ALLOW;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use axum::Router;

use crate::acl::*;
use crate::agent::*;
use crate::agent_local::*;
use crate::catalog::*;
use crate::coordinate::*;
use crate::health::*;
use crate::kv::*;
use crate::query::*;
use crate::session::*;
use crate::status::*;
use crate::txn::*;
use crate::{ApiState, MAX_VALUE_SIZE};

/// Builds the `/v1` router. A wrong method gets Consul's 405 (and `OPTIONS` its 200), with
/// the methods allowed in `Allow`.
pub fn router(state: ApiState) -> Router {
    let kv = get(kv_get).put(kv_put).delete(kv_delete);
    let routes = Router::new()
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/kv/", kv.clone())
        .route("/v1/kv/{*key}", kv)
        .route("/v1/agent/members", get(agent_members))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/token/{kind}", put(agent_token_set))
        .route("/v1/agent/join/{addr}", put(agent_join))
        .route("/v1/agent/leave", put(agent_leave))
        .route("/v1/agent/force-leave/{node}", put(agent_force_leave))
        .route("/v1/agent/services", get(agent_services))
        .route("/v1/agent/service/{id}", get(agent_service_get))
        .route("/v1/agent/checks", get(agent_checks))
        .route("/v1/agent/service/register", put(agent_service_register))
        .route(
            "/v1/agent/service/deregister/{id}",
            put(agent_service_deregister),
        )
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(agent_service_maintenance),
        )
        .route("/v1/agent/check/register", put(agent_check_register))
        .route(
            "/v1/agent/check/deregister/{id}",
            put(agent_check_deregister),
        )
        .route("/v1/agent/check/pass/{id}", put(agent_check_pass))
        .route("/v1/agent/check/warn/{id}", put(agent_check_warn))
        .route("/v1/agent/check/fail/{id}", put(agent_check_fail))
        .route("/v1/agent/check/update/{id}", put(agent_check_update))
        .route(
            "/v1/agent/health/service/name/{name}",
            get(agent_health_by_name),
        )
        .route("/v1/agent/health/service/id/{id}", get(agent_health_by_id))
        .route("/v1/agent/maintenance", put(agent_maintenance))
        .route("/v1/agent/reload", put(agent_reload))
        .route("/v1/catalog/register", put(catalog_register))
        .route("/v1/catalog/deregister", put(catalog_deregister))
        .route("/v1/catalog/datacenters", get(catalog_datacenters))
        .route("/v1/catalog/nodes", get(catalog_nodes))
        .route("/v1/catalog/node/{node}", get(catalog_node))
        .route(
            "/v1/catalog/node-services/{node}",
            get(catalog_node_services),
        )
        .route("/v1/catalog/connect/{service}", get(connect_instances))
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/catalog/service/{name}", get(catalog_service))
        .route("/v1/catalog/service/", get(missing_service_name))
        .route("/v1/health/service/", get(missing_service_name))
        .route("/v1/health/node/{node}", get(health_node))
        .route("/v1/health/checks/{service}", get(health_checks))
        .route("/v1/health/service/{name}", get(health_service))
        .route("/v1/health/state/{state}", get(health_state))
        .route("/v1/health/connect/{service}", get(connect_instances))
        .route("/v1/health/ingress/{service}", get(connect_instances))
        .route("/v1/coordinate/datacenters", get(coordinate_datacenters))
        .route("/v1/coordinate/nodes", get(coordinate_nodes))
        .route("/v1/coordinate/node/{node}", get(coordinate_node))
        .route("/v1/coordinate/update", put(coordinate_update))
        .route("/v1/session/create", put(session_create))
        .route("/v1/session/destroy/{id}", put(session_destroy))
        .route("/v1/session/renew/{id}", put(session_renew))
        .route("/v1/session/info/{id}", get(session_info))
        .route("/v1/session/node/{node}", get(session_node))
        .route("/v1/session/info/", get(missing_session))
        .route("/v1/session/renew/", put(missing_session))
        .route("/v1/session/destroy/", put(missing_session))
        .route("/v1/session/node/", get(missing_node_name))
        .route("/v1/session/list", get(session_list))
        .route("/v1/txn", put(txn_apply))
        .route("/v1/query", get(query_list).post(query_create))
        .route(
            "/v1/query/{id}",
            get(query_get).put(query_update).delete(query_delete),
        )
        .route("/v1/query/{id}/execute", get(query_execute))
        .route("/v1/query/{id}/explain", get(query_explain))
        .route("/v1/acl/bootstrap", put(acl_bootstrap))
        .route("/v1/acl/policies", get(acl_policy_list))
        .route("/v1/acl/policy", put(acl_policy_create))
        .route(
            "/v1/acl/policy/{id}",
            get(acl_policy_read)
                .put(acl_policy_update)
                .delete(acl_policy_delete),
        )
        .route("/v1/acl/policy/name/{name}", get(acl_policy_read_by_name))
        .route("/v1/acl/tokens", get(acl_token_list))
        .route("/v1/acl/token", put(acl_token_create))
        .route("/v1/acl/token/self", get(acl_token_self))
        .route(
            "/v1/acl/token/{id}",
            get(acl_token_read)
                .put(acl_token_update)
                .delete(acl_token_delete),
        )
        .route("/v1/acl/token/{id}/clone", put(acl_token_clone))
        .route("/v1/acl/roles", get(acl_role_list))
        .route("/v1/acl/role", put(acl_role_create))
        .route(
            "/v1/acl/role/{id}",
            get(acl_role_read)
                .put(acl_role_update)
                .delete(acl_role_delete),
        )
        .route("/v1/acl/role/name/{name}", get(acl_role_read_by_name))
        .route("/v1/acl/templated-policies", get(acl_templated_policy_list))
        .route(
            "/v1/acl/templated-policy/name/{*name}",
            get(acl_templated_policy_read),
        )
        .route(
            "/v1/acl/templated-policy/preview/{*name}",
            post(acl_templated_policy_preview),
        )
        .route("/v1/acl/auth-methods", get(acl_auth_method_list))
        .route("/v1/acl/auth-method", put(acl_auth_method_create))
        .route(
            "/v1/acl/auth-method/{name}",
            get(acl_auth_method_read)
                .put(acl_auth_method_update)
                .delete(acl_auth_method_delete),
        )
        .route("/v1/acl/binding-rules", get(acl_binding_rule_list))
        .route("/v1/acl/binding-rule", put(acl_binding_rule_create))
        .route(
            "/v1/acl/binding-rule/{id}",
            get(acl_binding_rule_read)
                .put(acl_binding_rule_update)
                .delete(acl_binding_rule_delete),
        )
        .route("/v1/acl/login", post(acl_login).put(acl_login))
        .route("/v1/acl/logout", post(acl_logout).put(acl_logout))
        .route("/v1/acl/{*rest}", any(acl_disabled))
        .route(
            "/v1/operator/keyring",
            any(crate::keyring::operator_keyring),
        )
        .route(
            "/v1/operator/raft/configuration",
            get(crate::operator::operator_raft_configuration),
        )
        .route(
            "/v1/operator/raft/peer",
            delete(crate::operator::operator_raft_peer_delete),
        )
        .route(
            "/v1/operator/raft/transfer-leader",
            post(crate::operator::operator_raft_transfer_leader),
        )
        .route("/v1/operator/usage", get(crate::operator::operator_usage))
        .route(
            "/v1/operator/autopilot/configuration",
            get(crate::autopilot::operator_autopilot_configuration)
                .put(crate::autopilot::operator_autopilot_configuration_put),
        )
        .route(
            "/v1/operator/autopilot/health",
            get(crate::autopilot::operator_autopilot_health),
        )
        .route(
            "/v1/operator/autopilot/state",
            get(crate::autopilot::operator_autopilot_state),
        )
        .route("/v1/agent/metrics", get(crate::metrics::agent_metrics))
        .route("/v1/agent/monitor", get(crate::monitor::agent_monitor))
        .route("/v1/event/fire/", put(crate::event::fire_unnamed))
        .route("/v1/event/fire/{name}", put(crate::event::fire))
        .route("/v1/agent/query/{name}", put(crate::serf::query))
        .route("/v1/agent/exec", put(crate::serf::exec))
        .route("/v1/event/list", get(crate::event::list))
        .route(
            "/v1/snapshot",
            get(crate::snapshot::snapshot_get).put(crate::snapshot::snapshot_put),
        );
    // With ACLs on, every route above is checked against its ACL rule (`acl::enforce`). With
    // them off (fixed at start) the layer is left out, so requests pay nothing for it.
    let routes = if state.acl.enabled() {
        routes.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::acl::enforce::enforce,
        ))
    } else {
        routes
    };
    let routes = routes.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::metrics::track,
    ));
    let routes = routes
        // Values over the limit get our own 413 with the sizes; bodies far past it are cut off.
        .layer(DefaultBodyLimit::max(MAX_VALUE_SIZE * 2))
        // Every 4xx says why, these two included.
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state);
    // Axum sets `Allow` outside a route's own layers: rewrite it around the whole router.
    Router::new()
        .route("/", get(index))
        .fallback_service(routes)
        .layer(axum::middleware::map_response(consul_allow))
}

/// `GET /`: 200 with what this is, as Consul answers without its UI, so that an HTTP check
/// or a load balancer probing the agent's root finds it up.
async fn index() -> &'static str {
    "Muster agent: no web UI; the HTTP API is under /v1/ (Consul's API)."
}

/// `/v1/catalog/service/` and `/v1/health/service/` without a name: Consul's 400.
async fn missing_service_name() -> (StatusCode, &'static str) {
    (StatusCode::BAD_REQUEST, "Missing service name")
}

async fn missing_session() -> (StatusCode, &'static str) {
    (StatusCode::BAD_REQUEST, "Missing session")
}

async fn missing_node_name() -> (StatusCode, &'static str) {
    (StatusCode::BAD_REQUEST, "Missing node name")
}

async fn no_route(method: Method, uri: Uri) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!("No such endpoint: {method} {}", uri.path()),
    )
}

/// `OPTIONS` answers 200 with `Allow`; any other method not allowed gets Consul's 405.
async fn wrong_method(method: Method) -> Response {
    if method == Method::OPTIONS {
        return StatusCode::OK.into_response();
    }
    (
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed"),
    )
        .into_response()
}

/// Consul's `Allow`: the methods a route takes and `OPTIONS`, without the `HEAD` axum adds
/// to every `GET`.
async fn consul_allow(mut r: Response) -> Response {
    let Some(allow) = r.headers().get(ALLOW).and_then(|v| v.to_str().ok()) else {
        return r;
    };
    let mut methods: std::collections::BTreeSet<&str> = allow
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && *m != "HEAD")
        .collect();
    methods.insert("OPTIONS");
    let joined = methods.into_iter().collect::<Vec<_>>().join(",");
    if let Ok(v) = HeaderValue::from_str(&joined) {
        r.headers_mut().insert(ALLOW, v);
    }
    r
}
