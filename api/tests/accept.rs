//! Request bodies as Consul's clients send them: `null` for optional fields, field names in
//! any case, every field of Consul 1.10's structures (the Connect-only ones kept and
//! returned), and decode errors in Go's words.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

async fn put(f: &Fixture, path: &str, body: Value) -> Reply {
    call(f, "PUT", path, body.to_string()).await
}

/// `Catalog().Register` from Consul's Go `api` package, as it encodes a registration that
/// sets only a node, a service and a check: every other field as its zero value or `null`.
#[tokio::test]
async fn the_go_clients_catalog_registration_is_accepted() {
    let f = fixture().await;
    let go = json!({
        "ID": "", "Node": "n1", "Address": "10.0.0.1", "TaggedAddresses": null, "NodeMeta": null,
        "Datacenter": "",
        "Service": {"ID": "web1", "Service": "web", "Tags": null, "Meta": null, "Port": 80,
            "Address": "", "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false,
            "CreateIndex": 0, "ModifyIndex": 0},
        "Check": {"Node": "n1", "CheckID": "web-alive", "Name": "web alive", "Status": "passing",
            "Notes": "", "Output": "", "ServiceID": "web1", "ServiceName": "web",
            "ServiceTags": null, "Type": "",
            "Definition": {"Interval": "0s", "Timeout": "0s", "DeregisterCriticalServiceAfter": "0s",
                "HTTP": "", "Header": null, "Method": "", "Body": "", "TLSServerName": "",
                "TLSSkipVerify": false, "TCP": ""},
            "CreateIndex": 0, "ModifyIndex": 0},
        "Checks": null, "SkipNodeUpdate": false
    });
    let r = put(&f, "/v1/catalog/register", go).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "true"));
    let h = get(&f, "/v1/health/service/web").await.json();
    assert_eq!(h[0]["Service"]["ID"], "web1");
    assert_eq!(h[0]["Checks"][0]["CheckID"], "web-alive");
    assert_eq!(h[0]["Checks"][0]["ServiceID"], "web1");
}

