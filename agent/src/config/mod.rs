//! The agent's configuration: Consul-format JSON or HCL files (`-config-file`, `-config-dir`)
//! merged in order, then command-line flags on top, then validated; the service and check
//! definitions in the files are parsed once, here, into typed values.
//!
//! `Config` and its defaults live here; `file` reads files and applies their keys, `sections`
//! their nested blocks, `args` the flags, `validate` Consul's rules, `definitions` the service
//! and check definitions, and `build` the component configurations made from a `Config`.

mod acl;
mod args;
mod autopilot;
mod build;
mod definitions;
mod file;
mod node;
mod sections;
mod snapshot_agent;
mod telemetry;
#[cfg(test)]
mod tests;
mod tls;
mod validate;
mod watches;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use args::AGENT_FLAGS;
pub use file::read_file;
pub use snapshot_agent::SnapshotAgentConfig;
pub use tls::{TlsConfig, TlsFile, TlsSettings, TlsVersion};

use crate::defs::{CheckDef, ServiceDef};
use crate::flags::Parsed;
use crate::Result;

/// A port setting: `-1` disables the listener, `0` picks a free port (tests), else the port.
pub type PortSetting = i32;

/// Everything the agent runs with. Defaults are Consul's.
#[derive(Debug, Clone)]
pub struct Config {
    /// `-dev`: a single-node server with state in a temp dir and everything on loopback.
    pub dev: bool,
    /// Run as a server: hold Raft state and answer other agents' RPCs.
    pub server: bool,
    /// Form the cluster once this many servers are seen (0: never bootstrap alone).
    pub bootstrap_expect: u32,
    /// Where Raft and agent state live. Required unless `-dev`.
    pub data_dir: Option<PathBuf>,
    pub node_name: String,
    pub datacenter: String,
    /// DNS domain served (`consul.`).
    pub domain: String,
    /// Address gossip and the server RPC port bind to.
    pub bind_addr: IpAddr,
    /// Address advertised to other agents; defaults to `bind_addr`.
    pub advertise_addr: Option<IpAddr>,
    /// The node's `wan` tagged address (`advertise_addr_wan`, `-advertise-wan`); defaults to
    /// the advertised address.
    pub advertise_addr_wan: Option<IpAddr>,
    /// The node's metadata in the catalog (`node_meta`, `-node-meta key:value`).
    pub node_meta: std::collections::BTreeMap<String, String>,
    /// Address HTTP and DNS bind to.
    pub client_addr: IpAddr,
    /// Joined at start; failure is logged, not fatal.
    pub start_join: Vec<String>,
    /// Retried until one succeeds.
    pub retry_join: Vec<String>,
    pub http_port: PortSetting,
    pub dns_port: PortSetting,
    pub server_port: PortSetting,
    pub serf_lan_port: PortSetting,
    pub log_level: String,
    /// `-log-json` / `log_json`: log JSON lines instead of text.
    pub log_json: bool,
    /// `-pid-file` / `pid_file`: the agent writes its PID here at start and removes it at exit.
    pub pid_file: Option<PathBuf>,
    /// Where the agent's log lines are published for `/v1/agent/monitor` (set by `main`).
    pub logs: Option<muster_api::monitor::LogSender>,
    /// Allow script checks registered over HTTP (off: remote code execution otherwise).
    pub enable_script_checks: bool,
    /// Allow script checks from config files.
    pub enable_local_script_checks: bool,
    /// Raft snapshot after this many entries (Consul's `raft_snapshot_threshold`).
    pub raft_snapshot_threshold: u64,
    /// Entries kept behind a snapshot (Consul's `raft_trailing_logs`).
    pub raft_trailing_logs: u64,
    /// How long deleted KV keys' tombstones are kept (Muster's own key; Consul: 15 min).
    pub tombstone_ttl: std::time::Duration,
    /// How long a read or write waits for a cluster leader (`performance.rpc_hold_timeout`).
    pub rpc_hold_timeout: std::time::Duration,
    /// Service definitions from config files, parsed, with their checks. Shared: the config
    /// is cloned, and thousands of definitions need not be.
    pub services: Arc<Vec<ServiceDef>>,
    /// Check definitions from config files, parsed.
    pub checks: Arc<Vec<CheckDef>>,
    /// Output-only check changes reach the catalog at most this often (Consul: 5m).
    pub check_update_interval: std::time::Duration,
    /// The least time between two reports of this node's network coordinate to the servers
    /// (`sync_coordinate_interval_min`, Consul: 15 s).
    pub sync_coordinate_interval_min: std::time::Duration,
    /// Coordinate reports a second the whole cluster aims at; the interval grows with the
    /// cluster past the minimum (`sync_coordinate_rate_target`, Consul: 64).
    pub sync_coordinate_rate_target: f64,
    /// How often a leader writes the coordinate updates it gathered
    /// (`consul.coordinate.update_period`, Consul: 5 s, 100 ms with `-dev`).
    pub coordinate_update_period: std::time::Duration,
    /// The flags this config was built from, to rebuild it on reload.
    pub args: Vec<String>,
    /// DNS: upstream servers for names outside the domain (`recursors`, `-recursor`).
    pub recursors: Vec<std::net::SocketAddr>,
    /// DNS settings from `dns_config` (domain, datacenter and recursors are filled in from
    /// the fields above when the agent starts).
    pub dns: muster_dns::DnsConfig,
    /// A second DNS domain answering the same names (`alt_domain`, `-alt-domain`).
    pub alt_domain: Option<String>,
    /// `primary_datacenter`: only checked against `datacenter`, as Muster runs one.
    pub primary_datacenter: Option<String>,
    /// HTTP connection limits from `limits` (`http_max_conns_per_client`, Consul's 200, and
    /// Muster's `http_read_header_timeout`).
    pub http_limits: muster_api::HttpLimits,
    /// ACL settings (`acl`, and the older `acl_*` keys).
    pub acl: muster_server::acl::AclConfig,
    /// Gossip encryption key (`encrypt`, `-encrypt`): base64 of 16, 24 or 32 bytes. The data
    /// dir's keyring file, once written, wins over it.
    pub encrypt: Option<String>,
    /// Refuse gossip packets not sealed with an installed key (`encrypt_verify_incoming`).
    pub encrypt_verify_incoming: bool,
    /// Seal outgoing gossip packets (`encrypt_verify_outgoing`).
    pub encrypt_verify_outgoing: bool,
    /// TLS: the HTTPS listener and the server RPC port (`tls`, `ports.https`, `cert_file`…).
    pub tls: TlsConfig,
    /// Serf-style event handlers (`event_handlers`, `-event-handler [FILTER=]SCRIPT`), in
    /// the order they run.
    pub event_handlers: Vec<crate::handlers::EventScript>,
    /// How long one event handler may run before it is killed (`event_handler_timeout`).
    pub event_handler_timeout: std::time::Duration,
    /// Refuse to run commands other agents ask for (`muster exec`); on unless set false.
    pub disable_remote_exec: bool,
    /// How long a failed member stays in the member list and the catalog before it is reaped
    /// (`reconnect_timeout`, 72 h).
    pub reconnect_timeout: std::time::Duration,
    /// Watch plans the agent runs once its HTTP API is up (`watches`).
    pub watches: Vec<crate::watch::WatchDef>,
    /// consul-template `template` blocks the agent renders (`template`).
    pub templates: Vec<crate::template::TemplateConfig>,
    /// Scheduled snapshots on a server (`snapshot_agent`); none unless configured.
    pub snapshot_agent: Option<SnapshotAgentConfig>,
    /// The `telemetry` block: metric names and the Prometheus format.
    pub telemetry: muster_api::metrics::MetricsConfig,
    /// The autopilot rules a leader seeds the cluster with (`autopilot`), Consul's defaults
    /// unless set.
    pub autopilot: muster_server::model::AutopilotConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dev: false,
            server: false,
            bootstrap_expect: 0,
            data_dir: None,
            node_name: hostname(),
            datacenter: "dc1".into(),
            domain: "consul.".into(),
            bind_addr: IpAddr::from([0, 0, 0, 0]),
            advertise_addr: None,
            advertise_addr_wan: None,
            node_meta: Default::default(),
            client_addr: IpAddr::from([127, 0, 0, 1]),
            start_join: Vec::new(),
            retry_join: Vec::new(),
            http_port: 8500,
            dns_port: 8600,
            server_port: 8300,
            serf_lan_port: 8301,
            log_level: "info".into(),
            log_json: false,
            pid_file: None,
            logs: None,
            enable_script_checks: false,
            enable_local_script_checks: false,
            raft_snapshot_threshold: 16_384,
            raft_trailing_logs: 10_240,
            tombstone_ttl: std::time::Duration::from_secs(15 * 60),
            rpc_hold_timeout: std::time::Duration::from_secs(7),
            services: Default::default(),
            checks: Default::default(),
            check_update_interval: std::time::Duration::from_secs(300),
            sync_coordinate_interval_min: std::time::Duration::from_secs(15),
            sync_coordinate_rate_target: 64.0,
            coordinate_update_period: std::time::Duration::from_secs(5),
            args: Vec::new(),
            recursors: Vec::new(),
            dns: muster_dns::DnsConfig::default(),
            alt_domain: None,
            primary_datacenter: None,
            http_limits: muster_api::HttpLimits::default(),
            acl: muster_server::acl::AclConfig::disabled(),
            encrypt: None,
            encrypt_verify_incoming: true,
            encrypt_verify_outgoing: true,
            tls: TlsConfig::default(),
            event_handlers: Vec::new(),
            event_handler_timeout: crate::handlers::DEFAULT_TIMEOUT,
            disable_remote_exec: true,
            reconnect_timeout: std::time::Duration::from_secs(72 * 3600),
            watches: Vec::new(),
            templates: Vec::new(),
            snapshot_agent: None,
            telemetry: muster_api::metrics::MetricsConfig {
                hostname: hostname(),
                ..Default::default()
            },
            autopilot: Default::default(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "muster".into())
}

