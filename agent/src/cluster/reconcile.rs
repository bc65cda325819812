//! Cluster formation and the leader's reconciliation of gossip membership into Raft and the
//! catalog, as Consul's leader loop does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use muster_server::model::{
    Check, Command, Consistency, HealthStatus, Node, Registration, Service,
};
use muster_server::{KnownServer, SerfStatus, Server};
use tokio_util::sync::CancellationToken;

use super::gossip::{Gossip, Member, Status};
use super::tags::{SERF_CHECK, TAG_BUILD, TAG_DC, TAG_ID, TAG_PORT, TAG_RAFT_ID, TAG_ROLE};
use crate::config::Config;

/// How often the loop runs with nothing to wake it: only to retry what failed (a write during
/// an election, a server not yet reachable), since events and elections start a pass at once.
const SAFETY_NET: Duration = Duration::from_secs(1);

/// A server as gossip describes it.
struct ServerMember {
    name: String,
    raft_id: u64,
    rpc: String,
    status: Status,
    node_id: String,
    version: String,
}

fn server_of(m: &Member, dc: &str) -> Option<ServerMember> {
    let t = &m.id.tags;
    if t.get(TAG_ROLE).map(String::as_str) != Some("consul")
        || t.get(TAG_DC).map(String::as_str) != Some(dc)
    {
        return None;
    }
    let raft_id = t.get(TAG_RAFT_ID)?.parse().ok()?;
    let port: u16 = t.get(TAG_PORT)?.parse().ok()?;
    Some(ServerMember {
        name: m.id.name.clone(),
        raft_id,
        rpc: SocketAddr::new(m.id.addr.ip(), port).to_string(),
        status: m.status,
        node_id: t.get(TAG_ID).cloned().unwrap_or_default(),
        // The `build` tag is `VERSION:muster-…`, as Consul's is `VERSION:COMMIT`.
        version: t
            .get(TAG_BUILD)
            .and_then(|b| b.split(':').next())
            .unwrap_or_default()
            .to_string(),
    })
}

pub(crate) async fn run(
    config: Config,
    server: Server,
    gossip: Gossip,
    _node_id: String,
    cancel: CancellationToken,
) {
    let mut changed = gossip.changed.clone();
    let mut tick = tokio::time::interval(SAFETY_NET);
    let mut bootstrapped = false;
    loop {
        // A pass runs at once on every membership event and when this server wins an
        // election (Consul's leader loop reconciles right after its first barrier), so the
        // leader's own node, `serfHealth` and `consul` service are in the catalog moments
        // after it leads. The tick retries what failed.
        let leading = server.is_leader();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changed.changed() => {}
            _ = server.leading(), if !leading => {}
            _ = tick.tick() => {}
        }
        let members = gossip.snapshot();
        let servers: Vec<ServerMember> = members
            .iter()
            .filter_map(|m| server_of(m, &config.datacenter))
            .collect();
        if !server.is_server() {
            let addrs = servers
                .iter()
                .filter(|s| s.status == Status::Alive)
                .map(|s| s.rpc.clone())
                .collect();
            server.set_servers(addrs);
            continue;
        }
        if !bootstrapped {
            bootstrapped = maybe_bootstrap(&config, &server, &servers).await;
        }
        server.set_known_servers(servers.iter().map(known_server).collect());
        if server.is_leader() {
            // As Consul's barrier: decide from a state machine that has applied everything
            // committed, so that a new leader does not skip a write its predecessors'
            // entries made necessary.
            let pass = async {
                server.barrier(Consistency::Default).await?;
                reconcile_catalog(&config, &server, &members).await?;
                reconcile_reaped(&server, &gossip).await
            };
            if let Err(e) = pass.await {
                tracing::debug!(error = %e, "catalog reconciliation incomplete; will retry");
            }
            // After the catalog, which is what clients wait on.
            reconcile_raft(&server, &servers).await;
        }
    }
}

/// Forms the cluster once `bootstrap_expect` servers are seen, unless one of them already
/// belongs to a cluster (then its leader adds us). Returns true once nothing is left to do.
async fn maybe_bootstrap(config: &Config, server: &Server, servers: &[ServerMember]) -> bool {
    if server.is_initialized().await {
        return true;
    }
    let expect = config.bootstrap_expect as usize;
    if expect == 0 {
        return false;
    }
    let alive: Vec<&ServerMember> = servers
        .iter()
        .filter(|s| s.status == Status::Alive)
        .collect();
    if alive.len() < expect {
        return false;
    }
    let me = server.rpc_addr().unwrap_or_default();
    for s in &alive {
        if s.rpc == me {
            continue;
        }
        match server.remote_status(&s.rpc).await {
            Ok((_, peers)) if !peers.is_empty() => {
                tracing::info!(server = %s.name, "existing cluster found; waiting to be added by its leader");
                return true;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::info!(server = %s.name, error = %e, "cannot ask server about its peers yet");
                return false;
            }
        }
    }
    let members: BTreeMap<u64, String> = alive.iter().map(|s| (s.raft_id, s.rpc.clone())).collect();
    tracing::info!(
        servers = alive.len(),
        "bootstrap-expect reached; forming the cluster"
    );
    match server.bootstrap(members).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "bootstrap failed; will retry");
            false
        }
    }
}

