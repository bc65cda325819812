//! Starting and stopping an agent.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use futures::future::BoxFuture;
use muster_api::{types, AgentControl, ApiState};
use muster_server::{Server, ServerConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, PortSetting};
use crate::gossip::{Gossip, MemberId};
use crate::{reconcile, VERSION};

/// Gossip tag keys, as Consul's.
pub(crate) const TAG_ROLE: &str = "role";
pub(crate) const TAG_DC: &str = "dc";
pub(crate) const TAG_PORT: &str = "port";
pub(crate) const TAG_BUILD: &str = "build";
pub(crate) const TAG_RAFT_ID: &str = "raft_id";
pub(crate) const TAG_EXPECT: &str = "expect";

async fn bind_tcp(
    ip: IpAddr,
    port: PortSetting,
    what: &str,
) -> anyhow::Result<Option<TcpListener>> {
    if port < 0 {
        return Ok(None);
    }
    let addr = SocketAddr::new(ip, port as u16);
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|e| anyhow!("cannot listen for {what} on {addr}: {e}"))
}

async fn bind_udp(ip: IpAddr, port: u16, what: &str) -> anyhow::Result<UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    UdpSocket::bind(addr)
        .await
        .map_err(|e| anyhow!("cannot listen for {what} on {addr}: {e}"))
}

/// State behind `AgentControl`.
struct Control {
    config: Config,
    gossip: Gossip,
    node_id: String,
    cancel: CancellationToken,
}

impl AgentControl for Control {
    fn members(&self) -> Vec<types::Member> {
        self.gossip
            .snapshot()
            .into_iter()
            .map(|m| types::Member {
                name: m.id.name.clone(),
                addr: m.id.addr.ip().to_string(),
                port: m.id.addr.port(),
                tags: m.id.tags.clone(),
                status: m.status.code(),
                protocol_min: 1,
                protocol_max: 5,
                protocol_cur: 2,
                delegate_min: 2,
                delegate_max: 5,
                delegate_cur: 4,
            })
            .collect()
    }

    fn self_info(&self) -> serde_json::Value {
        let me = &self.gossip.local;
        serde_json::json!({
            "Config": {
                "Datacenter": self.config.datacenter,
                "NodeName": self.config.node_name,
                "NodeID": self.node_id,
                "Server": self.config.server,
                "Revision": "",
                "Version": VERSION,
                "PrimaryDatacenter": self.config.datacenter,
            },
            "Member": {
                "Name": me.name,
                "Addr": me.addr.ip().to_string(),
                "Port": me.addr.port(),
                "Tags": me.tags,
                "Status": 1,
            },
            "Meta": {},
        })
    }

    fn join(&self, addr: String) -> BoxFuture<'static, Result<(), String>> {
        let g = self.gossip.clone();
        Box::pin(async move { g.join(&addr).await })
    }

    fn leave(&self) {
        self.cancel.cancel();
    }

    fn force_leave(&self, node: String) -> BoxFuture<'static, Result<(), String>> {
        let g = self.gossip.clone();
        Box::pin(async move { g.force_leave(&node).await })
    }

    fn datacenter(&self) -> String {
        self.config.datacenter.clone()
    }

    fn node_name(&self) -> String {
        self.config.node_name.clone()
    }
}

/// The node ID (a UUID, as Consul's), kept in the data dir.
fn node_id(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
    }
    let id = muster_server::new_uuid();
    std::fs::write(&path, &id).with_context(|| format!("write {}", path.display()))?;
    Ok(id)
}

