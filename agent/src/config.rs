//! The agent's configuration: Consul-format JSON files (`-config-file`, `-config-dir`) merged
//! in order, then command-line flags on top.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::flags::{Kind, Parsed};

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
    /// Service definitions from config files: (file, definition). Shared: the config is
    /// cloned, and thousands of definitions need not be.
    pub services: std::sync::Arc<Vec<(String, Value)>>,
    /// Check definitions from config files: (file, definition).
    pub checks: std::sync::Arc<Vec<(String, Value)>>,
    /// Output-only check changes reach the catalog at most this often (Consul: 5m).
    pub check_update_interval: std::time::Duration,
    /// The flags this config was built from, to rebuild it on reload.
    pub args: Vec<String>,
    /// DNS: upstream servers for names outside the domain (`recursors`, `-recursor`).
    pub recursors: Vec<std::net::SocketAddr>,
    /// DNS settings from `dns_config` (domain, datacenter and recursors are filled in from
    /// the fields above when the agent starts).
    pub dns: muster_dns::DnsConfig,
    /// A second DNS domain answering the same names (`alt_domain`, `-alt-domain`).
    pub alt_domain: Option<String>,
    /// HTTP connection limits from `limits` (`http_max_conns_per_client`, Consul's 200, and
    /// Muster's `http_read_header_timeout`).
    pub http_limits: muster_api::HttpLimits,
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
            client_addr: IpAddr::from([127, 0, 0, 1]),
            start_join: Vec::new(),
            retry_join: Vec::new(),
            http_port: 8500,
            dns_port: 8600,
            server_port: 8300,
            serf_lan_port: 8301,
            log_level: "info".into(),
            enable_script_checks: false,
            enable_local_script_checks: false,
            raft_snapshot_threshold: 16_384,
            raft_trailing_logs: 10_240,
            tombstone_ttl: std::time::Duration::from_secs(15 * 60),
            rpc_hold_timeout: std::time::Duration::from_secs(7),
            services: Default::default(),
            checks: Default::default(),
            check_update_interval: std::time::Duration::from_secs(300),
            args: Vec::new(),
            recursors: Vec::new(),
            dns: muster_dns::DnsConfig::default(),
            alt_domain: None,
            http_limits: muster_api::HttpLimits::default(),
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

/// Flags of `muster agent`.
pub const AGENT_FLAGS: &[(&str, Kind)] = &[
    ("dev", Kind::Bool),
    ("server", Kind::Bool),
    ("bootstrap", Kind::Bool),
    ("bootstrap-expect", Kind::Value),
    ("data-dir", Kind::Value),
    ("node", Kind::Value),
    ("datacenter", Kind::Value),
    ("domain", Kind::Value),
    ("alt-domain", Kind::Value),
    ("bind", Kind::Value),
    ("advertise", Kind::Value),
    ("client", Kind::Value),
    ("retry-join", Kind::Multi),
    ("recursor", Kind::Multi),
    ("join", Kind::Multi),
    ("config-file", Kind::Multi),
    ("config-dir", Kind::Multi),
    ("http-port", Kind::Value),
    ("dns-port", Kind::Value),
    ("server-port", Kind::Value),
    ("serf-lan-port", Kind::Value),
    ("log-level", Kind::Value),
    ("enable-script-checks", Kind::Bool),
    ("enable-local-script-checks", Kind::Bool),
];

