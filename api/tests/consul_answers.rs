//! What Consul's clients read, answered as Consul 1.10 answers it: headers on writes and reads,
//! `null` for what a registration left out, unknown nodes, the Connect, ACL and keyring
//! endpoints, wrong methods, and the fields of a check.

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use common::*;
use serde_json::json;

async fn register(f: &Fixture, body: serde_json::Value) -> Reply {
    call(f, "PUT", "/v1/catalog/register", body.to_string()).await
}

#[tokio::test]
async fn writes_carry_no_index_headers_and_only_catalog_reads_report_consistency() {
    let f = fixture().await;
    for r in [
        call(&f, "PUT", "/v1/kv/a", "1").await,
        call(&f, "DELETE", "/v1/kv/a", Body::empty()).await,
        register(&f, json!({"Node": "n1", "Address": "10.0.0.1"})).await,
        call(&f, "PUT", "/v1/catalog/deregister", r#"{"Node": "gone"}"#).await,
    ] {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json(), json!(true));
        for h in [
            "x-consul-index",
            "x-consul-knownleader",
            "x-consul-lastcontact",
        ] {
            assert!(r.headers.get(h).is_none(), "a write sends no {h}");
        }
    }
    call(&f, "PUT", "/v1/kv/b", "1").await;
    let kv = get(&f, "/v1/kv/b").await;
    assert!(kv.headers.get("x-consul-index").is_some());
    assert!(kv.headers.get("x-consul-effective-consistency").is_none());
    let nodes = get(&f, "/v1/catalog/nodes?stale").await;
    assert_eq!(nodes.headers["x-consul-effective-consistency"], "stale");
    let checks = get(&f, "/v1/health/state/any").await;
    assert_eq!(checks.headers["x-consul-effective-consistency"], "leader");
}

#[tokio::test]
async fn unknown_nodes_are_null_with_200() {
    let f = fixture().await;
    let r = get(&f, "/v1/catalog/node/ghost").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!(null));
    assert!(r.index() >= 1);
    let r = get(&f, "/v1/catalog/node-services/ghost").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"Node": null, "Services": null}));
}

#[tokio::test]
async fn node_services_lists_a_nodes_services_and_maps_left_out_are_null() {
    let f = fixture().await;
    register(
        &f,
        json!({"Node": "n1", "Address": "10.0.0.1",
        "Service": {"ID": "r1", "Service": "redis", "Port": 6379, "Tags": ["a"]}}),
    )
    .await;
    let r = get(&f, "/v1/catalog/node-services/n1").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["Node"]["Node"], "n1");
    assert_eq!(v["Node"]["TaggedAddresses"], json!(null));
    assert_eq!(v["Node"]["Meta"], json!(null));
    assert_eq!(v["Services"][0]["ID"], "r1");
    assert_eq!(v["Services"][0]["Port"], 6379);
    let r = get(&f, "/v1/catalog/node-services/n1?filter=Port%20%3D%3D%201").await;
    assert_eq!(r.json()["Services"], json!([]));
    // `?filter` on a map left out (null) still names a map.
    let r = get(&f, "/v1/catalog/nodes?filter=Meta.env%20%3D%3D%20%22x%22").await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn connect_reads_are_empty_lists_with_index_headers() {
    let f = fixture().await;
    for path in [
        "/v1/catalog/connect/web",
        "/v1/health/connect/web?merge-central-config&peer=",
        "/v1/health/ingress/web",
    ] {
        let r = get(&f, path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.json(), json!([]), "{path}");
        assert!(r.index() >= 1, "{path}");
        assert_eq!(r.headers["x-consul-knownleader"], "true");
    }
}

#[tokio::test]
async fn acl_and_keyring_answer_as_disabled() {
    let f = fixture().await;
    for (m, p) in [
        ("GET", "/v1/acl/policies"),
        ("PUT", "/v1/acl/bootstrap"),
        ("GET", "/v1/acl/token/self"),
        ("GET", "/v1/acl/auth-methods"),
        ("PUT", "/v1/acl/binding-rule"),
        ("POST", "/v1/acl/login"),
        ("POST", "/v1/acl/logout"),
    ] {
        let r = call(&f, m, p, Body::empty()).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (StatusCode::UNAUTHORIZED, "ACL support disabled"),
            "{m} {p}"
        );
    }
    let r = get(&f, "/v1/operator/keyring").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "encryption not enabled")
    );
}

