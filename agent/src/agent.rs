//! Starting and stopping an agent: `run` goes through named start-up phases in order (data
//! dir, listeners, server, gossip, local state, HTTP, DNS, background loops, joins), waits to
//! be told to stop, then shuts down in reverse.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use muster_api::ApiState;
use muster_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cluster::control::Control;
use crate::cluster::gossip::{Gossip, MemberId, ReapAfter};
use crate::cluster::keyring::{Crypto, SharedCrypto};
use crate::cluster::tags::{member_tags, ServerTags, INTERNAL_TAGS};
use crate::cluster::{coordinate, join, reconcile};
use crate::config::Config;
use crate::handlers;
use crate::listeners::bind_listeners;
use crate::local::Local;
use crate::tls::AgentTls;
use crate::{Error, Result, VERSION};

/// Runs an agent until it is told to leave or `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    // `cancel` means "leave": HTTP, DNS and the reconcile loop stop at once. `core` (gossip,
    // server RPC, Raft) stays up until the leave steps have run, then stops too.
    let cancel = shutdown.child_token();
    let core = CancellationToken::new();
    // Service and check definitions were parsed and checked by `config::load`, before
    // anything starts or binds.
    let data = open_data_dir(&config)?;
    // Certificates and keys are read before anything binds: a bad file fails the start.
    let tls = Arc::new(AgentTls::build(&config)?);
    // Bind everything first, so a port in use fails before any state is touched.
    let listeners = bind_listeners(&config).await?;
    if let Some(w) = config.exposure_warning() {
        tracing::warn!("{w}");
    }
    let advertise = config.advertise_ip();
    let serf_addr = SocketAddr::new(advertise, listeners.serf.0.local_addr()?.port());
    let server = open_server(&config, &tls, &data.path, advertise, listeners.rpc, &core).await?;
    let crypto = gossip_crypto(&config, &data.path)?;
    let gossip = start_gossip(
        &config,
        &server,
        &data.node_id,
        (listeners.serf, serf_addr, crypto),
        &core,
    )
    .await;
    let local = Local::start(
        &config,
        &data.path,
        &data.node_id,
        &advertise.to_string(),
        config.server,
        core.clone(),
    );
    // User events' service and tag filters match this agent's own services.
    gossip.user_events.set_services({
        let local = local.clone();
        Box::new(move || {
            muster_api::LocalAgent::services(local.as_ref())
                .into_iter()
                .map(|s| (s.id, s.tags))
                .collect()
        })
    });
    local.on_reload(Box::new({
        let tls = tls.clone();
        move |cfg| tls.reload(cfg)
    }));
    let control = Arc::new(Control {
        config: config.clone(),
        gossip: gossip.clone(),
        node_id: data.node_id.clone(),
        cancel: cancel.clone(),
    });
    let acl = Arc::new(muster_server::acl::Resolver::new(
        server.clone(),
        muster_server::acl::AclConfig {
            data_dir: Some(data.path.clone()),
            node_name: config.node_name.clone(),
            datacenter: config.datacenter.clone(),
            ..config.acl.clone()
        },
    ));
    let mut state = ApiState::new(server.clone(), control)
        .with_local(local.clone())
        .with_resolver(acl.clone());
    state.logs = config.logs.clone();
    state.stop = cancel.clone();
    // One registry for the whole agent: every part's collectors, registered once here.
    let metrics = Arc::new(muster_api::metrics::Metrics::new(config.telemetry.clone()));
    metrics.register(server.metrics().collectors());
    metrics.register(gossip.metrics.collectors());
    state.metrics = metrics.clone();
    let mut tasks = JoinSet::new();
    if config.telemetry.sinks.any() {
        let sinks = config.telemetry.sinks.clone();
        tasks.spawn(muster_api::metrics_sink::run(
            state.clone(),
            sinks,
            cancel.clone(),
        ));
    }

    let https_addr = start_https(&config, &tls, listeners.https, &state, &cancel, &mut tasks)?;
    let http_addr = start_http(&config, listeners.http, state, &cancel, &mut tasks)?;
    crate::watch::start(&config.watches, http_addr, &cancel, &mut tasks);
    let agent_token = config.acl.agent.clone();
    crate::template::agent::start(
        &config.templates,
        http_addr,
        agent_token,
        &cancel,
        &mut tasks,
    );
    crate::snapshot_agent::start(&config, &server, &cancel, &mut tasks);
    let dns = (acl, &*metrics);
    let dns_addr = start_dns(&config, listeners.dns, &server, dns, &cancel, &mut tasks)?;
    start_loops(
        &config, &server, &gossip, &local, &data, &cancel, &mut tasks,
    );
    join_cluster(&config, &gossip, &data.path, &cancel, &mut tasks).await;

    let ports = BannerPorts {
        http: http_addr,
        https: https_addr,
        dns: dns_addr,
        serf: serf_addr,
    };
    print_banner(&config, ports, &server).await;
    crate::readiness::notify_ready();

    let stop = wait_for_stop(&server, &cancel).await;
    shutdown_agent(stop, &server, &gossip, &cancel, &core, tasks).await
}

