//! What the HTTP API asks of the agent beyond its local services (`AgentControl`): the member
//! list, this agent's own description (`/v1/agent/self`), join, leave, force-leave, the
//! keyring operations, user events, queries and remote exec.

use std::net::SocketAddr;

use futures::future::BoxFuture;
use muster_api::{types, AgentControl};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::gossip::{Gossip, Member, MemberId, Status};
use super::tags::{CONSUL_VERSION, INTERNAL_TAGS, SERF_DELEGATE, SERF_PROTOCOL, TAG_ROLE};
use crate::config::Config;
use crate::VERSION;

/// State behind `AgentControl`.
pub(crate) struct Control {
    pub(crate) config: Config,
    pub(crate) gossip: Gossip,
    pub(crate) node_id: String,
    /// Cancelled by `leave`: the agent leaves the cluster and stops.
    pub(crate) cancel: CancellationToken,
}

/// A gossip member as Consul's API shows it: its tags without Muster's internal ones, and
/// Serf's protocol ranges.
fn api_member(id: &MemberId, status: Status) -> types::Member {
    let (cur, min, max) = SERF_PROTOCOL;
    let (dcur, dmin, dmax) = SERF_DELEGATE;
    let mut tags = id.tags.clone();
    tags.retain(|k, _| !INTERNAL_TAGS.contains(&k.as_str()));
    types::Member {
        name: id.name.clone(),
        addr: id.addr.ip().to_string(),
        port: id.addr.port(),
        tags,
        status: status.code(),
        protocol_min: min,
        protocol_max: max,
        protocol_cur: cur,
        delegate_min: dmin,
        delegate_max: dmax,
        delegate_cur: dcur,
    }
}

/// Go's names for the machine, as Consul's `runtime` stats report them.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

impl Control {
    /// Serf's LAN statistics, from this agent's member list.
    fn serf_lan_stats(&self, members: &[Member]) -> Value {
        let count = |s: Status| members.iter().filter(|m| m.status == s).count().to_string();
        json!({
            "members": members.len().to_string(),
            "failed": count(Status::Failed),
            "left": count(Status::Left),
            "health_score": "0",
            "encrypted": self.gossip.encrypted().to_string(),
            "coordinate_resets": self.gossip.probes.resets().to_string(),
            "event_queue": "0",
            "event_time": "1",
            "intent_queue": "0",
            "member_time": "1",
            "query_queue": "0",
            "query_time": "1",
        })
    }

    /// The part of `DebugConfig` that has a meaning in Muster, under Consul's field names.
    fn debug_config(&self) -> Value {
        let c = &self.config;
        json!({
            "Bootstrap": c.dev,
            "BootstrapExpect": c.bootstrap_expect,
            "BindAddr": c.bind_addr.to_string(),
            "AdvertiseAddrLAN": c.advertise_ip().to_string(),
            "ClientAddrs": [c.client_addr.to_string()],
            "DataDir": c.data_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
            "Datacenter": c.datacenter,
            "DevMode": c.dev,
            "DNSDomain": c.domain,
            "DNSPort": c.dns_port,
            "EnableLocalScriptChecks": c.enable_local_script_checks,
            "EnableRemoteScriptChecks": c.enable_script_checks,
            "HTTPPort": c.http_port,
            "NodeID": self.node_id,
            "NodeMeta": c.node_meta,
            "NodeName": c.node_name,
            "PrimaryDatacenter": c.datacenter,
            "RetryJoinLAN": c.retry_join,
            "ServerMode": c.server,
            "ServerPort": c.server_port,
            "SerfPortLAN": c.serf_lan_port,
            "StartJoinAddrsLAN": c.start_join,
            "Version": CONSUL_VERSION,
            "MusterVersion": VERSION,
        })
    }
}

impl AgentControl for Control {
    fn members(&self) -> Vec<types::Member> {
        self.gossip
            .snapshot()
            .iter()
            .map(|m| api_member(&m.id, m.status))
            .collect()
    }

    /// Muster has no WAN pool: in a single datacenter, Consul's WAN members are its servers,
    /// named `NODE.DC`. They are shown so, at their LAN gossip address. A client agent is in
    /// no WAN pool and lists none, as Consul's.
    fn members_wan(&self) -> Vec<types::Member> {
        if !self.config.server {
            return Vec::new();
        }
        self.gossip
            .snapshot()
            .iter()
            .filter(|m| m.id.tags.get(TAG_ROLE).is_some_and(|r| r == "consul"))
            .map(|m| {
                let mut w = api_member(&m.id, m.status);
                w.name = format!("{}.{}", w.name, self.config.datacenter);
                w.tags.remove("wan_join_port");
                w
            })
            .collect()
    }

