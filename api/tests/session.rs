//! Sessions and locks: create, acquire/release, invalidation by destroy, check and TTL,
//! release vs delete behavior, lock-delay.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use common::*;
use serde_json::json;

async fn node_with_serf(f: &Fixture, status: &str) {
    let r = call(
        f,
        "PUT",
        "/v1/catalog/register",
        json!({"Node": "n1", "Address": "10.0.0.1",
        "Check": {"CheckID": "serfHealth", "Status": status}})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn create(f: &Fixture, body: serde_json::Value) -> String {
    let r = call(f, "PUT", "/v1/session/create", body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["ID"].as_str().expect("ID").to_string()
}

async fn lock_holder(f: &Fixture, key: &str) -> Option<String> {
    get(f, &format!("/v1/kv/{key}")).await.json()[0]["Session"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn sessions_take_and_release_locks() {
    let f = fixture().await;
    node_with_serf(&f, "passing").await;
    let a = create(&f, json!({"Name": "a", "LockDelay": "1s"})).await;
    let b = create(&f, json!({})).await;
    let info = get(&f, &format!("/v1/session/info/{a}")).await.json();
    assert_eq!(info[0]["ID"], a.as_str());
    assert_eq!(info[0]["Node"], "n1", "defaults to the agent's node");
    assert_eq!(info[0]["LockDelay"], 1_000_000_000u64);
    assert_eq!(info[0]["Behavior"], "release");
    assert_eq!(info[0]["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(
        info[0]["ServiceChecks"],
        json!(null),
        "none: null, as Consul's"
    );
    let b_info = get(&f, &format!("/v1/session/info/{b}")).await.json();
    assert_eq!(
        b_info[0]["LockDelay"], 15_000_000_000u64,
        "Consul's default lock delay"
    );
    assert_eq!(
        get(&f, "/v1/session/list")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        get(&f, "/v1/session/node/n1")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    assert_eq!(
        call(&f, "PUT", &format!("/v1/kv/leader?acquire={a}"), "a")
            .await
            .text(),
        "true"
    );
    let e = get(&f, "/v1/kv/leader").await.json();
    assert_eq!(
        (e[0]["Session"].as_str(), e[0]["LockIndex"].as_u64()),
        (Some(a.as_str()), Some(1))
    );
    assert_eq!(
        call(&f, "PUT", &format!("/v1/kv/leader?acquire={b}"), "b")
            .await
            .text(),
        "false"
    );
    assert_eq!(
        call(&f, "PUT", &format!("/v1/kv/leader?release={b}"), "")
            .await
            .text(),
        "false"
    );
    assert_eq!(
        call(&f, "PUT", &format!("/v1/kv/leader?release={a}"), "a")
            .await
            .text(),
        "true"
    );
    assert_eq!(lock_holder(&f, "leader").await, None);
    assert_eq!(
        call(&f, "PUT", &format!("/v1/kv/leader?acquire={b}"), "b")
            .await
            .text(),
        "true"
    );
    assert_eq!(get(&f, "/v1/kv/leader").await.json()[0]["LockIndex"], 2);

    // Destroying the holder frees the lock; its lock delay holds others off for 1 s.
    assert_eq!(
        call(&f, "PUT", &format!("/v1/kv/held?acquire={a}"), "x")
            .await
            .text(),
        "true"
    );
    assert_eq!(
        call(
            &f,
            "PUT",
            &format!("/v1/session/destroy/{a}"),
            Body::empty()
        )
        .await
        .text(),
        "true"
    );
    assert_eq!(lock_holder(&f, "held").await, None);
    let c = create(&f, json!({})).await;
    let t = Instant::now();
    assert_eq!(
        call(&f, "PUT", &format!("/v1/kv/held?acquire={c}"), "c")
            .await
            .text(),
        "false",
        "lock delay"
    );
    loop {
        if call(&f, "PUT", &format!("/v1/kv/held?acquire={c}"), "c")
            .await
            .text()
            == "true"
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "lock delay never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "lock delay too short: {:?}",
        t.elapsed()
    );
    let r = call(&f, "PUT", "/v1/kv/x?acquire=not-a-session", "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // An unknown session: see `bad_session_requests`.
}

#[tokio::test]
async fn delete_behavior_and_critical_checks_invalidate() {
    let f = fixture().await;
    node_with_serf(&f, "passing").await;
    let d = create(&f, json!({"Behavior": "delete", "LockDelay": "0s"})).await;
    let r = create(&f, json!({"LockDelay": 0})).await;
    call(&f, "PUT", &format!("/v1/kv/ephemeral?acquire={d}"), "x").await;
    call(&f, "PUT", &format!("/v1/kv/kept?acquire={r}"), "y").await;
    call(
        &f,
        "PUT",
        &format!("/v1/session/destroy/{d}"),
        Body::empty(),
    )
    .await;
    assert_eq!(
        get(&f, "/v1/kv/ephemeral").await.status,
        StatusCode::NOT_FOUND,
        "Behavior=delete deletes"
    );
    // serfHealth going critical invalidates the other session: the lock is released, key kept.
    node_with_serf(&f, "critical").await;
    assert_eq!(
        get(&f, &format!("/v1/session/info/{r}")).await.json(),
        json!([])
    );
    assert_eq!(lock_holder(&f, "kept").await, None);
    assert_eq!(get(&f, "/v1/kv/kept?raw").await.body, b"y");
    // No session while the check is critical.
    let res = call(&f, "PUT", "/v1/session/create", "{}").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn bad_session_requests() {
    let f = fixture().await;
    node_with_serf(&f, "passing").await;
    let r = call(
        &f,
        "PUT",
        "/v1/session/create",
        json!({"TTL": "5s"}).to_string(),
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            StatusCode::BAD_REQUEST,
            "Invalid Session TTL '5s', must be between [10s=24h0m0s]"
        )
    );
    let r = call(
        &f,
        "PUT",
        "/v1/session/create",
        json!({"Behavior": "explode"}).to_string(),
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            StatusCode::BAD_REQUEST,
            "Invalid Behavior setting 'explode'"
        )
    );
    let r = call(
        &f,
        "PUT",
        "/v1/session/create",
        json!({"Node": "ghost"}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        get(&f, "/v1/session/list").await.json(),
        json!([]),
        "nothing created"
    );
    let r = call(
        &f,
        "PUT",
        "/v1/session/renew/00000000-0000-4000-8000-000000000000",
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for (method, uri, want) in [
        ("GET", "/v1/session/info/", "Missing session"),
        ("PUT", "/v1/session/renew/", "Missing session"),
        ("PUT", "/v1/session/destroy/", "Missing session"),
        ("GET", "/v1/session/node/", "Missing node name"),
    ] {
        let r = call(&f, method, uri, Body::empty()).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (StatusCode::BAD_REQUEST, want)
        );
    }
    // Acquiring with a session that does not exist is an error, not a lock held elsewhere.
    let ghost = "00000000-0000-4000-8000-000000000000";
    let r = call(&f, "PUT", &format!("/v1/kv/l?acquire={ghost}"), "x").await;
    assert_eq!(
        (r.status, r.text()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("raft apply failed: invalid session \"{ghost}\"")
        )
    );
    let both = format!("acquire={ghost}&release={ghost}");
    let r = call(&f, "PUT", &format!("/v1/kv/l?{both}"), "x").await;
    assert_eq!(
        (r.status, r.text()),
        (
            StatusCode::BAD_REQUEST,
            format!("Conflicting flags: {both}")
        )
    );
    assert_eq!(get(&f, "/v1/kv/l").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ttl_expiry_releases_the_lock_and_renew_postpones_it() {
    let f = fixture().await;
    node_with_serf(&f, "passing").await;
    let kept = create(&f, json!({"TTL": "10s", "LockDelay": "0s"})).await;
    let lapsed = create(&f, json!({"TTL": "10s", "LockDelay": "0s"})).await;
    assert_eq!(
        get(&f, &format!("/v1/session/info/{lapsed}")).await.json()[0]["TTL"],
        "10s"
    );
    call(
        &f,
        "PUT",
        &format!("/v1/kv/svc/leader?acquire={lapsed}"),
        "me",
    )
    .await;
    let start = Instant::now();
    // Renew one session every 5 s; let the other lapse (Consul invalidates after 2x TTL).
    loop {
        let r = call(
            &f,
            "PUT",
            &format!("/v1/session/renew/{kept}"),
            Body::empty(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()[0]["ID"], kept.as_str());
        if lock_holder(&f, "svc/leader").await.is_none() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "TTL never expired"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(19),
        "invalidated before 2x TTL: {took:?}"
    );
    assert_eq!(
        get(&f, &format!("/v1/session/info/{lapsed}")).await.json(),
        json!([])
    );
    assert_eq!(
        get(&f, &format!("/v1/session/info/{kept}")).await.json()[0]["ID"],
        kept.as_str()
    );
}