/// Consul settings Muster does not have yet: accepted with one warning so existing files load.
const UNSUPPORTED: &[&str] = &[
    "acl",
    "acl_datacenter",
    "acl_default_policy",
    "acl_down_policy",
    "acl_master_token",
    "acl_token",
    "addresses",
    "advertise_addr_wan",
    "advertise_addr_ipv4",
    "advertise_addr_ipv6",
    "audit",
    "auto_config",
    "auto_encrypt",
    "autopilot",
    "bind_addr_wan",
    "ca_file",
    "ca_path",
    "cert_file",
    "client_addr_wan",
    "config_entries",
    "connect",
    "disable_anonymous_signature",
    "disable_host_node_id",
    "disable_keyring_file",
    "disable_remote_exec",
    "disable_update_check",
    "discard_check_output",
    "discovery_max_stale",
    "enable_central_service_config",
    "enable_debug",
    "enable_syslog",
    "encrypt",
    "encrypt_verify_incoming",
    "encrypt_verify_outgoing",
    "http_config",
    "key_file",
    "leave_on_terminate",
    "license_path",
    "log_file",
    "log_json",
    "log_rotate_bytes",
    "log_rotate_duration",
    "log_rotate_max_files",
    "node_id",
    "node_meta",
    "partition",
    "peering",
    "pid_file",
    "primary_datacenter",
    "protocol",
    "raft_protocol",
    "reconnect_timeout",
    "rejoin_after_leave",
    "retry_interval",
    "retry_interval_wan",
    "retry_join_wan",
    "retry_max",
    "rpc",
    "segment",
    "serf_lan",
    "serf_wan",
    "session_ttl_min",
    "skip_leave_on_interrupt",
    "syslog_facility",
    "telemetry",
    "tls",
    "translate_wan_addrs",
    "ui",
    "ui_config",
    "ui_dir",
    "unix_sockets",
    "verify_incoming",
    "verify_outgoing",
    "verify_server_hostname",
    "watches",
];
const UNSUPPORTED_PORTS: &[&str] = &[
    "https",
    "grpc",
    "grpc_tls",
    "serf_wan",
    "sidecar_min_port",
    "sidecar_max_port",
    "expose_min_port",
    "expose_max_port",
];

/// Loads config files and flags. Returns the config and the warnings to log once logging is up.
pub fn load(p: &Parsed) -> Result<(Config, Vec<String>), String> {
    let mut cfg = Config::default();
    let mut warnings = Vec::new();
    if p.bool("dev") {
        cfg.dev = true;
        cfg.server = true;
        cfg.bootstrap_expect = 1;
        cfg.bind_addr = IpAddr::from([127, 0, 0, 1]);
    }
    let mut files: Vec<PathBuf> = p.all("config-file").iter().map(PathBuf::from).collect();
    for dir in p.all("config-dir") {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("config dir {dir}: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "hcl"))
            .collect();
        found.sort();
        files.extend(found);
    }
    for f in &files {
        apply_file(&mut cfg, f, &mut warnings)?;
    }
    apply_flags(&mut cfg, p)?;
    validate(&mut cfg, &mut warnings)?;
    Ok((cfg, warnings))
}

/// Consul's rules for names and directories, refusing what Consul only warns about where
/// accepting it is dangerous (a NUL or a newline in a node name).
fn validate(cfg: &mut Config, warnings: &mut Vec<String>) -> Result<(), String> {
    match &cfg.data_dir {
        None if !cfg.dev => {
            return Err(
                "data_dir is required: pass -data-dir DIR (or -dev for a throwaway agent)".into(),
            )
        }
        Some(d) if d.as_os_str().is_empty() => {
            return Err(
                "data_dir cannot be empty: pass -data-dir DIR (an empty path would \
                 put the agent's state in the current directory)"
                    .into(),
            )
        }
        Some(d) if d.exists() && !d.is_dir() => {
            return Err(format!("data_dir {:?} is not a directory", d.display()))
        }
        _ => {}
    }
    if cfg.bootstrap_expect > 0 && !cfg.server {
        return Err("-bootstrap-expect requires -server".into());
    }
    if cfg.server
        && cfg.bootstrap_expect == 0
        && cfg.start_join.is_empty()
        && cfg.retry_join.is_empty()
    {
        warnings.push(
            "bootstrap_expect is 0 and no -join or -retry-join is given: this server will not \
             elect a leader by itself; it waits until an existing cluster adds it. To form a new \
             cluster pass -bootstrap-expect N (the number of servers), or -join an existing one"
                .into(),
        );
    }
    // Consul lowercases the datacenter, then allows only [a-z0-9_-].
    cfg.datacenter = cfg.datacenter.to_ascii_lowercase();
    let dc = &cfg.datacenter;
    if dc.is_empty() {
        return Err("datacenter cannot be empty".into());
    }
    if !dc
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "datacenter {dc:?} is invalid: it can only contain lowercase alphanumeric, - or _ \
             characters"
        ));
    }
    let node = &cfg.node_name;
    if let Some(why) = invalid_node_name(node) {
        return Err(format!("node name {node:?} is invalid: {why}"));
    }
    if !dns_label(node) {
        warnings.push(format!(
            "node name {node:?} will not be discoverable via DNS: valid characters are \
             alphanumerics and dashes, 1 to 63 of them"
        ));
    }
    Ok(())
}

