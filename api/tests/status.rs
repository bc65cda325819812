//! The status endpoints: `/v1/status/leader` names the leader only once the catalog holds the
//! leader's registration (passing `serfHealth`, `consul` service) and this agent's node.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

async fn register(f: &Fixture, body: serde_json::Value) {
    let r = call(f, "PUT", "/v1/catalog/register", body.to_string()).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "true"));
}

fn serf(status: &str) -> serde_json::Value {
    json!({"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": status})
}

#[tokio::test]
async fn status_reports_leader_and_peers() {
    let f = fixture().await;
    let peers = get(&f, "/v1/status/peers").await.json();
    let addr = peers[0].as_str().expect("one peer").to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{peers}");
    let port: u16 = addr["127.0.0.1:".len()..].parse().expect("port");
    let leader = || async { get(&f, "/v1/status/leader").await.json() };
    assert_eq!(leader().await, "", "nothing registered yet");

    // The leader is the node running `consul` at its RPC address; here it is not the node of
    // the agent that answers (`n1`), which must be registered as well.
    register(
        &f,
        json!({
            "Node": "srv", "Address": "127.0.0.1",
            "Service": {"ID": "consul", "Service": "consul", "Port": port},
            "Check": serf("critical"),
        }),
    )
    .await;
    assert_eq!(leader().await, "", "the leader's serfHealth is critical");
    register(
        &f,
        json!({"Node": "srv", "Address": "127.0.0.1", "Check": serf("passing")}),
    )
    .await;
    assert_eq!(leader().await, "", "this agent's node is not registered");
    register(&f, json!({"Node": "n1", "Address": "127.0.0.1"})).await;
    assert_eq!(
        leader().await,
        "",
        "no leader has registered this agent's node yet"
    );
    // Registered by a leader: its serfHealth exists. Whether it passes is its health, which
    // gossip may not have caught up with after a partition.
    register(
        &f,
        json!({"Node": "n1", "Address": "127.0.0.1", "Check": serf("critical")}),
    )
    .await;
    assert_eq!(leader().await, json!(addr));
    assert_eq!(peers, json!([addr]));

    // A `consul` service elsewhere names no leader.
    let f = fixture().await;
    register(
        &f,
        json!({
            "Node": "n1", "Address": "127.0.0.1",
            "Service": {"ID": "consul", "Service": "consul", "Port": 1},
            "Check": serf("passing"),
        }),
    )
    .await;
    assert_eq!(get(&f, "/v1/status/leader").await.json(), "");
}