/// Runs an agent until it is told to leave or `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // `cancel` means "leave": HTTP, DNS and the reconcile loop stop at once. `core` (gossip,
    // server RPC, Raft) stays up until the leave steps have run, then stops too.
    let cancel = shutdown.child_token();
    let core = CancellationToken::new();
    // Service and check definitions are checked before anything starts or binds.
    crate::local::parse_config_defs(&config).map_err(|e| anyhow!(e))?;
    // -dev keeps its state in a temp dir removed on exit.
    let (_tmp, data_dir): (Option<tempfile::TempDir>, PathBuf) = match &config.data_dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("muster-dev-")
                .tempdir()
                .context("create temp data dir")?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| anyhow!("cannot create data dir {}: {e}", data_dir.display()))?;
    let node_id = node_id(&data_dir)?;

    // Bind everything first, so a port in use fails before any state is touched.
    let http = bind_tcp(config.client_addr, config.http_port, "HTTP").await?;
    let dns = match config.dns_port {
        p if p < 0 => None,
        p => {
            let tcp = bind_tcp(config.client_addr, p, "DNS (TCP)")
                .await?
                .expect("enabled");
            // UDP on the same port TCP got, so an ephemeral port is the same for both.
            let port = tcp.local_addr()?.port();
            Some((bind_udp(config.client_addr, port, "DNS (UDP)").await?, tcp))
        }
    };
    let rpc = if config.server {
        let port = config.server_port.max(0);
        bind_tcp(config.bind_addr, port, "server RPC").await?
    } else {
        None
    };
    let serf_port = config.serf_lan_port.max(0) as u16;
    let serf = bind_udp(config.bind_addr, serf_port, "gossip (serf LAN)").await?;

    let advertise = config
        .advertise_addr
        .unwrap_or(if config.bind_addr.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            config.bind_addr
        });
    let serf_addr = SocketAddr::new(advertise, serf.local_addr()?.port());

    let server = match rpc {
        Some(listener) => {
            let rpc_addr = SocketAddr::new(advertise, listener.local_addr()?.port());
            let mut sc = ServerConfig::new(
                &config.node_name,
                &config.datacenter,
                data_dir.clone(),
                &rpc_addr.to_string(),
            );
            sc.snapshot_threshold = config.raft_snapshot_threshold;
            sc.trailing_logs = config.raft_trailing_logs;
            sc.tombstone_ttl = config.tombstone_ttl;
            sc.rpc_hold_timeout = config.rpc_hold_timeout;
            sc.bind_ip = Some(config.bind_addr);
            Server::start(sc, listener, core.clone()).await?
        }
        None => Server::client_bound(Some(config.bind_addr), config.rpc_hold_timeout),
    };

    let mut tags = BTreeMap::new();
    tags.insert(
        TAG_ROLE.into(),
        if config.server { "consul" } else { "node" }.to_string(),
    );
    tags.insert(TAG_DC.into(), config.datacenter.clone());
    tags.insert(TAG_BUILD.into(), VERSION.to_string());
    tags.insert(crate::reconcile::TAG_ID.into(), node_id.clone());
    if let (Some(id), true) = (server.node_id(), config.server) {
        tags.insert(TAG_RAFT_ID.into(), id.to_string());
        let port = server_rpc_port(&server).await;
        tags.insert(TAG_PORT.into(), port.to_string());
        if config.bootstrap_expect > 0 {
            tags.insert(TAG_EXPECT.into(), config.bootstrap_expect.to_string());
        }
    }
    let local = MemberId {
        addr: serf_addr,
        name: config.node_name.clone(),
        tags,
        incarnation: 0,
    };
    let gossip = Gossip::start(serf, local, core.clone());

    let control = Arc::new(Control {
        config: config.clone(),
        gossip: gossip.clone(),
        node_id: node_id.clone(),
        cancel: cancel.clone(),
    });
    // Local services and checks: a bad definition stops the agent here, naming file and field.
    let (local, warnings) = crate::local::Local::start(
        &config,
        &data_dir,
        &node_id,
        &advertise.to_string(),
        config.server,
        core.clone(),
    )
    .map_err(|e| anyhow!(e))?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let state = ApiState::new(server.clone(), control).with_local(local.clone());

    let mut tasks = tokio::task::JoinSet::new();
    let http_addr = match http {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let app = muster_api::router(state.clone());
            let c = cancel.clone();
            let limits = config.http_limits.clone();
            // Read-header deadline, idle timeout and per-client connection limit: see
            // muster_api::serve.
            tasks.spawn(muster_api::serve(listener, app, limits, c));
            Some(addr)
        }
        None => None,
    };
    let dns_addr = match dns {
        Some((udp, tcp)) => {
            let addr = tcp.local_addr()?;
            let handler = muster_dns::DnsHandler::new(
                server.clone(),
                muster_dns::DnsConfig {
                    domain: config.domain.clone(),
                    alt_domain: config.alt_domain.clone(),
                    datacenter: config.datacenter.clone(),
                    recursors: config.recursors.clone(),
                    ..config.dns.clone()
                },
            );
            // DNS gets a thread and a single-threaded runtime of its own: a query is
            // received, answered and sent without crossing threads (the work-stealing
            // runtime spent a quarter of its time waking other workers), and HTTP or Raft
            // load cannot delay it.
            let (udp, tcp) = (udp.into_std()?, tcp.into_std()?);
            let c = cancel.clone();
            tasks.spawn(async move {
                let dns = tokio::task::spawn_blocking(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async {
                        let udp = tokio::net::UdpSocket::from_std(udp)?;
                        let tcp = tokio::net::TcpListener::from_std(tcp)?;
                        muster_dns::serve(handler, udp, tcp, c).await;
                        Ok::<_, std::io::Error>(())
                    })
                });
                match dns.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "DNS server failed"),
                    Err(e) => tracing::error!(error = %e, "DNS server panicked"),
                }
            });
            Some(addr)
        }
        None => None,
    };

    tasks.spawn(local.clone().sync_loop(server.clone(), cancel.clone()));
    {
        let (local, cancel) = (local.clone(), cancel.clone());
        tasks.spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = hup.recv() => {
                        if let Err(e) = muster_api::LocalAgent::reload(local.as_ref()) {
                            tracing::error!("reload failed; keeping the running configuration: {e}");
                        }
                    }
                }
            }
        });
    }
    tasks.spawn(reconcile::run(
        config.clone(),
        server.clone(),
        gossip.clone(),
        node_id,
        cancel.clone(),
    ));
    for addr in config.start_join.clone() {
        if let Err(e) = gossip.join(&addr).await {
            tracing::warn!(%addr, error = %e, "join failed");
        }
    }
    if !config.retry_join.is_empty() {
        tasks.spawn(retry_join(
            gossip.clone(),
            config.retry_join.clone(),
            cancel.clone(),
        ));
    }
    // Like Serf's snapshot: rejoin the members known before a restart, so a restarted agent
    // (even the one everybody else joined through) finds its cluster again by itself.
    let known_path = data_dir.join("known-members.json");
    let known: Vec<String> = std::fs::read(&known_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if !known.is_empty() {
        tracing::info!(
            members = known.len(),
            "rejoining members known before restart"
        );
        tasks.spawn(retry_join(gossip.clone(), known, cancel.clone()));
    }
    tasks.spawn(remember_members(gossip.clone(), known_path, cancel.clone()));

    print_banner(&config, http_addr, dns_addr, serf_addr, &server).await;

    // A server that cannot go on (its Raft core, log writer or checkpointer stopped, the disk
    // full) exits non-zero for its supervisor to restart it, rather than linger unable to serve.
    let mut fatal = None;
    let retired = tokio::select! {
        _ = cancel.cancelled() => None,
        why = server.retired() => Some(why),
        why = server.fatal() => {
            fatal = Some(why);
            None
        }
    };
    match &retired {
        _ if fatal.is_some() => cancel.cancel(),
        // Its Raft data predates a recovery: it must neither serve nor touch the membership.
        Some(why) => {
            tracing::error!(reason = %why, "this server was retired by `muster recover` on another server; stopping");
            cancel.cancel();
        }
        None => {
            tracing::info!("agent shutting down: leaving the cluster");
            if server.is_server() {
                reconcile::leave_raft(&server).await;
            }
        }
    }
    gossip.leave().await;
    core.cancel();
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop in time; aborting them");
    }
    server.shutdown().await;
    tracing::info!("agent stopped");
    if let Some(why) = fatal {
        anyhow::bail!("{why}. This server has stopped; start it again once the cause is fixed");
    }
    if let Some(why) = retired {
        anyhow::bail!(
            "{why}. This server was retired and has stopped; start it again as before: it sets \
             its old Raft data aside (in superseded-<time>/ in its data dir) and rejoins as a \
             new member"
        );
    }
    Ok(())
}

