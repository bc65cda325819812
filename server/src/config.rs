//! `ServerConfig`: what the agent passes to the server component, by value.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of one server's Raft node and state store. Built by the agent from its config.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node's name; stored in the data dir and checked at every start.
    pub node_name: String,
    pub datacenter: String,
    /// Where `raft.redb`, `state.redb` and the current snapshot live.
    pub data_dir: PathBuf,
    /// The address other servers reach this one's server RPC port at (`-advertise`:8300).
    pub advertise_rpc: String,
    /// Raft heartbeat interval. Election timeouts are derived from it.
    pub heartbeat: Duration,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_threshold: u64,
    /// Log entries kept behind a snapshot so slightly lagging followers need no snapshot.
    pub trailing_logs: u64,
    /// Upper bound on waiting for a leader before a write fails with `No cluster leader`.
    pub leader_wait: Duration,
    /// How long a default-mode or consistent read waits for a leader (Consul's
    /// `performance.rpc_hold_timeout`) before it fails with `No cluster leader`.
    pub rpc_hold_timeout: Duration,
    /// The agent's `-bind` address; outgoing server connections leave from it.
    pub bind_ip: Option<std::net::IpAddr>,
    /// How long a deleted KV key's tombstone is kept (Consul: 15 minutes). It must outlast
    /// the longest blocking query (10 minutes), which relies on it to see the delete.
    pub tombstone_ttl: Duration,
    /// How often the leader writes the coordinate updates it gathered (Consul's
    /// `consul.coordinate.update_period`: 5 s, 100 ms in `-dev`).
    pub coordinate_update_period: Duration,
    /// TLS on the server RPC port, both ways; `None` speaks plain TCP.
    pub tls: Option<RpcTls>,
    /// The autopilot configuration a leader writes when the cluster has none yet (the
    /// agent's `autopilot` block); afterwards the replicated one rules.
    pub autopilot: crate::model::AutopilotConfig,
}

/// TLS on the server RPC port: what a server accepts and how it (or a client agent) dials.
/// Built by the agent from its `tls.internal_rpc` settings.
#[derive(Debug, Clone)]
pub struct RpcTls {
    /// Accepts TLS connections with this config (a certificate is configured). A TLS client
    /// is told apart from a plain one by its first byte, as Consul's RPC port does.
    pub acceptor: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Refuses plain connections (`verify_incoming_rpc`).
    pub require_incoming: bool,
    /// Dials other servers over TLS with this config (`verify_outgoing`).
    pub connector: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The name servers are dialled by, `server.<dc>.<domain>`: sent as SNI, and checked
    /// against their certificates with `verify_server_hostname`.
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl ServerConfig {
    /// Defaults tuned for a LAN: elections finish well under a second. openraft lets a
    /// follower campaign only after `election_timeout_max` (its leader lease) plus a random
    /// election timeout without a heartbeat: 550-700 ms here.
    pub fn new(node_name: &str, datacenter: &str, data_dir: PathBuf, advertise_rpc: &str) -> Self {
        ServerConfig {
            node_name: node_name.to_string(),
            datacenter: datacenter.to_string(),
            data_dir,
            advertise_rpc: advertise_rpc.to_string(),
            heartbeat: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(200),
            election_timeout_max: Duration::from_millis(350),
            snapshot_threshold: 16_384,
            trailing_logs: 10_240,
            leader_wait: Duration::from_secs(2),
            rpc_hold_timeout: Duration::from_secs(7),
            bind_ip: None,
            tombstone_ttl: Duration::from_secs(15 * 60),
            coordinate_update_period: Duration::from_secs(5),
            tls: None,
            autopilot: Default::default(),
        }
    }
}