/// Loads config files and flags, validates them and parses the service and check definitions.
/// Returns the config and the warnings to log once logging is up.
pub fn load(p: &Parsed) -> Result<(Config, Vec<String>)> {
    let mut cfg = Config::default();
    let mut warnings = Vec::new();
    if p.bool("dev") {
        cfg.dev = true;
        cfg.server = true;
        cfg.bootstrap_expect = 1;
        cfg.bind_addr = IpAddr::from([127, 0, 0, 1]);
        cfg.coordinate_update_period = std::time::Duration::from_millis(100);
    }
    let mut files: Vec<PathBuf> = p.all("config-file").iter().map(PathBuf::from).collect();
    for dir in p.all("config-dir") {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| crate::Error::Config(format!("config dir {dir}: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "hcl"))
            .collect();
        found.sort();
        files.extend(found);
    }
    let mut raw = definitions::RawDefs::default();
    for f in &files {
        file::apply_file(&mut cfg, f, &mut raw, &mut warnings)?;
    }
    args::apply_flags(&mut cfg, p)?;
    watches::check_endpoint(&cfg)?;
    validate::validate(&mut cfg, &mut warnings)?;
    let (services, checks) = definitions::parse(&cfg, raw, &mut warnings)?;
    cfg.services = Arc::new(services);
    cfg.checks = Arc::new(checks);
    Ok((cfg, warnings))
}