async fn server_rpc_port(server: &Server) -> u16 {
    server
        .rpc_addr()
        .and_then(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .unwrap_or(8300)
}

/// Keeps the addresses of other live members in the data dir for the next start.
async fn remember_members(gossip: Gossip, path: PathBuf, cancel: CancellationToken) {
    let mut changed = gossip.changed.clone();
    let mut last: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = changed.changed() => if r.is_err() { return },
        }
        let mut addrs: Vec<String> = gossip
            .snapshot()
            .into_iter()
            .filter(|m| m.status == crate::gossip::Status::Alive && m.id.name != gossip.local.name)
            .map(|m| m.id.addr.to_string())
            .collect();
        addrs.sort();
        if addrs.is_empty() || addrs == last {
            continue;
        }
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(&addrs).unwrap_or_default();
        if let Err(e) = std::fs::write(&tmp, body).and_then(|_| std::fs::rename(&tmp, &path)) {
            tracing::warn!(error = %e, path = %path.display(), "cannot save known members");
        }
        last = addrs;
    }
}

async fn retry_join(gossip: Gossip, addrs: Vec<String>, cancel: CancellationToken) {
    loop {
        for a in &addrs {
            match gossip.join(a).await {
                Ok(()) => {
                    tracing::info!(addr = %a, "joined the cluster");
                    return;
                }
                Err(e) => tracing::warn!(addr = %a, error = %e, "retry-join failed; will retry"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn print_banner(
    config: &Config,
    http: Option<SocketAddr>,
    dns: Option<SocketAddr>,
    serf: SocketAddr,
    server: &Server,
) {
    let port = |a: Option<SocketAddr>| a.map_or(-1, |a| a.port() as i32);
    let rpc = server.rpc_addr().unwrap_or_else(|| "-".into());
    // Operators and the smoke tests read these lines; keep their shape stable.
    println!("==> Muster agent running!");
    println!("           Version: '{VERSION}'");
    println!("         Node name: '{}'", config.node_name);
    println!("        Datacenter: '{}'", config.datacenter);
    println!(
        "            Server: {} (Bootstrap expect: {})",
        config.server, config.bootstrap_expect
    );
    println!(
        "       Client Addr: [{}] (HTTP: {}, DNS: {})",
        config.client_addr,
        port(http),
        port(dns)
    );
    println!(
        "      Cluster Addr: {} (LAN: {}, Server RPC: {})",
        serf.ip(),
        serf.port(),
        rpc
    );
    println!("==> Log data will now stream in as it occurs:");
}