/// The data dir, and the node ID kept in it.
struct DataDir {
    /// `-dev` keeps its state in a temp dir, removed when this is dropped.
    _tmp: Option<tempfile::TempDir>,
    path: PathBuf,
    node_id: String,
}

/// Creates the data dir (a temp dir under `-dev`) and reads or makes the node ID.
fn open_data_dir(config: &Config) -> Result<DataDir> {
    let (tmp, path) = match &config.data_dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("muster-dev-")
                .tempdir()
                .map_err(|e| Error::file("create temp data dir", e))?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    std::fs::create_dir_all(&path)
        .map_err(|e| Error::file(format!("cannot create data dir {}", path.display()), e))?;
    let node_id = node_id(&path)?;
    Ok(DataDir {
        _tmp: tmp,
        path,
        node_id,
    })
}

/// The node ID (a UUID, as Consul's), kept in the data dir.
fn node_id(dir: &Path) -> Result<String> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::file(format!("cannot read {}", path.display()), e)),
    }
    let id = muster_server::new_uuid();
    std::fs::write(&path, &id).map_err(|e| Error::file(format!("write {}", path.display()), e))?;
    Ok(id)
}

/// A server's Raft node on its RPC listener; a client's handle that forwards to servers.
async fn open_server(
    config: &Config,
    tls: &AgentTls,
    data_dir: &Path,
    advertise: IpAddr,
    rpc: Option<TcpListener>,
    core: &CancellationToken,
) -> Result<Server> {
    Ok(match rpc {
        Some(listener) => {
            let rpc_addr = SocketAddr::new(advertise, listener.local_addr()?.port());
            let mut sc = config.server_config(data_dir.to_path_buf(), rpc_addr);
            sc.tls = tls.rpc.clone();
            Server::start(sc, listener, core.clone()).await?
        }
        None => Server::client_bound(
            Some(config.bind_addr),
            config.rpc_hold_timeout,
            tls.rpc.as_ref(),
        ),
    })
}

/// Starts gossip on the serf socket, announcing this agent's tags.
async fn start_gossip(
    config: &Config,
    server: &Server,
    node_id: &str,
    (serf, serf_addr, crypto): ((UdpSocket, TcpListener), SocketAddr, SharedCrypto),
    core: &CancellationToken,
) -> Gossip {
    let server_tags = match (server.node_id(), config.server) {
        (Some(raft_id), true) => Some(ServerTags {
            raft_id,
            rpc_port: server_rpc_port(server).await,
            // `-dev` bootstraps alone, which Consul announces with no `expect` tag.
            bootstrap_expect: if config.dev {
                0
            } else {
                config.bootstrap_expect
            },
        }),
        _ => None,
    };
    let local = MemberId {
        addr: serf_addr,
        name: config.node_name.clone(),
        tags: member_tags(config.server, &config.datacenter, node_id, server_tags),
        incarnation: 0,
    };
    // The event handler runner, when handlers are configured, hears of member changes and
    // user events.
    let runner = (!config.event_handlers.is_empty()).then(|| {
        let mut tags = local.tags.clone();
        tags.retain(|k, _| !INTERNAL_TAGS.contains(&k.as_str()));
        let runner = handlers::RunnerConfig {
            scripts: config.event_handlers.clone(),
            timeout: config.event_handler_timeout,
            self_name: local.name.clone(),
            node_meta: config.node_meta.clone(),
            tags,
        };
        handlers::start(runner, core.clone())
    });
    let (events, queue) = runner.unzip();
    let reap_after = ReapAfter {
        failed: config.reconnect_timeout,
        ..ReapAfter::default()
    };
    let gossip = Gossip::start(serf, local, crypto, events, reap_after, core.clone());
    if let Some(queue) = queue {
        gossip.user_events.set_handlers(queue.clone());
        gossip.queries.set_handlers(queue, &config.node_meta);
    }
    gossip.exec.set_enabled(!config.disable_remote_exec);
    gossip
}

