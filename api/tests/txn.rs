//! `/v1/txn`: all or nothing, Consul's reply shapes and status codes.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn a_failing_operation_rolls_back_every_operation() {
    let f = fixture().await;
    call(&f, "PUT", "/v1/kv/existing", "old").await;
    let ops = json!([
        {"KV": {"Verb": "set", "Key": "new/a", "Value": b64("A")}},
        {"KV": {"Verb": "delete", "Key": "existing"}},
        {"Node": {"Verb": "set", "Node": {"Node": "t1", "Address": "10.1.1.1"}}},
        {"KV": {"Verb": "check-not-exists", "Key": "new/a"}},
    ]);
    let r = call(&f, "PUT", "/v1/txn", ops.to_string()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let v = r.json();
    assert_eq!(v["Results"], serde_json::Value::Null);
    assert_eq!(
        v["Errors"],
        json!([{"OpIndex": 3, "What": "key \"new/a\" exists"}])
    );
    assert_eq!(
        get(&f, "/v1/kv/new/a").await.status,
        StatusCode::NOT_FOUND,
        "set rolled back"
    );
    assert_eq!(
        get(&f, "/v1/kv/existing?raw").await.body,
        b"old",
        "delete rolled back"
    );
    assert_eq!(
        get(&f, "/v1/catalog/node/t1").await.json(),
        serde_json::Value::Null,
        "node rolled back"
    );
}

#[tokio::test]
async fn successful_transaction_applies_everything_and_reports_results() {
    let f = fixture().await;
    call(&f, "PUT", "/v1/kv/cfg/a", "1").await;
    let idx = get(&f, "/v1/kv/cfg/a").await.json()[0]["ModifyIndex"]
        .as_u64()
        .expect("idx");
    let ops = json!([
        {"KV": {"Verb": "cas", "Key": "cfg/a", "Value": b64("2"), "Index": idx}},
        {"KV": {"Verb": "set", "Key": "cfg/b", "Value": b64("3"), "Flags": 7}},
        {"KV": {"Verb": "get", "Key": "cfg/b"}},
        {"KV": {"Verb": "get-tree", "Key": "cfg/"}},
        {"Node": {"Verb": "set", "Node": {"Node": "t1", "Address": "10.1.1.1"}}},
        {"Service": {"Verb": "set", "Node": "t1", "Service": {"Service": "api", "Port": 9000}}},
        {"Check": {"Verb": "set", "Check": {"Node": "t1", "CheckID": "api-up", "Status": "passing", "ServiceID": "api"}}},
    ]);
    let r = call(&f, "PUT", "/v1/txn", ops.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["Errors"], serde_json::Value::Null);
    let results = v["Results"].as_array().expect("results");
    assert_eq!(results[0]["KV"]["Key"], "cfg/a");
    assert_eq!(
        results[0]["KV"]["Value"],
        serde_json::Value::Null,
        "writes report no value"
    );
    assert_eq!(results[2]["KV"]["Value"], b64("3"));
    assert_eq!(results[2]["KV"]["Flags"], 7);
    let tree: Vec<&str> = results[3..5]
        .iter()
        .filter_map(|r| r["KV"]["Key"].as_str())
        .collect();
    assert_eq!(
        tree,
        ["cfg/a", "cfg/b"],
        "get-tree sees the transaction's own writes"
    );
    assert_eq!(results[5]["Node"]["Node"], "t1");
    assert_eq!(get(&f, "/v1/kv/cfg/a?raw").await.body, b"2");
    let h = get(&f, "/v1/health/service/api?passing").await.json();
    assert_eq!(h[0]["Node"]["Address"], "10.1.1.1");
}