#[tokio::test]
async fn null_is_accepted_for_every_optional_field() {
    let f = fixture().await;
    let r = put(
        &f,
        "/v1/catalog/register",
        json!({"Node": "n1", "Address": "10.0.0.1", "ID": null, "Datacenter": null,
            "TaggedAddresses": null, "NodeMeta": null, "SkipNodeUpdate": null, "Token": null,
            "Service": {"Service": "web", "ID": null, "Tags": null, "Address": null, "Meta": null,
                "Port": null, "Weights": {"Passing": null, "Warning": null},
                "EnableTagOverride": null, "Kind": null, "Proxy": null, "Connect": null,
                "TaggedAddresses": null, "SocketPath": null, "Namespace": null},
            "Check": {"CheckID": "serfHealth", "Status": "passing", "Name": null, "Notes": null,
                "ServiceID": null, "Output": null, "Definition": null, "Interval": null},
            "Checks": null}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = get(&f, "/v1/catalog/service/web").await.json();
    assert_eq!(
        (
            &s[0]["ServiceID"],
            &s[0]["ServicePort"],
            &s[0]["ServiceWeights"]
        ),
        (
            &json!("web"),
            &json!(0),
            &json!({"Passing": 1, "Warning": 1})
        )
    );
    // A null Proxy is no proxy: Consul's empty one, as on every catalog service.
    assert_eq!(
        s[0]["ServiceProxy"],
        json!({"Mode": "", "MeshGateway": {}, "Expose": {}}),
        "{s}"
    );

    let r = put(
        &f,
        "/v1/session/create",
        json!({"Name": null, "Node": null, "Checks": null, "NodeChecks": null,
            "ServiceChecks": null, "LockDelay": null, "Behavior": null, "TTL": null, "ID": null}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let r = put(
        &f,
        "/v1/txn",
        json!([{"KV": {"Verb": "set", "Key": "k", "Value": null, "Flags": null, "Index": null,
            "Session": null, "Namespace": null}, "Node": null, "Service": null, "Check": null}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let r = put(
        &f,
        "/v1/catalog/deregister",
        json!({"Node": "n1", "ServiceID": "web", "CheckID": null, "Datacenter": null}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(get(&f, "/v1/catalog/service/web").await.json(), json!([]));
}

/// Go's decoder matches a field name in any case (`serviceid` fills `ServiceID`); the catalog
/// takes no snake_case, so `node_meta` is an unknown field there, as in Consul.
#[tokio::test]
async fn field_names_match_in_any_case() {
    let f = fixture().await;
    let r = put(
        &f,
        "/v1/catalog/register",
        json!({"node": "ext2", "ADDRESS": "10.1.0.2", "nodemeta": {"Env": "dev"},
            "service": {"service": "web", "id": "web-ext2", "port": 80, "tags": ["canary"]},
            "check": {"name": "ext2 web", "status": "critical", "serviceid": "web-ext2",
                "checkid": "web-ext2-check"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let c = get(&f, "/v1/health/checks/web").await.json();
    assert_eq!(
        (&c[0]["CheckID"], &c[0]["ServiceID"]),
        (&json!("web-ext2-check"), &json!("web-ext2"))
    );
    let n = get(&f, "/v1/catalog/node/ext2").await.json();
    assert_eq!(
        n["Node"]["Meta"],
        json!({"Env": "dev"}),
        "map keys stay as sent"
    );

    let r = put(
        &f,
        "/v1/catalog/register",
        json!({"node": "ext2", "address": "10.1.0.2", "node_meta": {"env": "dev"}}),
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            StatusCode::BAD_REQUEST,
            r#"Request decode failed: json: unknown field "node_meta""#
        )
    );
}

/// Every field of Consul's `NodeService` and `HealthCheck` is taken; `Kind`, `Proxy` and
/// `Connect` are kept and returned on every service object, apart from `Meta`.
#[tokio::test]
async fn connect_fields_are_kept_and_returned() {
    let f = fixture().await;
    let proxy = json!({"DestinationServiceName": "web", "LocalServicePort": 8080,
        "Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}]});
    let r = put(
        &f,
        "/v1/catalog/register",
        json!({"Node": "n1", "Address": "10.0.0.1", "Namespace": "default", "Token": "",
            "Service": {"ID": "web-proxy", "Service": "web-sidecar-proxy", "Kind": "connect-proxy",
                "Port": 21000, "Proxy": proxy, "Connect": {"Native": false},
                "TaggedAddresses": {"wan": {"address": "198.51.100.1", "port": 21000}},
                "SocketPath": "", "Meta": {"v": "1"}, "Namespace": "default", "Partition": "",
                "CreateIndex": 0},
            "Checks": [{"CheckID": "proxy-alive", "Status": "passing", "ServiceID": "web-proxy",
                "Type": "tcp", "Interval": "10s", "Timeout": "1s", "ExposedPort": 0,
                "ServiceTags": [], "ServiceName": "web-sidecar-proxy",
                "Definition": {"TCP": "127.0.0.1:21000"}}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let s = get(&f, "/v1/catalog/service/web-sidecar-proxy")
        .await
        .json();
    assert_eq!(s[0]["ServiceKind"], "connect-proxy");
    assert_eq!(s[0]["ServiceProxy"], proxy);
    assert_eq!(s[0]["ServiceConnect"], json!({"Native": false}));
    assert_eq!(s[0]["ServiceMeta"], json!({"v": "1"}));

    let h = get(&f, "/v1/health/service/web-sidecar-proxy").await.json();
    let svc = &h[0]["Service"];
    assert_eq!(
        (&svc["Kind"], &svc["Proxy"], &svc["Connect"], &svc["Meta"]),
        (
            &json!("connect-proxy"),
            &proxy,
            &json!({"Native": false}),
            &json!({"v": "1"})
        )
    );
    let n = get(&f, "/v1/catalog/node/n1").await.json();
    assert_eq!(n["Services"]["web-proxy"]["Kind"], "connect-proxy");
    assert_eq!(n["Services"]["web-proxy"]["Meta"], json!({"v": "1"}));

    // The key that keeps them is not the client's to set.
    let r = put(
        &f,
        "/v1/catalog/register",
        json!({"Node": "n1", "Address": "10.0.0.1",
            "Service": {"Service": "x", "Meta": {"consul-muster-extra": "{}"}}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("reserved for internal use"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn decode_errors_read_as_go_writes_them() {
    let f = fixture().await;
    for (path, body, want) in [
        (
            "/v1/catalog/register",
            "{nope",
            "Request decode failed: invalid character 'n' looking for beginning of object key \
             string",
        ),
        (
            "/v1/catalog/deregister",
            "[",
            "Request decode failed: unexpected EOF",
        ),
        (
            "/v1/session/create",
            r#"{"Name": "#,
            "Request decode failed: unexpected EOF",
        ),
        (
            "/v1/catalog/register",
            r#"{"Node": "n9", "Address": "10.1.0.9", "Bogus": true}"#,
            r#"Request decode failed: json: unknown field "Bogus""#,
        ),
        (
            "/v1/catalog/register",
            r#"{"Node": "n9", "Address": "10.1.0.9", "Service": {"Service": "x", "Bogus": null}}"#,
            r#"Request decode failed: json: unknown field "Bogus""#,
        ),
    ] {
        let r = call(&f, "PUT", path, body).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (StatusCode::BAD_REQUEST, want),
            "{path} {body}"
        );
    }
    // Sessions ignore a field they do not know, as Consul's decoder there does.
    let r = put(&f, "/v1/session/create", json!({"Name": "x", "Bogus": 1})).await;
    assert_ne!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
}
