//! The component configurations the agent builds from its own and passes by value: the
//! server's and the DNS server's, and the address other agents reach this one at.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use muster_dns::DnsConfig;
use muster_server::ServerConfig;

use super::Config;

impl Config {
    /// The address advertised to other agents: `advertise_addr`, else `bind_addr`, else
    /// (when bound to every address) loopback.
    pub fn advertise_ip(&self) -> IpAddr {
        self.advertise_addr
            .unwrap_or(if self.bind_addr.is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                self.bind_addr
            })
    }

    /// The server's configuration: state in `data_dir`, RPC advertised at `rpc_addr`.
    pub fn server_config(&self, data_dir: PathBuf, rpc_addr: SocketAddr) -> ServerConfig {
        let mut sc = ServerConfig::new(
            &self.node_name,
            &self.datacenter,
            data_dir,
            &rpc_addr.to_string(),
        );
        sc.snapshot_threshold = self.raft_snapshot_threshold;
        sc.trailing_logs = self.raft_trailing_logs;
        sc.tombstone_ttl = self.tombstone_ttl;
        sc.rpc_hold_timeout = self.rpc_hold_timeout;
        sc.bind_ip = Some(self.bind_addr);
        sc.coordinate_update_period = self.coordinate_update_period;
        sc.autopilot = self.autopilot.clone();
        sc
    }

    /// The DNS server's configuration: `dns_config` with the domain, datacenter and
    /// recursors filled in.
    pub fn dns_config(&self) -> DnsConfig {
        DnsConfig {
            domain: self.domain.clone(),
            alt_domain: self.alt_domain.clone(),
            datacenter: self.datacenter.clone(),
            node_name: self.node_name.clone(),
            recursors: self.recursors.clone(),
            ..self.dns.clone()
        }
    }
}