/// Why a node name is refused: empty, too long, or holding control characters (a NUL ends
/// the name in C strings and logs; a newline forges log lines) or a `/` (it cannot be named
/// in a URL path such as `/v1/catalog/node/<name>`).
pub(crate) fn invalid_node_name(n: &str) -> Option<String> {
    if n.is_empty() {
        return Some("it cannot be empty".into());
    }
    if n.len() > 256 {
        return Some(format!(
            "it is {} bytes long, over the limit of 256",
            n.len()
        ));
    }
    if let Some(c) = n.chars().find(|c| c.is_control() || *c == '/') {
        return Some(format!(
            "it contains {c:?}; control characters and '/' are not allowed"
        ));
    }
    None
}

/// Consul's DNS rule for node names: alphanumerics and dashes, at most 63.
fn dns_label(n: &str) -> bool {
    n.len() <= 63 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Reads a Consul config or definition file: JSON, or HCL when the name ends in `.hcl`.
pub fn read_file(path: &Path) -> Result<Value, String> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("config file {name}: {e}"))?;
    if path.extension().is_some_and(|x| x == "hcl") {
        let mut v: Value =
            hcl::from_str(&text).map_err(|e| format!("config file {name}: invalid HCL: {e}"))?;
        gather_blocks(&mut v);
        Ok(v)
    } else {
        serde_json::from_str(&text).map_err(|e| format!("config file {name}: invalid JSON: {e}"))
    }
}

/// HCL writes several services or checks as repeated `service { }` / `check { }` blocks,
/// which read as a list under the singular key: move such lists to the plural key.
fn gather_blocks(v: &mut Value) {
    fn plural(obj: &mut serde_json::Map<String, Value>, one: &str, many: &str) {
        if let Some(Value::Array(items)) = obj.get(one).cloned() {
            obj.remove(one);
            match obj.entry(many).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(list) => list.extend(items),
                other => *other = Value::Array(items),
            }
        }
    }
    let Value::Object(top) = v else { return };
    plural(top, "service", "services");
    plural(top, "check", "checks");
    for key in ["service", "services"] {
        match top.get_mut(key) {
            Some(Value::Object(s)) => plural(s, "check", "checks"),
            Some(Value::Array(list)) => {
                for s in list.iter_mut() {
                    if let Value::Object(s) = s {
                        plural(s, "check", "checks");
                    }
                }
            }
            _ => {}
        }
    }
}