/// What autopilot needs of a server gossip knows.
fn known_server(s: &ServerMember) -> KnownServer {
    KnownServer {
        raft_id: s.raft_id,
        name: s.name.clone(),
        node_id: s.node_id.clone(),
        version: s.version.clone(),
        status: match s.status {
            Status::Alive => SerfStatus::Alive,
            Status::Leaving => SerfStatus::Leaving,
            Status::Left => SerfStatus::Left,
            Status::Failed => SerfStatus::Failed,
        },
    }
}

/// Adds alive servers that are not in the Raft configuration (as non-voters: autopilot
/// promotes them); removes voters whose server left.
async fn reconcile_raft(server: &Server, servers: &[ServerMember]) {
    let voters = server.voters();
    let members = server.raft_members();
    for s in servers {
        let is_member = members.get(&s.raft_id) == Some(&s.rpc);
        match s.status {
            Status::Alive if !is_member => {
                if let Err(e) = server.add_server(s.raft_id, s.rpc.clone()).await {
                    tracing::warn!(server = %s.name, error = %e, "cannot add server to raft");
                }
            }
            Status::Left if voters.contains_key(&s.raft_id) && voters.len() > 1 => {
                if let Err(e) = server.remove_server(s.raft_id).await {
                    tracing::warn!(server = %s.name, error = %e, "cannot remove server from raft");
                }
            }
            _ => {}
        }
    }
}

/// Every live member is a catalog node with a `serfHealth` check; failed members' checks go
/// critical; members that left are removed. Servers carry the `consul` service.
/// Takes reaped members out of the catalog, as Consul's `reconcileReaped`: a node that gossip
/// reaped (failed past `reconnect_timeout`) and that still has its `serfHealth` check.
async fn reconcile_reaped(server: &Server, gossip: &Gossip) -> muster_server::Result<()> {
    let Some(catalog) = server.catalog() else {
        return Ok(());
    };
    let reaped: Vec<String> = muster_server::sync::lock(&gossip.reaped)
        .iter()
        .cloned()
        .collect();
    for name in reaped {
        let has_serf_check = catalog
            .node_checks(&name)?
            .iter()
            .any(|c| c.id == SERF_CHECK);
        if has_serf_check {
            tracing::info!(node = %name, "deregistering a reaped member");
            server
                .write(Command::Deregister {
                    node: name,
                    service_id: None,
                    check_id: None,
                })
                .await?;
        }
    }
    Ok(())
}

async fn reconcile_catalog(
    config: &Config,
    server: &Server,
    members: &[Member],
) -> muster_server::Result<()> {
    let Some(catalog) = server.catalog() else {
        return Ok(());
    };
    for m in members {
        let name = &m.id.name;
        if m.status == Status::Left {
            if catalog.node(name)?.is_some() {
                server
                    .write(Command::Deregister {
                        node: name.clone(),
                        service_id: None,
                        check_id: None,
                    })
                    .await?;
            }
            continue;
        }
        let (status, output) = match m.status {
            Status::Failed => (HealthStatus::Critical, "Agent not live or unreachable"),
            _ => (HealthStatus::Passing, "Agent alive and reachable"),
        };
        let address = m.id.addr.ip().to_string();
        let node = catalog.node(name)?;
        let checks = catalog.node_checks(name)?;
        let serf_ok = checks
            .iter()
            .any(|c| c.id == SERF_CHECK && c.status == status);
        let node_ok = node.as_ref().is_some_and(|n| n.address == address);
        let server_member = server_of(m, &config.datacenter);
        let service = server_member.as_ref().map(|s| Service {
            id: "consul".into(),
            name: "consul".into(),
            port: s
                .rpc
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(8300),
            weight_passing: 1,
            weight_warning: 1,
            meta: super::tags::consul_service_meta(),
            ..Default::default()
        });
        let service_ok = match &service {
            None => true,
            Some(want) => catalog
                .node_services(name)?
                .iter()
                .any(|s| s.id == want.id && s.port == want.port && s.meta == want.meta),
        };
        if serf_ok && node_ok && service_ok {
            continue;
        }
        let reg = Registration {
            node: Node {
                name: name.clone(),
                id: m.id.tags.get(TAG_ID).cloned().unwrap_or_default(),
                address,
                datacenter: config.datacenter.clone(),
                // What the member's agent registered stays, as Consul's leader keeps it.
                tagged_addresses: node
                    .as_ref()
                    .map(|n| n.tagged_addresses.clone())
                    .unwrap_or_default(),
                meta: node.as_ref().map(|n| n.meta.clone()).unwrap_or_default(),
                ..Default::default()
            },
            skip_node_update: false,
            service,
            checks: vec![Check {
                node: name.clone(),
                id: SERF_CHECK.into(),
                name: "Serf Health Status".into(),
                status,
                output: output.into(),
                ..Default::default()
            }],
        };
        server.write(Command::Register(Box::new(reg))).await?;
    }
    Ok(())
}

/// On a graceful leave, a server takes itself out of the voters so the remaining servers keep
/// their quorum arithmetic right; a leader first hands leadership to a caught-up voter, so
/// the cluster has a leader throughout.
pub(crate) async fn leave_raft(server: &Server) {
    let Some(id) = server.node_id() else { return };
    let voters = server.voters();
    if voters.len() <= 1 || !voters.contains_key(&id) {
        return;
    }
    match tokio::time::timeout(Duration::from_secs(10), server.remove_peer(id)).await {
        Ok(Ok(())) => tracing::info!("removed this server from the raft configuration"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not remove this server from raft"),
        Err(_) => tracing::warn!("timed out removing this server from raft"),
    }
}