#[tokio::test]
async fn bad_transactions_are_refused() {
    let f = fixture().await;
    let r = call(
        &f,
        "PUT",
        "/v1/txn",
        json!([{"KV": {"Verb": "frobnicate", "Key": "k"}}]).to_string(),
    )
    .await;
    // As in Consul: a conflict naming the operation, answered as a read (no write in it).
    assert_eq!(r.status, StatusCode::CONFLICT);
    let v = r.json();
    assert_eq!(
        v["Errors"],
        json!([{"OpIndex": 0, "What": "unknown KV verb \"frobnicate\""}])
    );
    assert_eq!(
        (&v["Results"], &v["KnownLeader"]),
        (&json!(null), &json!(true))
    );
    let r = call(
        &f,
        "PUT",
        "/v1/txn",
        json!([{"KV": {"Verb": "set", "Key": "k", "Value": "%%%"}}]).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &f,
        "PUT",
        "/v1/txn",
        json!([{"KV": {"Verb": "set"}}]).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.json()["Errors"],
        json!([{"OpIndex": 0, "What": "Missing key for KV operation"}])
    );
    let many: Vec<_> = (0..129)
        .map(|i| json!({"KV": {"Verb": "set", "Key": format!("k{i}")}}))
        .collect();
    let r = call(
        &f,
        "PUT",
        "/v1/txn",
        serde_json::Value::Array(many).to_string(),
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Transaction contains too many operations (129 > 128)"
        )
    );
    let r = call(&f, "PUT", "/v1/txn", "{}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        get(&f, "/v1/kv/?keys").await.status,
        StatusCode::NOT_FOUND,
        "nothing applied"
    );
}

#[tokio::test]
async fn catalog_cas_verbs_check_the_modify_index() {
    let f = fixture().await;
    let ops = json!([{"Node": {"Verb": "cas", "Node": {"Node": "c1", "Address": "10.0.0.1", "ModifyIndex": 0}}},
        {"Service": {"Verb": "set", "Node": "c1", "Service": {"Service": "api", "Port": 1}}}]);
    let r = call(&f, "PUT", "/v1/txn", ops.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "cas with 0 creates: {}", r.text());
    let node_idx = get(&f, "/v1/catalog/node/c1").await.json()["Node"]["ModifyIndex"]
        .as_u64()
        .expect("idx");
    let svc_idx = get(&f, "/v1/catalog/node/c1").await.json()["Services"]["api"]["ModifyIndex"]
        .as_u64()
        .expect("idx");
    // A stale index fails the whole transaction.
    let stale = json!([{"Node": {"Verb": "cas", "Node": {"Node": "c1", "Address": "10.0.0.2", "ModifyIndex": node_idx + 7}}},
        {"KV": {"Verb": "set", "Key": "side-effect", "Value": b64("x")}}]);
    let r = call(&f, "PUT", "/v1/txn", stale.to_string()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["Errors"][0]["OpIndex"], 0);
    assert_eq!(
        get(&f, "/v1/kv/side-effect").await.status,
        StatusCode::NOT_FOUND
    );
    let ok = json!([{"Node": {"Verb": "cas", "Node": {"Node": "c1", "Address": "10.0.0.2", "ModifyIndex": node_idx}}}]);
    assert_eq!(
        call(&f, "PUT", "/v1/txn", ok.to_string()).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&f, "/v1/catalog/node/c1").await.json()["Node"]["Address"],
        "10.0.0.2"
    );
    let del = json!([{"Service": {"Verb": "delete-cas", "Node": "c1", "Service": {"ID": "api", "Service": "api", "ModifyIndex": svc_idx}}}]);
    let r = call(&f, "PUT", "/v1/txn", del.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(get(&f, "/v1/catalog/service/api").await.json(), json!([]));
    let r = call(
        &f,
        "PUT",
        "/v1/txn",
        json!([{"Node": {"Verb": "cas", "Node": {"Node": "c1", "Address": "a"}}}]).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "cas without ModifyIndex");
}

#[tokio::test]
async fn a_transaction_of_reads_is_answered_as_a_read_and_a_write_carries_no_index() {
    let f = fixture().await;
    let ops = json!([{"KV": {"Verb": "set", "Key": "r/a", "Value": b64("A")}}]);
    let r = call(&f, "PUT", "/v1/txn", ops.to_string()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.headers.contains_key("x-consul-index"), "{:?}", r.headers);
    assert!(r.json().get("KnownLeader").is_none(), "{}", r.text());

    let ops = json!([{"KV": {"Verb": "get", "Key": "r/a"}}]);
    let r = call(&f, "PUT", "/v1/txn", ops.to_string()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.headers.contains_key("x-consul-index"), "{:?}", r.headers);
    assert_eq!(r.headers["x-consul-knownleader"], "true");
    let v = r.json();
    assert_eq!(v["Results"][0]["KV"]["Value"], b64("A"));
    assert_eq!(
        (&v["KnownLeader"], &v["ConsistencyLevel"], &v["NotModified"]),
        (&json!(true), &json!(""), &json!(false))
    );
    assert!(v["Index"].as_u64().is_some_and(|i| i > 0), "{v}");
}
