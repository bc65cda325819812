//! The KV endpoints through `router(state).oneshot(..)`, over a real single-node
//! Raft server with redb files in a temp dir.

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use common::*;

#[tokio::test]
async fn put_then_get_has_consuls_shape_and_headers() {
    let f = fixture().await;
    let w = call(&f, "PUT", "/v1/kv/web/config?flags=42", "v1").await;
    assert_eq!((w.status, w.text().as_str()), (StatusCode::OK, "true"));
    let raw = get(&f, "/v1/kv/web/config?raw").await;
    assert_eq!(raw.body, b"v1");
    assert_eq!(raw.headers["content-type"], "text/plain");
    let r = get(&f, "/v1/kv/web/config").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let e = &v[0];
    let mut keys: Vec<&str> = e
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "CreateIndex",
            "Flags",
            "Key",
            "LockIndex",
            "ModifyIndex",
            "Value"
        ]
    );
    assert_eq!(e["Key"], "web/config");
    assert_eq!(e["Flags"], 42);
    assert_eq!(e["Value"], "djE=");
    assert_eq!(e["LockIndex"], 0);
    assert!(e["CreateIndex"].as_u64().is_some_and(|i| i > 0));
    assert_eq!(r.index(), e["ModifyIndex"].as_u64().expect("index"));
    assert_eq!(r.headers["x-consul-knownleader"], "true");
    assert_eq!(r.headers["x-consul-lastcontact"], "0");
    // Consul 1.10 reports the effective consistency on catalog and health reads only.
    assert!(r.headers.get("x-consul-effective-consistency").is_none());
    assert_eq!(r.headers["content-type"], "application/json");

    let raw = get(&f, "/v1/kv/web/config?raw").await;
    assert_eq!(raw.body, b"v1");
    let stale = get(&f, "/v1/kv/web/config?stale").await;
    assert_eq!(stale.json(), v);
    let cons = get(&f, "/v1/kv/web/config?consistent").await;
    assert_eq!(cons.json(), v);
    // The modes are still reported where Consul reports them: catalog and health reads.
    let nodes = get(&f, "/v1/catalog/nodes?consistent").await;
    assert_eq!(
        nodes.headers["x-consul-effective-consistency"],
        "consistent"
    );
    let pretty = get(&f, "/v1/kv/web/config?pretty").await;
    assert!(
        pretty.text().starts_with("[\n  {\n    \""),
        "{}",
        pretty.text()
    );

    // An empty value is null, as Consul.
    call(&f, "PUT", "/v1/kv/empty", Body::empty()).await;
    assert_eq!(
        get(&f, "/v1/kv/empty").await.json()[0]["Value"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn missing_keys_recurse_keys_and_delete() {
    let f = fixture().await;
    let miss = get(&f, "/v1/kv/nope").await;
    assert_eq!(miss.status, StatusCode::NOT_FOUND);
    assert!(miss.index() >= 1, "404 still carries X-Consul-Index");
    for k in ["app/a", "app/b/c", "app/b/d", "other"] {
        let w = call(&f, "PUT", &format!("/v1/kv/{k}"), k.to_string()).await;
        assert_eq!(w.status, StatusCode::OK);
    }
    let r = get(&f, "/v1/kv/app/?recurse").await;
    let list = r.json();
    let list = list.as_array().expect("list");
    let keys: Vec<&str> = list.iter().filter_map(|e| e["Key"].as_str()).collect();
    assert_eq!(keys, ["app/a", "app/b/c", "app/b/d"]);
    let max = list.iter().filter_map(|e| e["ModifyIndex"].as_u64()).max();
    assert_eq!(
        Some(r.index()),
        max,
        "recurse index is the highest ModifyIndex under the prefix"
    );
    let k = get(&f, "/v1/kv/app/?keys&separator=/").await;
    assert_eq!(k.json(), serde_json::json!(["app/a", "app/b/"]));
    let k = get(&f, "/v1/kv/?keys").await;
    assert_eq!(
        k.json(),
        serde_json::json!(["app/a", "app/b/c", "app/b/d", "other"])
    );
    assert_eq!(
        get(&f, "/v1/kv/zzz/?recurse").await.status,
        StatusCode::NOT_FOUND
    );

    let d = call(&f, "DELETE", "/v1/kv/app/b?recurse", Body::empty()).await;
    assert_eq!(d.text(), "true");
    let k = get(&f, "/v1/kv/?keys").await;
    assert_eq!(k.json(), serde_json::json!(["app/a", "other"]));
    assert_eq!(
        call(&f, "DELETE", "/v1/kv/other", Body::empty())
            .await
            .text(),
        "true"
    );
    assert_eq!(get(&f, "/v1/kv/other").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cas_writes_and_deletes() {
    let f = fixture().await;
    assert_eq!(
        call(&f, "PUT", "/v1/kv/lock?cas=0", "a").await.text(),
        "true"
    );
    let again = call(&f, "PUT", "/v1/kv/lock?cas=0", "b").await;
    assert_eq!(again.text(), "false", "cas=0 creates only");
    let idx = get(&f, "/v1/kv/lock").await.json()[0]["ModifyIndex"]
        .as_u64()
        .expect("idx");
    let stale = call(&f, "PUT", &format!("/v1/kv/lock?cas={}", idx + 100), "c").await;
    assert_eq!(stale.text(), "false");
    assert_eq!(
        call(&f, "PUT", &format!("/v1/kv/lock?cas={idx}"), "d")
            .await
            .text(),
        "true"
    );
    assert_eq!(get(&f, "/v1/kv/lock?raw").await.body, b"d");
    let del = call(
        &f,
        "DELETE",
        &format!("/v1/kv/lock?cas={idx}"),
        Body::empty(),
    )
    .await;
    assert_eq!(del.text(), "false", "the key moved on since {idx}");
    let idx = get(&f, "/v1/kv/lock").await.json()[0]["ModifyIndex"]
        .as_u64()
        .expect("idx");
    let del = call(
        &f,
        "DELETE",
        &format!("/v1/kv/lock?cas={idx}"),
        Body::empty(),
    )
    .await;
    assert_eq!(del.text(), "true");
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_applied() {
    let f = fixture().await;
    let big = vec![b'x'; 512 * 1024 + 1];
    let r = call(&f, "PUT", "/v1/kv/big", big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.text(),
        "Value exceeds 524288 byte limit (524289 bytes given)"
    );
    assert_eq!(get(&f, "/v1/kv/big").await.status, StatusCode::NOT_FOUND);
    let r = call(&f, "PUT", "/v1/kv/big", vec![b'x'; 512 * 1024]).await;
    assert_eq!(r.status, StatusCode::OK, "exactly 512 KiB is accepted");

    let r = call(&f, "PUT", "/v1/kv/x?flags=abc", "v").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.text(), "Invalid flags value \"abc\": not a number");
    let r = call(&f, "PUT", "/v1/kv/x?cas=-1", "v").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        get(&f, "/v1/kv/x").await.status,
        StatusCode::NOT_FOUND,
        "nothing applied"
    );
    let r = call(&f, "PUT", "/v1/kv/", "v").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::BAD_REQUEST, "Missing key name")
    );
    let r = get(&f, "/v1/kv/x?stale&consistent").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(&f, "POST", "/v1/kv/x", "v").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = get(&f, "/v1/kv/x?dc=dc2").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.text(), "No path to datacenter");
    let r = call(&f, "PUT", "/v1/kv/x?dc=dc1", "v").await;
    assert_eq!(r.status, StatusCode::OK, "own datacenter accepted");
}