    fn self_info(&self) -> Value {
        let me = api_member(&self.gossip.local, Status::Alive);
        let members = self.gossip.snapshot();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        json!({
            "Config": {
                "Datacenter": self.config.datacenter,
                "PrimaryDatacenter": self.config.datacenter,
                "NodeName": self.config.node_name,
                "NodeID": self.node_id,
                "Revision": "",
                "Server": self.config.server,
                "Version": CONSUL_VERSION,
            },
            "DebugConfig": self.debug_config(),
            "Coord": muster_api::coordinate::Coord::from(self.gossip.probes.coordinate()),
            "Member": me,
            "Stats": {
                "serf_lan": self.serf_lan_stats(&members),
                "runtime": {
                    "arch": go_arch(),
                    "os": std::env::consts::OS,
                    "cpu_count": cpus.to_string(),
                    "max_procs": cpus.to_string(),
                    "version": "rust",
                },
                "build": {
                    "version": CONSUL_VERSION,
                    "prerelease": "",
                    "revision": "",
                    "muster_version": VERSION,
                },
            },
            "Meta": self.config.node_meta_registered(),
            // No Envoy proxies are supported: no xDS server runs.
            "xDS": { "SupportedProxies": {}, "Port": -1 },
        })
    }

    fn join(&self, addr: String) -> BoxFuture<'static, Result<(), String>> {
        let g = self.gossip.clone();
        Box::pin(async move {
            // Joining ourselves is a no-op that succeeds, as in Consul.
            if is_self(&addr, g.local.addr).await {
                return Ok(());
            }
            g.join(&addr).await.map_err(|e| e.to_string())
        })
    }

    fn leave(&self) {
        self.cancel.cancel();
    }

    fn force_leave(&self, node: String) -> BoxFuture<'static, Result<(), String>> {
        let g = self.gossip.clone();
        Box::pin(async move { g.force_leave(&node).await.map_err(|e| e.to_string()) })
    }

    fn datacenter(&self) -> String {
        self.config.datacenter.clone()
    }

    fn coordinate(&self) -> Option<muster_server::model::Coordinate> {
        Some(self.gossip.probes.coordinate())
    }

    fn keyring(
        &self,
        op: muster_api::keyring::KeyringOp,
    ) -> BoxFuture<'static, Option<muster_api::keyring::KeyringOutcome>> {
        let g = self.gossip.clone();
        Box::pin(async move { g.keyring(op).await })
    }

    fn node_name(&self) -> String {
        self.config.node_name.clone()
    }

    fn fire_event(
        &self,
        req: muster_api::event::FireRequest,
    ) -> BoxFuture<'static, Result<muster_api::event::UserEvent, String>> {
        let g = self.gossip.clone();
        Box::pin(async move {
            let (ev, pkt) = g.user_events.fire(req)?;
            g.broadcast(pkt).await.map_err(|e| e.to_string())?;
            Ok(ev)
        })
    }

    fn query(
        &self,
        req: muster_api::serf::QueryRequest,
    ) -> BoxFuture<'static, Result<mpsc::Receiver<muster_api::serf::QueryEvent>, String>> {
        let g = self.gossip.clone();
        Box::pin(async move {
            let members: Vec<_> = g
                .snapshot()
                .into_iter()
                .filter(|m| m.status == Status::Alive)
                .map(|m| {
                    let mut tags = m.id.tags;
                    tags.retain(|k, _| !INTERNAL_TAGS.contains(&k.as_str()));
                    (m.id.name, tags)
                })
                .collect();
            let asked = g.queries.ask(req, &members)?;
            // This agent answers too, when it matches.
            g.queries.on_packet(&asked.packet[1..]);
            g.broadcast(asked.packet.clone())
                .await
                .map_err(|e| e.to_string())?;
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(super::query::gather(asked, tx));
            Ok(rx)
        })
    }

    fn exec(
        &self,
        req: muster_api::serf::ExecRequest,
        may_run: muster_api::serf::NodeCheck,
    ) -> BoxFuture<'static, Result<mpsc::Receiver<muster_api::serf::ExecEvent>, String>> {
        let g = self.gossip.clone();
        Box::pin(async move {
            let started = g.exec.start(req, may_run)?;
            g.exec.on_packet(&started.packet[1..]);
            g.broadcast(started.packet.clone())
                .await
                .map_err(|e| e.to_string())?;
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(super::exec::gather(started, tx));
            Ok(rx)
        })
    }

    fn events(
        &self,
    ) -> (
        Vec<muster_api::event::UserEvent>,
        Option<tokio::sync::watch::Receiver<u64>>,
    ) {
        let (events, rx) = self.gossip.user_events.list();
        (events, Some(rx))
    }
}

/// Whether `addr` (`host`, `host:port`; the port defaults to 8301) names this agent's own
/// gossip address.
async fn is_self(addr: &str, me: SocketAddr) -> bool {
    let with_port = match addr.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, 8301).to_string(),
        Err(_) if addr.parse::<SocketAddr>().is_ok() || addr.contains(':') => addr.to_string(),
        Err(_) => format!("{addr}:8301"),
    };
    let found = tokio::net::lookup_host(with_port).await;
    found.is_ok_and(|mut addrs| addrs.any(|a| a == me))
}
