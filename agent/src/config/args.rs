//! The flags of `muster agent`, and how they override the config files.

use std::net::IpAddr;

use super::sections::parse_recursor;
use super::Config;
use crate::flags::{Kind, Parsed};
use crate::{Error, Result};

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
    ("advertise-wan", Kind::Value),
    ("node-meta", Kind::Multi),
    ("client", Kind::Value),
    ("retry-join", Kind::Multi),
    ("recursor", Kind::Multi),
    ("join", Kind::Multi),
    ("config-file", Kind::Multi),
    ("config-dir", Kind::Multi),
    ("http-port", Kind::Value),
    ("https-port", Kind::Value),
    ("dns-port", Kind::Value),
    ("server-port", Kind::Value),
    ("serf-lan-port", Kind::Value),
    ("log-level", Kind::Value),
    ("log-json", Kind::Bool),
    ("pid-file", Kind::Value),
    ("enable-script-checks", Kind::Bool),
    ("enable-local-script-checks", Kind::Bool),
    ("encrypt", Kind::Value),
    ("event-handler", Kind::Multi),
];

/// Applies the flags of `muster agent` on top of the config files.
pub(super) fn apply_flags(cfg: &mut Config, p: &Parsed) -> Result<()> {
    let ip = |flag: &str| -> Result<Option<IpAddr>> {
        p.value(flag)
            .map(|v| {
                v.parse().map_err(|_| {
                    Error::Config(format!("invalid IP address {v:?} for flag -{flag}"))
                })
            })
            .transpose()
    };
    let port = |flag: &str| -> Result<Option<i32>> {
        match p
            .num::<i32>(flag)
            .map_err(|e| Error::Config(e.to_string()))?
        {
            Some(n) if !(-1..=65535).contains(&n) => {
                Err(Error::Config(format!("invalid port {n} for flag -{flag}")))
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
    if let Some(n) = p
        .num::<u32>("bootstrap-expect")
        .map_err(|e| Error::Config(e.to_string()))?
    {
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
    if let Some(a) = ip("advertise-wan")? {
        cfg.advertise_addr_wan = Some(a);
    }
    for raw in p.all("node-meta") {
        let (k, v) = super::node::parse_flag_pair(raw);
        cfg.node_meta.insert(k, v);
    }
    if let Some(a) = ip("client")? {
        cfg.client_addr = a;
    }
    cfg.retry_join.extend(p.all("retry-join").iter().cloned());
    for r in p.all("recursor") {
        cfg.recursors.push(
            parse_recursor(r).ok_or_else(|| {
                Error::Config(format!("invalid address {r:?} for flag -recursor"))
            })?,
        );
    }
    cfg.start_join.extend(p.all("join").iter().cloned());
    if let Some(n) = port("http-port")? {
        cfg.http_port = n;
    }
    if let Some(n) = port("https-port")? {
        cfg.tls.https_port = n;
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
    if p.bool("log-json") {
        cfg.log_json = true;
    }
    if let Some(f) = p.value("pid-file") {
        cfg.pid_file = Some(f.into());
    }
    if p.bool("enable-script-checks") {
        cfg.enable_script_checks = true;
    }
    if p.bool("enable-local-script-checks") {
        cfg.enable_local_script_checks = true;
    }
    if let Some(k) = p.value("encrypt") {
        cfg.encrypt = Some(k.into());
    }
    for h in p.all("event-handler") {
        let h = crate::handlers::EventScript::parse(h)
            .map_err(|e| Error::Config(format!("flag -event-handler: {e}")))?;
        cfg.event_handlers.push(h);
    }
    Ok(())
}