fn apply_file(cfg: &mut Config, path: &Path, warnings: &mut Vec<String>) -> Result<(), String> {
    let name = path.display();
    let v = read_file(path)?;
    let Value::Object(obj) = v else {
        return Err(format!("config file {name}: top level must be an object"));
    };
    let mut ignored = Vec::new();
    for (k, v) in &obj {
        let err = |why: &str| format!("config file {name}: key {k:?}: {why}");
        match k.as_str() {
            "server" => cfg.server = as_bool(v).ok_or_else(|| err("expected a boolean"))?,
            "bootstrap" => {
                if as_bool(v).ok_or_else(|| err("expected a boolean"))? {
                    cfg.bootstrap_expect = 1;
                }
            }
            "bootstrap_expect" => {
                cfg.bootstrap_expect = as_u64(v).ok_or_else(|| err("expected a number"))? as u32
            }
            "data_dir" => {
                cfg.data_dir = Some(as_str(v).ok_or_else(|| err("expected a string"))?.into())
            }
            "node_name" => {
                cfg.node_name = as_str(v).ok_or_else(|| err("expected a string"))?.into()
            }
            "datacenter" => {
                cfg.datacenter = as_str(v).ok_or_else(|| err("expected a string"))?.into()
            }
            "domain" => cfg.domain = as_str(v).ok_or_else(|| err("expected a string"))?.into(),
            "alt_domain" => {
                cfg.alt_domain = Some(as_str(v).ok_or_else(|| err("expected a string"))?.into())
            }
            "bind_addr" => cfg.bind_addr = as_ip(v).ok_or_else(|| err("expected an IP address"))?,
            "advertise_addr" => {
                cfg.advertise_addr = Some(as_ip(v).ok_or_else(|| err("expected an IP address"))?)
            }
            "client_addr" => {
                cfg.client_addr = as_ip(v).ok_or_else(|| err("expected an IP address"))?
            }
            "retry_join" => cfg
                .retry_join
                .extend(as_strings(v).ok_or_else(|| err("expected a list of strings"))?),
            "start_join" => cfg
                .start_join
                .extend(as_strings(v).ok_or_else(|| err("expected a list of strings"))?),
            "log_level" => {
                cfg.log_level = as_str(v).ok_or_else(|| err("expected a string"))?.into()
            }
            "enable_script_checks" => {
                cfg.enable_script_checks = as_bool(v).ok_or_else(|| err("expected a boolean"))?
            }
            "enable_local_script_checks" => {
                cfg.enable_local_script_checks =
                    as_bool(v).ok_or_else(|| err("expected a boolean"))?
            }
            "raft_snapshot_threshold" => {
                cfg.raft_snapshot_threshold = as_u64(v).ok_or_else(|| err("expected a number"))?
            }
            "raft_trailing_logs" => {
                cfg.raft_trailing_logs = as_u64(v).ok_or_else(|| err("expected a number"))?
            }
            "ports" => apply_ports(cfg, v, &name.to_string(), &mut ignored)?,
            "service" | "check" => {
                let list = if k == "service" {
                    &mut cfg.services
                } else {
                    &mut cfg.checks
                };
                std::sync::Arc::make_mut(list).push((name.to_string(), v.clone()));
            }
            "services" | "checks" => {
                let Value::Array(items) = v else {
                    return Err(err("expected a list"));
                };
                let list = if k == "services" {
                    &mut cfg.services
                } else {
                    &mut cfg.checks
                };
                std::sync::Arc::make_mut(list)
                    .extend(items.iter().map(|i| (name.to_string(), i.clone())));
            }
            "recursors" | "recursor" => {
                for r in as_strings(v).ok_or_else(|| err("expected a list of addresses"))? {
                    cfg.recursors.push(
                        parse_recursor(&r).ok_or_else(|| err(&format!("invalid address {r:?}")))?,
                    );
                }
            }
            "dns_config" => apply_dns(cfg, v, &name.to_string(), &mut ignored)?,
            "limits" => apply_limits(cfg, v, &name.to_string(), &mut ignored)?,
            "tombstone_ttl" => {
                let s = as_str(v).ok_or_else(|| err("expected a duration string"))?;
                cfg.tombstone_ttl =
                    muster_api::go_duration(s).ok_or_else(|| err("invalid duration"))?;
            }
            "performance" => apply_performance(cfg, v, &name.to_string(), &mut ignored)?,
            "check_update_interval" => {
                let s = as_str(v).ok_or_else(|| err("expected a duration string"))?;
                cfg.check_update_interval =
                    muster_api::go_duration(s).ok_or_else(|| err("invalid duration"))?;
            }
            k if UNSUPPORTED.contains(&k) => ignored.push(k.to_string()),
            _ => return Err(format!("config file {name}: unknown key {k:?}")),
        }
    }
    if !ignored.is_empty() {
        warnings.push(format!(
            "config file {name}: ignoring settings Muster does not support yet: {}",
            ignored.join(", ")
        ));
    }
    Ok(())
}

