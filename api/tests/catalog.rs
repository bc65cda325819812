//! Catalog and health endpoints: Consul's shapes, parameters and errors.

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use common::*;
use serde_json::json;

async fn register(f: &Fixture, body: serde_json::Value) -> Reply {
    call(f, "PUT", "/v1/catalog/register", body.to_string()).await
}

/// Two nodes running `redis`, one of them also `web`, with service and node checks.
async fn seed(f: &Fixture) {
    for (node, addr, role, status) in [
        ("db1", "10.0.0.1", "primary", "passing"),
        ("db2", "10.0.0.2", "replica", "critical"),
    ] {
        let r = register(f, json!({
            "Node": node, "Address": addr, "NodeMeta": {"rack": if node == "db1" { "a" } else { "b" }},
            "Service": {"ID": "redis1", "Service": "redis", "Tags": [role, "v7"], "Port": 6379, "Meta": {"ver": "7"}},
            "Check": {"CheckID": "service:redis1", "Name": "redis alive", "Status": status, "ServiceID": "redis1", "Output": "PONG"}
        })).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (StatusCode::OK, "true"),
            "register {node}"
        );
        let r = register(
            f,
            json!({"Node": node, "Address": addr, "SkipNodeUpdate": true,
            "Check": {"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing"}}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = register(
        f,
        json!({"Node": "db1", "Address": "10.0.0.1", "SkipNodeUpdate": true,
        "Service": {"Service": "web", "Port": 80, "Address": "10.0.0.9"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn catalog_lists_nodes_services_and_instances() {
    let f = fixture().await;
    seed(&f).await;
    assert_eq!(
        get(&f, "/v1/catalog/datacenters").await.json(),
        json!(["dc1"])
    );
    let services = get(&f, "/v1/catalog/services").await.json();
    assert_eq!(
        services,
        json!({"redis": ["primary", "v7", "replica"], "web": []})
    );

    let r = get(&f, "/v1/catalog/service/redis").await;
    let list = r.json();
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(2),
        "catalog is not health-filtered"
    );
    let e = &list[0];
    for k in [
        "ID",
        "Node",
        "Address",
        "Datacenter",
        "TaggedAddresses",
        "NodeMeta",
        "ServiceID",
        "ServiceName",
        "ServiceTags",
        "ServiceAddress",
        "ServicePort",
        "ServiceMeta",
        "ServiceWeights",
        "ServiceEnableTagOverride",
        "CreateIndex",
        "ModifyIndex",
    ] {
        assert!(e.get(k).is_some(), "missing {k} in {e}");
    }
    assert_eq!(e["Node"], "db1");
    assert_eq!(e["ServicePort"], 6379);
    assert_eq!(
        e["ServiceAddress"], "",
        "empty means use the node's Address"
    );
    assert_eq!(e["ServiceWeights"], json!({"Passing": 1, "Warning": 1}));
    assert!(r.index() >= e["ModifyIndex"].as_u64().unwrap_or(0));

    let tagged = get(&f, "/v1/catalog/service/redis?tag=primary")
        .await
        .json();
    assert_eq!(tagged.as_array().map(Vec::len), Some(1));
    assert_eq!(tagged[0]["Node"], "db1");
    let both = get(&f, "/v1/catalog/service/redis?tag=primary&tag=replica")
        .await
        .json();
    assert_eq!(both, json!([]), "repeated tags are ANDed");
    let meta = get(&f, "/v1/catalog/service/redis?node-meta=rack:b")
        .await
        .json();
    assert_eq!(meta[0]["Node"], "db2");
    let filtered = get(&f, "/v1/catalog/service/redis?filter=ServiceTags%20contains%20%22replica%22%20or%20Node%20%3D%3D%20nope").await.json();
    assert_eq!(filtered.as_array().map(Vec::len), Some(1));
    assert_eq!(filtered[0]["Node"], "db2");
    let bad = get(&f, "/v1/catalog/service/redis?filter=Node%20%3D").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let node = get(&f, "/v1/catalog/node/db1").await.json();
    assert_eq!(node["Node"]["Address"], "10.0.0.1");
    assert_eq!(node["Services"]["web"]["Address"], "10.0.0.9");
    // An unknown node is `null` with 200, as Consul answers it.
    let nope = get(&f, "/v1/catalog/node/nope").await;
    assert_eq!((nope.status, nope.json()), (StatusCode::OK, json!(null)));
    let nodes = get(&f, "/v1/catalog/nodes?node-meta=rack:a").await.json();
    assert_eq!(nodes.as_array().map(Vec::len), Some(1));
    // Only the services of the matching nodes: web runs on db1 (rack a) alone.
    let services = get(&f, "/v1/catalog/services?node-meta=rack:b").await;
    assert_eq!(services.json(), json!({"redis": ["replica", "v7"]}));
    assert!(services.index() > 0);
    let services = get(&f, "/v1/catalog/services?node-meta=rack:a")
        .await
        .json();
    assert_eq!(services, json!({"redis": ["primary", "v7"], "web": []}));
    let none = get(&f, "/v1/catalog/services?node-meta=rack:z")
        .await
        .json();
    assert_eq!(none, json!({}));
}

#[tokio::test]
async fn health_filters_and_includes_node_checks() {
    let f = fixture().await;
    seed(&f).await;
    let all = get(&f, "/v1/health/service/redis").await.json();
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    let checks: Vec<&str> = all[0]["Checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["CheckID"].as_str())
        .collect();
    assert_eq!(
        checks,
        ["serfHealth", "service:redis1"],
        "node checks are included"
    );
    assert_eq!(all[0]["Service"]["Service"], "redis");
    assert_eq!(all[0]["Node"]["Node"], "db1");
    assert_eq!(all[0]["Checks"][1]["ServiceTags"], json!(["primary", "v7"]));
    let passing = get(&f, "/v1/health/service/redis?passing").await.json();
    assert_eq!(passing.as_array().map(Vec::len), Some(1));
    assert_eq!(passing[0]["Node"]["Node"], "db1");
    let tagged = get(&f, "/v1/health/service/redis?passing&tag=replica")
        .await
        .json();
    assert_eq!(tagged, json!([]));

    // A critical node check (a failed agent) takes all of the node's instances out.
    register(&f, json!({"Node": "db1", "SkipNodeUpdate": true, "Check": {"CheckID": "serfHealth", "Status": "critical"}})).await;
    assert_eq!(
        get(&f, "/v1/health/service/redis?passing").await.json(),
        json!([])
    );
    assert_eq!(
        get(&f, "/v1/health/service/web?passing").await.json(),
        json!([])
    );

    let svc_checks = get(&f, "/v1/health/checks/redis").await.json();
    assert_eq!(svc_checks.as_array().map(Vec::len), Some(2));
    assert!(svc_checks
        .as_array()
        .into_iter()
        .flatten()
        .all(|c| c["ServiceName"] == "redis"));
    let critical = get(&f, "/v1/health/state/critical").await.json();
    let ids: Vec<(&str, &str)> = critical
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["Node"].as_str().unwrap_or(""),
                c["CheckID"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(ids, [("db1", "serfHealth"), ("db2", "service:redis1")]);
    assert_eq!(
        get(&f, "/v1/health/state/any")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    // No check is in an unknown state: Consul answers an empty list.
    let bogus = get(&f, "/v1/health/state/bogus").await;
    assert_eq!((bogus.status, bogus.json()), (StatusCode::OK, json!([])));
    let node = get(&f, "/v1/health/node/db2").await.json();
    assert_eq!(node.as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn deregister_service_check_and_node() {
    let f = fixture().await;
    seed(&f).await;
    let r = call(
        &f,
        "PUT",
        "/v1/catalog/deregister",
        json!({"Node": "db2", "ServiceID": "redis1"}).to_string(),
    )
    .await;
    assert_eq!(r.text(), "true");
    assert_eq!(
        get(&f, "/v1/catalog/service/redis")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let checks = get(&f, "/v1/health/node/db2").await.json();
    assert_eq!(
        checks.as_array().map(Vec::len),
        Some(1),
        "the service's checks went with it"
    );
    call(
        &f,
        "PUT",
        "/v1/catalog/deregister",
        json!({"Node": "db2", "CheckID": "serfHealth"}).to_string(),
    )
    .await;
    assert_eq!(get(&f, "/v1/health/node/db2").await.json(), json!([]));
    call(
        &f,
        "PUT",
        "/v1/catalog/deregister",
        json!({"Node": "db1"}).to_string(),
    )
    .await;
    assert_eq!(get(&f, "/v1/catalog/node/db1").await.json(), json!(null));
    assert_eq!(get(&f, "/v1/catalog/services").await.json(), json!({}));
}

#[tokio::test]
async fn bad_registrations_are_refused_and_apply_nothing() {
    let f = fixture().await;
    let cases = [
        ("{not json", "Request decode failed"),
        // Consul answers these two with 500 (the error of the RPC it forwards to).
        (r#"{"Address": "10.0.0.1"}"#, "Must provide node"),
        (
            r#"{"Node": "n"}"#,
            "Must provide address if SkipNodeUpdate is not set",
        ),
        (
            r#"{"Node": "n", "Address": "a", "Service": {"Port": 1}}"#,
            "Must provide service name",
        ),
        (
            r#"{"Node": "n", "Address": "a", "Service": {"Service": "s", "Port": "eighty"}}"#,
            "Request decode failed",
        ),
        (
            r#"{"Node": "n", "Address": "a", "Check": {"CheckID": "c", "Status": "fine"}}"#,
            "Invalid check status \"fine\"",
        ),
        (
            r#"{"Node": "n", "Address": "a", "Check": {"CheckID": "c", "ServiceID": "ghost"}}"#,
            "A check refers to a service the node does not have",
        ),
    ];
    for (body, want) in cases {
        let r = call(&f, "PUT", "/v1/catalog/register", body).await;
        let want_status =
            if want.starts_with("Must provide node") || want.starts_with("Must provide address") {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::BAD_REQUEST
            };
        assert_eq!(r.status, want_status, "{body}");
        assert!(r.text().starts_with(want), "{body}: {}", r.text());
        assert!(!r.text().contains('\n'), "one line: {}", r.text());
    }
    assert_eq!(
        get(&f, "/v1/catalog/nodes").await.json(),
        json!([]),
        "nothing was applied"
    );
    let r = call(&f, "GET", "/v1/catalog/register", Body::empty()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = register(
        &f,
        json!({"Node": "n", "Address": "a", "Datacenter": "dc9"}),
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter")
    );
}

#[tokio::test]
async fn cached_large_replies_follow_every_change() {
    let f = fixture().await;
    // Enough instances for the reply to be cached (over 8 KB).
    for i in 0..60 {
        let r = register(&f, json!({"Node": format!("n{i:02}"), "Address": format!("10.0.0.{i}"),
            "Service": {"Service": "big", "Port": 80}, "Check": {"CheckID": "c", "ServiceID": "big", "Status": "passing"}})).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let first = get(&f, "/v1/health/service/big?passing").await;
    assert!(
        first.body.len() > 8 * 1024,
        "reply big enough to be cached: {}",
        first.body.len()
    );
    assert_eq!(first.json().as_array().map(Vec::len), Some(60));
    let again = get(&f, "/v1/health/service/big?passing").await;
    assert_eq!(again.index(), first.index());
    assert_eq!(again.body, first.body);
    // A node-level check going critical changes the answer at once.
    register(&f, json!({"Node": "n07", "SkipNodeUpdate": true, "Check": {"CheckID": "serfHealth", "Status": "critical"}})).await;
    let after = get(&f, "/v1/health/service/big?passing").await;
    assert!(after.index() > first.index());
    assert_eq!(after.json().as_array().map(Vec::len), Some(59));
    // Different parameters are different cache entries.
    assert_eq!(
        get(&f, "/v1/health/service/big")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(60)
    );
    let svc = get(&f, "/v1/catalog/service/big").await;
    assert_eq!(svc.json().as_array().map(Vec::len), Some(60));
    call(
        &f,
        "PUT",
        "/v1/catalog/deregister",
        json!({"Node": "n00"}).to_string(),
    )
    .await;
    assert_eq!(
        get(&f, "/v1/catalog/service/big")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(59)
    );
}

#[tokio::test]
async fn field_names_match_in_any_case_as_consuls_decoder_does() {
    let f = fixture().await;
    let r = register(
        &f,
        json!({"node": "low", "ADDRESS": "10.0.0.9", "nodemeta": {"Rack": "r1"},
        "service": {"service": "web", "port": 80, "meta": {"Version": "2"}},
        "check": {"checkid": "web-up", "serviceid": "web", "status": "passing"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = get(&f, "/v1/catalog/service/web").await.json();
    assert_eq!(s[0]["Node"], "low");
    assert_eq!(s[0]["Address"], "10.0.0.9");
    assert_eq!(s[0]["ServicePort"], 80);
    // Keys of user maps are data: kept exactly as sent.
    assert_eq!(s[0]["NodeMeta"], json!({"Rack": "r1"}));
    assert_eq!(s[0]["ServiceMeta"], json!({"Version": "2"}));
    let h = get(&f, "/v1/health/checks/web").await.json();
    assert_eq!(h[0]["CheckID"], "web-up");

    let r = call(
        &f,
        "PUT",
        "/v1/session/create",
        json!({"node": "low", "name": "lower", "checks": [], "ttl": "30s"}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let id = r.json()["ID"].as_str().expect("id").to_string();
    let info = get(&f, &format!("/v1/session/info/{id}")).await.json();
    assert_eq!(info[0]["Name"], "lower");
    assert_eq!(info[0]["TTL"], "30s");
}