#[tokio::test]
async fn wrong_methods_get_consuls_405_and_options_its_200() {
    let f = fixture().await;
    let r = call(&f, "DELETE", "/v1/status/leader", Body::empty()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.text(), "method DELETE not allowed");
    assert_eq!(r.headers["allow"], "GET,OPTIONS");
    let r = call(&f, "PATCH", "/v1/kv/x", Body::empty()).await;
    assert_eq!(r.headers["allow"], "DELETE,GET,OPTIONS,PUT");
    let r = call(&f, "OPTIONS", "/v1/kv/x", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["allow"], "DELETE,GET,OPTIONS,PUT");
}

#[tokio::test]
async fn a_service_read_without_a_name_is_consuls_400() {
    let f = fixture().await;
    for path in ["/v1/catalog/service/", "/v1/health/service/"] {
        let r = get(&f, path).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (StatusCode::BAD_REQUEST, "Missing service name"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn catalog_service_meta_left_out_is_null() {
    let f = fixture().await;
    register(
        &f,
        json!({"Node": "n1", "Address": "10.0.0.1",
        "Service": {"ID": "r1", "Service": "redis"}}),
    )
    .await;
    let v = get(&f, "/v1/catalog/node/n1").await.json();
    assert_eq!(v["Services"]["r1"]["Meta"], json!(null));
    let v = get(&f, "/v1/health/service/redis").await.json();
    assert_eq!(v[0]["Service"]["Meta"], json!(null));
    // Every catalog service shows Connect's fields, empty when not set, as Consul's.
    let empty_proxy = json!({"Mode": "", "MeshGateway": {}, "Expose": {}});
    assert_eq!(v[0]["Service"]["Proxy"], empty_proxy);
    assert_eq!(v[0]["Service"]["Connect"], json!({}));
    let v = get(&f, "/v1/catalog/service/redis").await.json();
    assert_eq!(v[0]["ServiceProxy"], empty_proxy);
    assert_eq!(v[0]["ServiceConnect"], json!({}));
    assert_eq!(v[0]["ServiceSocketPath"], "");
}

#[tokio::test]
async fn an_unknown_health_state_is_an_empty_list() {
    let f = fixture().await;
    let r = get(&f, "/v1/health/state/sideways").await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!([])));
    assert!(r.index() >= 1);
}

#[tokio::test]
async fn registration_errors_are_500_as_consuls() {
    let f = fixture().await;
    let r = register(&f, json!({"Address": "10.9.9.9"})).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "Must provide node")
    );
    let r = register(&f, json!({"Node": "noaddr"})).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let r = call(&f, "PUT", "/v1/catalog/deregister", r#"{"ServiceID": "x"}"#).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "Must provide node")
    );
}

#[tokio::test]
async fn checks_have_consuls_fields_and_their_services_tags_everywhere() {
    let f = fixture().await;
    register(
        &f,
        json!({"Node": "n1", "Address": "10.0.0.1",
        "Service": {"ID": "r1", "Service": "redis", "Tags": ["primary", "v1"]},
        "Checks": [{"CheckID": "c1", "Name": "c1", "ServiceID": "r1", "Status": "passing"},
                   {"CheckID": "disk", "Name": "disk", "Status": "warning"}]}),
    )
    .await;
    for path in [
        "/v1/health/node/n1",
        "/v1/health/state/any",
        "/v1/health/checks/redis",
    ] {
        let v = get(&f, path).await.json();
        let c1 = v
            .as_array()
            .and_then(|a| a.iter().find(|c| c["CheckID"] == "c1"))
            .unwrap_or_else(|| panic!("{path}: no c1 in {v}"));
        assert_eq!(c1["ServiceTags"], json!(["primary", "v1"]), "{path}");
        for (k, want) in [
            ("Type", json!("")),
            ("Interval", json!("")),
            ("Timeout", json!("")),
            ("ExposedPort", json!(0)),
            ("Definition", json!({})),
        ] {
            assert_eq!(c1[k], want, "{path}: {k}");
        }
    }
    let v = get(&f, "/v1/health/node/n1").await.json();
    let disk = v
        .as_array()
        .and_then(|a| a.iter().find(|c| c["CheckID"] == "disk"))
        .expect("disk");
    assert_eq!(disk["ServiceTags"], json!([]));
}