fn apply_ports(
    cfg: &mut Config,
    v: &Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<(), String> {
    let Value::Object(ports) = v else {
        return Err(format!(
            "config file {name}: key \"ports\": expected an object"
        ));
    };
    for (k, v) in ports {
        let port = || -> Result<i32, String> {
            match v.as_i64() {
                Some(n) if (-1..=65535).contains(&n) => Ok(n as i32),
                _ => Err(format!(
                    "config file {name}: key \"ports.{k}\": expected -1 or a port number"
                )),
            }
        };
        match k.as_str() {
            "http" => cfg.http_port = port()?,
            "dns" => cfg.dns_port = port()?,
            "server" => cfg.server_port = port()?,
            "serf_lan" => cfg.serf_lan_port = port()?,
            k if UNSUPPORTED_PORTS.contains(&k) => ignored.push(format!("ports.{k}")),
            _ => return Err(format!("config file {name}: unknown key \"ports.{k}\"")),
        }
    }
    Ok(())
}

/// Consul's `limits` block: the HTTP connection limits are honoured; the RPC and rate limits
/// are not ours yet and are warned about.
fn apply_limits(
    cfg: &mut Config,
    v: &Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<(), String> {
    let Value::Object(m) = v else {
        return Err(format!(
            "config file {name}: key \"limits\": expected an object"
        ));
    };
    let err = |k: &str, why: &str| format!("config file {name}: key \"limits.{k}\": {why}");
    for (k, v) in m {
        match k.as_str() {
            "http_max_conns_per_client" => {
                cfg.http_limits.max_conns_per_client = as_u64(v)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| err(k, "expected a non-negative number (0: no limit)"))?
            }
            "http_read_header_timeout" => {
                let d = v
                    .as_str()
                    .and_then(muster_api::go_duration)
                    .ok_or_else(|| err(k, "expected a duration such as \"30s\""))?;
                if d.is_zero() || d > std::time::Duration::from_secs(3600) {
                    return Err(err(k, "must be between 1ns and 1h"));
                }
                cfg.http_limits.read_header_timeout = d;
            }
            "https_handshake_timeout"
            | "rpc_handshake_timeout"
            | "rpc_client_timeout"
            | "rpc_max_conns_per_client"
            | "rpc_rate"
            | "rpc_max_burst"
            | "kv_max_value_size"
            | "txn_max_req_len"
            | "request_limits" => ignored.push(format!("limits.{k}")),
            _ => return Err(format!("config file {name}: unknown key \"limits.{k}\"")),
        }
    }
    Ok(())
}

/// `performance { rpc_hold_timeout }`; Consul's other tuning knobs are warned about.
fn apply_performance(
    cfg: &mut Config,
    v: &Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<(), String> {
    let Value::Object(perf) = v else {
        return Err(format!(
            "config file {name}: key \"performance\": expected an object"
        ));
    };
    for (k, v) in perf {
        match k.as_str() {
            "rpc_hold_timeout" => {
                let err = || {
                    format!(
                        "config file {name}: key \"performance.rpc_hold_timeout\": \
                         expected a duration string such as \"7s\""
                    )
                };
                let d = as_str(v)
                    .and_then(muster_api::go_duration)
                    .ok_or_else(err)?;
                if d.is_zero() || d > std::time::Duration::from_secs(600) {
                    return Err(format!(
                        "config file {name}: key \"performance.rpc_hold_timeout\": \
                         must be between 1ms and 10m, not {d:?}"
                    ));
                }
                cfg.rpc_hold_timeout = d;
            }
            "raft_multiplier" | "leave_drain_time" => ignored.push(format!("performance.{k}")),
            _ => {
                return Err(format!(
                    "config file {name}: unknown key \"performance.{k}\""
                ))
            }
        }
    }
    Ok(())
}

/// `1.1.1.1` or `1.1.1.1:5353` (Consul's default port for recursors is 53).
fn parse_recursor(s: &str) -> Option<std::net::SocketAddr> {
    s.parse().ok().or_else(|| {
        s.parse::<IpAddr>()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, 53))
    })
}

