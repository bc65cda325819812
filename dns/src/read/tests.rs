//! What a client agent's lookups cost: server RPCs counted by a proxy in front of a real
//! single-node server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_server::model::{Command, Node, Registration, Service};
use muster_server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::Reader;
use crate::name::Names;
use crate::DnsConfig;

/// A bootstrapped single-node server whose RPC port is reached through a proxy that counts
/// the request frames (the server RPC is length-prefixed frames, one per request).
struct Fixture {
    proxy: SocketAddr,
    frames: Arc<AtomicUsize>,
    cancel: CancellationToken,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cancel.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    async fn start() -> Fixture {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "muster-dns-read-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cancel = CancellationToken::new();
        let cfg = ServerConfig::new("srv", "dc1", dir.clone(), &addr.to_string());
        let server = Server::start(cfg, listener, cancel.clone())
            .await
            .expect("start");
        let id = server.node_id().expect("id");
        server
            .bootstrap(BTreeMap::from([(id, addr.to_string())]))
            .await
            .expect("bootstrap");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.is_leader() {
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reg = Registration {
            node: Node {
                name: "web1".into(),
                address: "10.0.0.1".into(),
                ..Node::default()
            },
            skip_node_update: false,
            service: Some(Service {
                id: "web".into(),
                name: "web".into(),
                port: 80,
                ..Service::default()
            }),
            checks: Vec::new(),
        };
        server
            .write(Command::Register(Box::new(reg)))
            .await
            .expect("register");
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = front.local_addr().expect("addr");
        let frames = Arc::new(AtomicUsize::new(0));
        tokio::spawn(count_frames(front, addr, frames.clone()));
        Fixture {
            proxy,
            frames,
            cancel,
            dir,
        }
    }

    /// A client agent's reader, asking the server through the proxy.
    fn client(&self, config: DnsConfig) -> (Reader, Names) {
        let server = Server::client();
        server.set_servers(vec![self.proxy.to_string()]);
        let names = Names::new(&config);
        (Reader::new(server, config), names)
    }

    fn frames(&self) -> usize {
        self.frames.load(Ordering::SeqCst)
    }
}

/// Forwards connections to `to`, counting each request frame once it has arrived whole (so
/// before its answer can reach the caller).
async fn count_frames(front: TcpListener, to: SocketAddr, frames: Arc<AtomicUsize>) {
    while let Ok((client, _)) = front.accept().await {
        let frames = frames.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(to).await else {
                return;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = async {
                while let Ok(len) = cr.read_u32().await {
                    let mut body = vec![0; len as usize];
                    if cr.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    frames.fetch_add(1, Ordering::SeqCst);
                    if sw.write_u32(len).await.is_err() || sw.write_all(&body).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = up => {}
                _ = tokio::io::copy(&mut sr, &mut cw) => {}
            }
        });
    }
}

#[tokio::test]
async fn a_client_agent_lookup_asks_a_server_once() {
    let f = Fixture::start().await;
    let (reader, names) = f.client(DnsConfig::default());

    let before = f.frames();
    let web = reader.instances("web", &names).await.expect("instances");
    assert_eq!(web.len(), 1);
    assert_eq!(f.frames() - before, 1, "a service lookup costs one request");

    let before = f.frames();
    let node = reader.node("web1").await.expect("node");
    assert_eq!(node.map(|n| n.address), Some("10.0.0.1".to_string()));
    assert_eq!(f.frames() - before, 1, "a node lookup costs one request");

    let before = f.frames();
    let nodes = reader.all_nodes().await.expect("nodes");
    assert!(nodes.iter().any(|n| n.name == "web1"));
    assert_eq!(f.frames() - before, 1, "a reverse lookup costs one request");

    // Asked again, with nothing changed: still one request each.
    let before = f.frames();
    reader.instances("web", &names).await.expect("instances");
    reader.node("web1").await.expect("node");
    assert_eq!(f.frames() - before, 2);
}

// A current-thread runtime: the watcher spawned by a miss cannot send its blocking query
// before the test has counted the miss's own requests.
#[tokio::test]
async fn a_use_cache_miss_asks_once_then_its_watcher_parks() {
    let f = Fixture::start().await;
    let config = DnsConfig {
        use_cache: true,
        ..DnsConfig::default()
    };
    let (reader, names) = f.client(config);

    let before = f.frames();
    let web = reader.instances("web", &names).await.expect("instances");
    assert_eq!(web.len(), 1);
    assert_eq!(f.frames() - before, 1, "a miss costs one read");

    // Then the entry's watcher parks one blocking query on the server, and lookups are
    // answered from the cache without asking.
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.frames() - before < 2 {
        assert!(Instant::now() < deadline, "the watcher never asked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..3 {
        reader.instances("web", &names).await.expect("instances");
    }
    assert_eq!(f.frames() - before, 2, "cached lookups ask nothing");
}
