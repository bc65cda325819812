//! A read served by a follower asks the leader for its read index once: the follower's
//! barrier is the only round trip, however the handler reads (cached or not).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use muster_api::{router, ApiState};
use muster_server::{KnownServer, SerfStatus, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The postcard tag of `Request::ReadIndex` on the server RPC port: the sixth variant
/// (after AppendEntries, Vote, InstallSnapshot, Write and ApplyMany), a one-byte varint.
const READ_INDEX_TAG: u8 = 5;

/// A TCP relay in front of the leader's RPC port that counts the read-index requests passing
/// through it. Frames are a big-endian u32 length and a postcard body.
async fn counting_relay(to: String, cancel: CancellationToken) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let addr = listener.local_addr().expect("addr").to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let (inbound, _) = tokio::select! {
                r = listener.accept() => match r { Ok(c) => c, Err(_) => return },
                _ = cancel.cancelled() => return,
            };
            let Ok(outbound) = TcpStream::connect(&to).await else {
                continue;
            };
            let (mut in_r, mut in_w) = inbound.into_split();
            let (mut out_r, mut out_w) = outbound.into_split();
            let counter = counter.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(len) = in_r.read_u32().await else {
                        return;
                    };
                    let mut body = vec![0; len as usize];
                    if in_r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if body.first() == Some(&READ_INDEX_TAG) {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut frame = len.to_be_bytes().to_vec();
                    frame.extend_from_slice(&body);
                    if out_w.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
            });
        }
    });
    (addr, count)
}

/// Roomy timeouts: a busy test machine must not make the follower lose sight of the leader
/// (and retry its read index) in the middle of a request.
fn config(name: &str, dir: &std::path::Path, advertise: &str) -> ServerConfig {
    let mut cfg = ServerConfig::new(name, "dc1", dir.to_path_buf(), advertise);
    cfg.election_timeout_min = Duration::from_millis(1500);
    cfg.election_timeout_max = Duration::from_millis(2500);
    cfg
}

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ok().await {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_default_read_on_a_follower_runs_one_barrier() {
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let (dir1, dir2) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );

    // The leader advertises the relay, so the follower reaches it only through the relay.
    let l1 = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (relay, read_indexes) =
        counting_relay(l1.local_addr().expect("addr").to_string(), cancel.clone()).await;
    let leader = Server::start(config("s1", dir1.path(), &relay), l1, cancel.clone())
        .await
        .expect("start leader");
    let id1 = leader.node_id().expect("id");
    leader
        .bootstrap(BTreeMap::from([(id1, relay.clone())]))
        .await
        .expect("bootstrap");
    wait_for("leader", async || leader.is_leader()).await;

    let l2 = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr2 = l2.local_addr().expect("addr").to_string();
    let follower = Server::start(config("s2", dir2.path(), &addr2), l2, cancel.clone())
        .await
        .expect("start follower");
    let id2 = follower.node_id().expect("id");
    leader.add_server(id2, addr2).await.expect("add server");
    // What the agent's gossip would tell autopilot, which then promotes the new server.
    let known = |raft_id, name: &str| KnownServer {
        raft_id,
        name: name.into(),
        node_id: String::new(),
        version: String::new(),
        status: SerfStatus::Alive,
    };
    leader.set_known_servers(vec![known(id1, "s1"), known(id2, "s2")]);
    wait_for("the follower to vote", async || leader.voters().len() == 2).await;
    wait_for("the follower to follow", async || {
        follower.status().await.ok().and_then(|s| s.0) == Some(relay.clone())
    })
    .await;

    let f = Fixture::borrowed(router(ApiState::new(follower, Arc::new(NoGossip))));
    let reg = r#"{"Node":"n1","Address":"10.0.0.1","Service":{"Service":"web","Port":80}}"#;
    assert_eq!(
        call(&f, "PUT", "/v1/catalog/register", reg).await.status,
        StatusCode::OK
    );

    for uri in [
        "/v1/health/service/web",
        "/v1/health/service/web",
        "/v1/catalog/service/web",
        "/v1/catalog/service/web?consistent",
        "/v1/catalog/nodes",
        "/v1/kv/missing",
    ] {
        let before = read_indexes.load(Ordering::SeqCst);
        let r = get(&f, uri).await;
        assert!(
            r.status.is_success() || r.status == StatusCode::NOT_FOUND,
            "{uri}: {}",
            r.text()
        );
        let asked = read_indexes.load(Ordering::SeqCst) - before;
        assert_eq!(
            asked, 1,
            "{uri}: the follower asked the leader {asked} times"
        );
    }
}