fn apply_dns(
    cfg: &mut Config,
    v: &Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<(), String> {
    let Value::Object(m) = v else {
        return Err(format!(
            "config file {name}: key \"dns_config\": expected an object"
        ));
    };
    let err = |k: &str, why: &str| format!("config file {name}: key \"dns_config.{k}\": {why}");
    let dur = |k: &str, v: &Value| -> Result<std::time::Duration, String> {
        v.as_str()
            .and_then(muster_api::go_duration)
            .ok_or_else(|| err(k, "expected a duration such as \"5s\""))
    };
    let secs = |k: &str, v: &Value| dur(k, v).map(|d| d.as_secs().min(u32::MAX as u64) as u32);
    let boolean = |k: &str, v: &Value| v.as_bool().ok_or_else(|| err(k, "expected a boolean"));
    let count = |k: &str, v: &Value| {
        as_u64(v)
            .map(|n| n as usize)
            .ok_or_else(|| err(k, "expected a non-negative number"))
    };
    for (k, v) in m {
        match k.as_str() {
            "only_passing" => cfg.dns.only_passing = boolean(k, v)?,
            "node_ttl" => cfg.dns.node_ttl = secs(k, v)?,
            "recursor_timeout" => cfg.dns.recursor_timeout = dur(k, v)?,
            "service_ttl" => {
                let Value::Object(map) = v else {
                    return Err(err(k, "expected an object of durations"));
                };
                for (svc, d) in map {
                    cfg.dns.service_ttl.insert(svc.clone(), secs(k, d)?);
                }
            }
            "allow_stale" => cfg.dns.allow_stale = boolean(k, v)?,
            "max_stale" => cfg.dns.max_stale = dur(k, v)?,
            "enable_truncate" => cfg.dns.enable_truncate = boolean(k, v)?,
            "weighted_single_answer" => cfg.dns.weighted_single_answer = boolean(k, v)?,
            "udp_answer_limit" => cfg.dns.udp_answer_limit = count(k, v)?,
            "a_record_limit" => cfg.dns.a_record_limit = count(k, v)?,
            "use_cache" => cfg.dns.use_cache = boolean(k, v)?,
            "cache_max_age" => cfg.dns.cache_max_age = dur(k, v)?,
            "enable_additional_node_meta_txt"
            | "soa"
            | "prefer_namespace"
            | "disable_compression"
            | "recursor_strategy" => ignored.push(format!("dns_config.{k}")),
            _ => {
                return Err(format!(
                    "config file {name}: unknown key \"dns_config.{k}\""
                ))
            }
        }
    }
    Ok(())
}

fn apply_flags(cfg: &mut Config, p: &Parsed) -> Result<(), String> {
    let ip = |flag: &str| -> Result<Option<IpAddr>, String> {
        p.value(flag)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("invalid IP address {v:?} for flag -{flag}"))
            })
            .transpose()
    };
    let port = |flag: &str| -> Result<Option<i32>, String> {
        match p.num::<i32>(flag)? {
            Some(n) if !(-1..=65535).contains(&n) => {
                Err(format!("invalid port {n} for flag -{flag}"))
            }
            n => Ok(n),
        }
    };
    if p.bool("server") {
        cfg.server = true;
    }
    if p.bool("bootstrap") {
        cfg.bootstrap_expect = 1;
    }
    if let Some(n) = p.num::<u32>("bootstrap-expect")? {
        cfg.bootstrap_expect = n;
    }
    if let Some(d) = p.value("data-dir") {
        cfg.data_dir = Some(d.into());
    }
    if let Some(n) = p.value("node") {
        cfg.node_name = n.into();
    }
    if let Some(d) = p.value("datacenter") {
        cfg.datacenter = d.into();
    }
    if let Some(d) = p.value("domain") {
        cfg.domain = d.into();
    }
    if let Some(d) = p.value("alt-domain") {
        cfg.alt_domain = Some(d.into());
    }
    if let Some(a) = ip("bind")? {
        cfg.bind_addr = a;
    }
    if let Some(a) = ip("advertise")? {
        cfg.advertise_addr = Some(a);
    }
    if let Some(a) = ip("client")? {
        cfg.client_addr = a;
    }
    cfg.retry_join.extend(p.all("retry-join").iter().cloned());
    for r in p.all("recursor") {
        cfg.recursors.push(
            parse_recursor(r).ok_or_else(|| format!("invalid address {r:?} for flag -recursor"))?,
        );
    }
    cfg.start_join.extend(p.all("join").iter().cloned());
    if let Some(n) = port("http-port")? {
        cfg.http_port = n;
    }
    if let Some(n) = port("dns-port")? {
        cfg.dns_port = n;
    }
    if let Some(n) = port("server-port")? {
        cfg.server_port = n;
    }
    if let Some(n) = port("serf-lan-port")? {
        cfg.serf_lan_port = n;
    }
    if let Some(l) = p.value("log-level") {
        cfg.log_level = l.into();
    }
    if p.bool("enable-script-checks") {
        cfg.enable_script_checks = true;
    }
    if p.bool("enable-local-script-checks") {
        cfg.enable_local_script_checks = true;
    }
    Ok(())
}