/// The gossip keyring: the data dir's keyring file, else `encrypt` (which creates the file).
fn gossip_crypto(config: &Config, data_dir: &Path) -> Result<SharedCrypto> {
    let (crypto, warning) = Crypto::start(
        config.encrypt.as_deref(),
        data_dir,
        config.encrypt_verify_incoming,
        config.encrypt_verify_outgoing,
    )
    .map_err(Error::Config)?;
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    if crypto.keyring.is_some() {
        tracing::info!(
            verify_incoming = crypto.verify_incoming,
            verify_outgoing = crypto.verify_outgoing,
            "gossip encryption enabled"
        );
    }
    Ok(Arc::new(std::sync::RwLock::new(crypto)))
}

async fn server_rpc_port(server: &Server) -> u16 {
    server
        .rpc_addr()
        .and_then(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .unwrap_or(8300)
}

/// Serves HTTP on its listener, if enabled; returns the address it serves on.
fn start_http(
    config: &Config,
    listener: Option<TcpListener>,
    state: ApiState,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<Option<SocketAddr>> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let addr = listener.local_addr()?;
    let app = muster_api::router(state);
    let limits = config.http_limits.clone();
    // Read-header deadline, idle timeout and per-client connection limit: see
    // muster_api::serve.
    tasks.spawn(muster_api::serve(listener, app, limits, cancel.clone()));
    Ok(Some(addr))
}

/// Serves HTTPS on its listener, if enabled; returns the address it serves on.
fn start_https(
    config: &Config,
    tls: &AgentTls,
    listener: Option<TcpListener>,
    state: &ApiState,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<Option<SocketAddr>> {
    let (Some(listener), Some(tls)) = (listener, tls.https.clone()) else {
        return Ok(None);
    };
    let addr = listener.local_addr()?;
    let app = muster_api::router(state.clone());
    let limits = config.http_limits.clone();
    tasks.spawn(muster_api::serve_tls(
        listener,
        app,
        limits,
        tls,
        cancel.clone(),
    ));
    Ok(Some(addr))
}

/// Serves DNS on its sockets, if enabled; returns the address it serves on.
fn start_dns(
    config: &Config,
    sockets: Option<(UdpSocket, TcpListener)>,
    server: &Server,
    (acl, metrics): (
        Arc<muster_server::acl::Resolver>,
        &muster_api::metrics::Metrics,
    ),
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<Option<SocketAddr>> {
    let Some((udp, tcp)) = sockets else {
        return Ok(None);
    };
    let addr = tcp.local_addr()?;
    let handler = muster_dns::DnsHandler::new(server.clone(), config.dns_config()).with_acl(acl);
    metrics.register(handler.metrics().collectors());
    // DNS gets a thread and a single-threaded runtime of its own: a query is received,
    // answered and sent without crossing threads, and HTTP or Raft load cannot delay it.
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
    Ok(Some(addr))
}

/// Anti-entropy, reload on SIGHUP, and the reconcile loop (cluster formation, and on the
/// leader, membership into Raft and the catalog).
fn start_loops(
    config: &Config,
    server: &Server,
    gossip: &Gossip,
    local: &Arc<Local>,
    data: &DataDir,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(local.clone().sync_loop(server.clone(), cancel.clone()));
    tasks.spawn(reload_on_hangup(local.clone(), cancel.clone()));
    let coordinates = coordinate::SyncConfig {
        node: config.node_name.clone(),
        interval_min: config.sync_coordinate_interval_min,
        rate_target: config.sync_coordinate_rate_target,
    };
    tasks.spawn(coordinate::sync_loop(
        coordinates,
        gossip.clone(),
        server.clone(),
        cancel.clone(),
    ));
    tasks.spawn(crate::acl::leader_loop(
        server.clone(),
        config.acl.clone(),
        cancel.clone(),
    ));
    tasks.spawn(reconcile::run(
        config.clone(),
        server.clone(),
        gossip.clone(),
        data.node_id.clone(),
        cancel.clone(),
    ));
}

/// Re-reads the configuration on SIGHUP; a failed reload keeps the running one.
async fn reload_on_hangup(local: Arc<Local>, cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
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
}

/// `-join` (once each, in order), `-retry-join` until one answers, the members known before a
/// restart, and keeping that list up to date.
async fn join_cluster(
    config: &Config,
    gossip: &Gossip,
    data_dir: &Path,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    for addr in config.start_join.clone() {
        if let Err(e) = gossip.join(&addr).await {
            tracing::warn!(%addr, error = %e, "join failed");
        }
    }
    if !config.retry_join.is_empty() {
        tasks.spawn(join::retry_join(
            gossip.clone(),
            config.retry_join.clone(),
            cancel.clone(),
        ));
    }
    // Like Serf's snapshot: rejoin the members known before a restart, so a restarted agent
    // (even the one everybody else joined through) finds its cluster again by itself.
    let known = join::known_members(data_dir);
    if !known.is_empty() {
        tracing::info!(
            members = known.len(),
            "rejoining members known before restart"
        );
        tasks.spawn(join::retry_join(gossip.clone(), known, cancel.clone()));
    }
    tasks.spawn(join::remember_members(
        gossip.clone(),
        data_dir.to_path_buf(),
        cancel.clone(),
    ));
}

/// Why the agent stops.
enum Stop {
    /// Told to leave (`shutdown`, `muster leave`): a graceful leave.
    Leave,
    /// Its Raft data predates a recovery: it must neither serve nor touch the membership.
    Retired(String),
    /// A server that cannot go on (its Raft core, log writer or checkpointer stopped, the
    /// disk full) exits non-zero for its supervisor to restart it, rather than linger unable
    /// to serve.
    Fatal(String),
}

async fn wait_for_stop(server: &Server, cancel: &CancellationToken) -> Stop {
    tokio::select! {
        _ = cancel.cancelled() => Stop::Leave,
        why = server.retired() => Stop::Retired(why),
        why = server.fatal() => Stop::Fatal(why),
    }
}

/// Leaves (Raft, on a graceful leave, then gossip), stops the core, drains the tasks for up to
/// 5 s, and shuts the server down.
async fn shutdown_agent(
    stop: Stop,
    server: &Server,
    gossip: &Gossip,
    cancel: &CancellationToken,
    core: &CancellationToken,
    mut tasks: JoinSet<()>,
) -> Result<()> {
    match &stop {
        Stop::Fatal(_) => cancel.cancel(),
        Stop::Retired(why) => {
            tracing::error!(reason = %why, "this server was retired by `muster recover` on another server; stopping");
            cancel.cancel();
        }
        Stop::Leave => {
            tracing::info!("agent shutting down: leaving the cluster");
            if server.is_server() {
                reconcile::leave_raft(server).await;
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
    match stop {
        Stop::Fatal(why) => Err(Error::Fatal(why)),
        Stop::Retired(why) => Err(Error::Retired(why)),
        Stop::Leave => Ok(()),
    }
}

/// The addresses the banner names.
struct BannerPorts {
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
    dns: Option<SocketAddr>,
    serf: SocketAddr,
}

async fn print_banner(config: &Config, ports: BannerPorts, server: &Server) {
    let BannerPorts {
        http,
        https,
        dns,
        serf,
    } = ports;
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
        "       Client Addr: [{}] (HTTP: {}, HTTPS: {}, DNS: {})",
        config.client_addr,
        port(http),
        port(https),
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
