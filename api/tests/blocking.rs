//! Blocking queries: a watcher wakes only for what it watches, quickly, and times out at `wait`.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use serde_json::json;

/// Starts a blocking GET in the background; returns when it answered and the reply.
fn watch(f: &Fixture, uri: String) -> tokio::task::JoinHandle<(Instant, Reply)> {
    let app = f.app.clone();
    tokio::spawn(async move {
        let tmp = Fixture::borrowed(app);
        let r = get(&tmp, &uri).await;
        (Instant::now(), r)
    })
}

#[tokio::test]
async fn kv_watch_wakes_only_for_its_key() {
    let f = fixture().await;
    call(&f, "PUT", "/v1/kv/a", "1").await;
    call(&f, "PUT", "/v1/kv/b", "1").await;
    let idx = get(&f, "/v1/kv/a").await.index();
    let w = watch(&f, format!("/v1/kv/a?index={idx}&wait=10s"));
    let prefix = watch(
        &f,
        format!(
            "/v1/kv/?recurse&index={}&wait=10s",
            get(&f, "/v1/kv/?recurse").await.index()
        ),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Writes to b wake the prefix watcher but not the watcher of a.
    call(&f, "PUT", "/v1/kv/b", "2").await;
    let (_, pr) = tokio::time::timeout(Duration::from_secs(2), prefix)
        .await
        .expect("prefix woke")
        .expect("task");
    assert!(pr.index() > idx);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!w.is_finished(), "a write to b woke the watcher of a");
    let t = Instant::now();
    call(&f, "PUT", "/v1/kv/a", "2").await;
    let (done, r) = tokio::time::timeout(Duration::from_secs(2), w)
        .await
        .expect("woke")
        .expect("task");
    assert!(
        done.duration_since(t) < Duration::from_millis(500),
        "wake-up took {:?}",
        done.duration_since(t)
    );
    assert_eq!(r.json()[0]["Value"], "Mg==");
    assert!(r.index() > idx);
}

#[tokio::test]
async fn watch_times_out_at_wait_and_deletes_wake_watchers() {
    let f = fixture().await;
    call(&f, "PUT", "/v1/kv/k", "1").await;
    let idx = get(&f, "/v1/kv/k").await.index();
    let t = Instant::now();
    let r = get(&f, &format!("/v1/kv/k?index={idx}&wait=300ms")).await;
    let took = t.elapsed();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.index(), idx, "unchanged data, same index");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(300 + 300 / 16 + 400),
        "{took:?}"
    );
    // index=0 answers at once.
    let t = Instant::now();
    get(&f, "/v1/kv/k?index=0&wait=5s").await;
    assert!(t.elapsed() < Duration::from_millis(500));

    let w = watch(&f, format!("/v1/kv/k?index={idx}&wait=10s"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    call(&f, "DELETE", "/v1/kv/k", axum::body::Body::empty()).await;
    let (_, r) = tokio::time::timeout(Duration::from_secs(2), w)
        .await
        .expect("woke")
        .expect("task");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.index() > idx,
        "a deleted key reports the deletion's index"
    );
    assert_eq!(
        get(&f, "/v1/kv/k?index=1&wait=bogus").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn health_watch_wakes_only_for_its_service() {
    let f = fixture().await;
    let reg = |svc: &str, status: &str| {
        json!({"Node": "n1", "Address": "10.0.0.1",
        "Service": {"Service": svc, "Port": 1}, "Check": {"CheckID": format!("service:{svc}"), "ServiceID": svc, "Status": status}}).to_string()
    };
    call(&f, "PUT", "/v1/catalog/register", reg("web", "passing")).await;
    call(&f, "PUT", "/v1/catalog/register", reg("db", "passing")).await;
    let idx = get(&f, "/v1/health/service/web").await.index();
    let w = watch(
        &f,
        format!("/v1/health/service/web?passing&index={idx}&wait=10s"),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    call(&f, "PUT", "/v1/catalog/register", reg("db", "critical")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!w.is_finished(), "a change to db woke a watcher of web");
    call(&f, "PUT", "/v1/catalog/register", reg("web", "critical")).await;
    let (_, r) = tokio::time::timeout(Duration::from_secs(2), w)
        .await
        .expect("woke")
        .expect("task");
    assert_eq!(r.json(), json!([]), "web is no longer passing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lost_wakeups_under_back_to_back_changes() {
    let f = fixture().await;
    let reg = |svc: &str, status: &str| {
        json!({"Node": "n1", "Address": "10.0.0.1", "SkipNodeUpdate": false,
        "Service": {"Service": svc, "Port": 1}, "Check": {"CheckID": format!("service:{svc}"), "ServiceID": svc, "Status": status}}).to_string()
    };
    for i in 0..20 {
        call(
            &f,
            "PUT",
            "/v1/catalog/register",
            reg(&format!("s{i}"), "passing"),
        )
        .await;
    }
    let mut worst = Duration::ZERO;
    for round in 0..200 {
        let svc = format!("s{}", round % 20);
        let status = if round % 40 < 20 {
            "critical"
        } else {
            "passing"
        };
        let idx = get(&f, &format!("/v1/health/checks/{svc}")).await.index();
        let w = watch(&f, format!("/v1/health/checks/{svc}?index={idx}&wait=5s"));
        let t = Instant::now();
        call(&f, "PUT", "/v1/catalog/register", reg(&svc, status)).await;
        let (done, r) = w.await.expect("task");
        let took = done.duration_since(t);
        worst = worst.max(took);
        assert!(
            took < Duration::from_secs(2),
            "round {round}: woke after {took:?}, index {} vs {idx}",
            r.index()
        );
    }
    eprintln!("worst wake-up {worst:?}");
}

#[tokio::test]
async fn tombstones_hold_a_prefix_index_until_reaped_then_it_moves_on() {
    let ttl = Duration::from_secs(2);
    let f = fixture_with(|c| c.tombstone_ttl = ttl).await;
    let deleted_at = Instant::now();
    call(&f, "PUT", "/v1/kv/gc/a", "1").await;
    call(&f, "DELETE", "/v1/kv/gc/a", axum::body::Body::empty()).await;
    let d = get(&f, "/v1/kv/gc/?recurse").await;
    assert_eq!(d.status, StatusCode::NOT_FOUND);
    let tomb = d.index();
    call(&f, "PUT", "/v1/kv/other", "1").await;
    let later = get(&f, "/v1/kv/other").await.index();
    assert!(later > tomb);
    // A young tombstone still gives the empty prefix the delete's index.
    assert_eq!(get(&f, "/v1/kv/gc/?recurse").await.index(), tomb);
    assert!(
        deleted_at.elapsed() < ttl,
        "too slow to see the young tombstone"
    );

    // Reaping wakes a watcher of the prefix, and the index it reports moves past every
    // earlier one, so no client sees it go backwards.
    let w = watch(&f, format!("/v1/kv/gc/?recurse&index={tomb}&wait=30s"));
    let (woke, r) = tokio::time::timeout(Duration::from_secs(20), w)
        .await
        .expect("reaping woke the watcher")
        .expect("task");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.index() > later, "{} <= {later}", r.index());
    assert!(
        woke.duration_since(deleted_at) >= ttl,
        "reaped before the TTL"
    );
}