fn as_bool(v: &Value) -> Option<bool> {
    v.as_bool()
}
fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
}
fn as_str(v: &Value) -> Option<&str> {
    v.as_str()
}
fn as_ip(v: &Value) -> Option<IpAddr> {
    v.as_str()?.parse().ok()
}
fn as_strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        Value::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags;

    fn load_with(json: &str, extra: &[&str]) -> Result<(Config, Vec<String>), String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.json");
        std::fs::write(&f, json).expect("write");
        let mut args = vec!["-config-file".to_string(), f.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let p = flags::parse(&args, AGENT_FLAGS)?;
        load(&p).map_err(|e| e.replace(&f.display().to_string(), "FILE"))
    }

    #[test]
    fn honours_known_keys_and_warns_on_unsupported() {
        let (c, w) = load_with(
            r#"{"server": true, "bootstrap_expect": 3, "data_dir": "/d", "node_name": "n1",
                "ports": {"http": -1, "dns": 8653, "grpc": 8502}, "retry_join": ["a"],
                "performance": {"raft_multiplier": 1, "rpc_hold_timeout": "3s"},
                "telemetry": {}}"#,
            &["-retry-join", "b", "-node=n2"],
        )
        .expect("loads");
        assert!(c.server);
        assert_eq!(c.bootstrap_expect, 3);
        assert_eq!(c.http_port, -1);
        assert_eq!(c.dns_port, 8653);
        assert_eq!(c.retry_join, ["a", "b"]);
        assert_eq!(c.node_name, "n2", "flags override files");
        assert_eq!(c.rpc_hold_timeout, std::time::Duration::from_secs(3));
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("performance.raft_multiplier, ports.grpc, telemetry"),
            "{}",
            w[0]
        );
    }

    #[test]
    fn reads_consul_hcl_with_repeated_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("agent.hcl");
        std::fs::write(
            &f,
            r#"
datacenter = "east"
retry_join = ["10.0.0.1", "10.0.0.2"]
ports {
  dns  = 8653
  grpc = -1
}
dns_config {
  only_passing = true
  service_ttl  = { "*" = "5s" }
}
service {
  name = "web"
  port = 80
  check {
    id       = "web-http"
    http     = "http://localhost/health"
    interval = "10s"
  }
  check {
    id  = "web-ttl"
    ttl = "30s"
  }
}
service {
  name   = "db"
  checks = [{ ttl = "30s" }]
}
"#,
        )
        .expect("write");
        let args = [
            "-config-dir",
            &dir.path().display().to_string(),
            "-data-dir",
            "/tmp",
        ]
        .map(String::from);
        let p = flags::parse(&args, AGENT_FLAGS).expect("flags");
        let (c, warnings) = load(&p).expect("load");
        assert_eq!(c.datacenter, "east");
        assert_eq!(c.retry_join, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(c.dns_port, 8653);
        assert!(c.dns.only_passing);
        assert_eq!(c.dns.service_ttl.get("*"), Some(&5));
        assert!(
            warnings.iter().any(|w| w.contains("ports.grpc")),
            "{warnings:?}"
        );
        // Repeated blocks: two services, the first with two checks.
        let names: Vec<&str> = c
            .services
            .iter()
            .filter_map(|(_, s)| s["name"].as_str())
            .collect();
        assert_eq!(names, ["web", "db"]);
        assert_eq!(c.services[0].1["checks"].as_array().map(Vec::len), Some(2));
        assert_eq!(c.services[1].1["checks"].as_array().map(Vec::len), Some(1));

        // A syntax error names the file and the line.
        std::fs::write(&f, "datacenter = \"east\"\nports {\n  dns = \n}\n").expect("write");
        let e = load(&p).expect_err("broken HCL");
        assert!(
            e.starts_with(&format!("config file {}: invalid HCL", f.display()))
                && e.contains("line 3"),
            "{e}"
        );
    }

    #[test]
    fn refuses_unknown_keys_naming_file_and_key() {
        let e = load_with(r#"{"data_dir": "/d", "sever": true}"#, &[]).unwrap_err();
        assert_eq!(e, "config file FILE: unknown key \"sever\"");
        let e = load_with(r#"{"data_dir": "/d", "ports": {"htp": 1}}"#, &[]).unwrap_err();
        assert_eq!(e, "config file FILE: unknown key \"ports.htp\"");
        let e = load_with(r#"{"data_dir": 5}"#, &[]).unwrap_err();
        assert_eq!(e, "config file FILE: key \"data_dir\": expected a string");
        let e = load_with(r#"{"tombstone_ttl": "soon"}"#, &[]).unwrap_err();
        assert_eq!(
            e,
            "config file FILE: key \"tombstone_ttl\": invalid duration"
        );
    }

    #[test]
    fn dns_use_cache_and_its_max_age_are_read() {
        let (c, w) = load_with(
            r#"{"data_dir": "/d", "dns_config": {"use_cache": true, "cache_max_age": "5s"}}"#,
            &[],
        )
        .expect("loads");
        assert!(c.dns.use_cache);
        assert_eq!(c.dns.cache_max_age, std::time::Duration::from_secs(5));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn rpc_hold_timeout_must_be_a_sane_duration() {
        for (v, why) in [("\"0s\"", "must be between"), ("7", "expected a duration")] {
            let json = format!(r#"{{"performance": {{"rpc_hold_timeout": {v}}}}}"#);
            let e = load_with(&json, &[]).unwrap_err();
            assert!(
                e.starts_with("config file FILE: key \"performance.rpc_hold_timeout\": ")
                    && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn tombstone_ttl_is_a_duration() {
        let (c, _) =
            load_with(r#"{"data_dir": "/d", "tombstone_ttl": "90s"}"#, &[]).expect("loads");
        assert_eq!(c.tombstone_ttl, std::time::Duration::from_secs(90));
        let (c, _) = load_with(r#"{"data_dir": "/d"}"#, &[]).expect("loads");
        assert_eq!(c.tombstone_ttl, std::time::Duration::from_secs(15 * 60));
    }
}
