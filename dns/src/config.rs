//! `DnsConfig`: what the agent passes to the DNS server, with the defaults in one place.

use std::collections::HashMap;
use std::time::Duration;

/// DNS settings, built by the agent from Consul's `domain`, `alt_domain`, `recursors` and
/// `dns_config` keys.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The domain served (`consul.`).
    pub domain: String,
    /// A second domain answering the same names (Consul's `alt_domain`).
    pub alt_domain: Option<String>,
    /// This agent's datacenter: the only `.<dc>.` label answered.
    pub datacenter: String,
    /// This agent's node: what `_agent` stands for in a prepared query's `Near`.
    pub node_name: String,
    /// Leave out instances with warning checks too.
    pub only_passing: bool,
    /// TTL of node records (Consul's `node_ttl`, default 0).
    pub node_ttl: u32,
    /// TTL of service records: per service name, `*` for the rest (Consul's `service_ttl`).
    pub service_ttl: HashMap<String, u32>,
    /// Upstream servers for names outside the domain, tried in turn; none: REFUSED. Any that
    /// is this agent's own DNS address is dropped when serving starts, with a warning.
    pub recursors: Vec<std::net::SocketAddr>,
    /// How long to wait for each recursor.
    pub recursor_timeout: Duration,
    /// Recursive queries waiting for an upstream at once; past this a query that needs one
    /// is answered SERVFAIL at once. Bounds what a slow recursor or a forwarding loop
    /// through other servers can hold (a socket and a buffer each).
    pub recursor_max_inflight: usize,
    /// Answer from local (possibly stale) state instead of asking the leader.
    pub allow_stale: bool,
    /// How stale an answer may be: past this since the last contact with the leader, ask the
    /// leader; on a client agent, how long answers are kept for when no server answers.
    pub max_stale: Duration,
    /// Answers in a UDP reply to a client without EDNS (capped at 8, as Consul).
    pub udp_answer_limit: usize,
    /// Answers in an A/AAAA/ANY reply, over any transport; 0: no limit.
    pub a_record_limit: usize,
    /// Set TC when `udp_answer_limit` dropped answers (dropping for size always sets it).
    pub enable_truncate: bool,
    /// Answer A/AAAA service lookups with one instance picked by its weight, so that clients
    /// sorting addresses (glibc, RFC 6724) still spread load as the weights say.
    pub weighted_single_answer: bool,
    /// On a client agent, answer from its own cache, which a blocking query per name keeps
    /// current, instead of asking a server on every lookup (Consul's `use_cache`).
    pub use_cache: bool,
    /// With `use_cache`: an answer not confirmed by a server for this long is read afresh;
    /// zero: no limit but `max_stale` (Consul's `cache_max_age`).
    pub cache_max_age: Duration,
    /// DNS-over-TCP connections open at once from one client IP; more are closed as soon as
    /// they are accepted. 0: no limit.
    pub max_conns_per_client: usize,
    /// A TCP client must send its first query, and then each query once its first byte has
    /// arrived, within this; and read each answer within it.
    pub tcp_timeout: Duration,
    /// How long a TCP connection may sit idle between queries before it is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            domain: "consul.".into(),
            alt_domain: None,
            datacenter: "dc1".into(),
            node_name: String::new(),
            only_passing: false,
            node_ttl: 0,
            service_ttl: HashMap::new(),
            recursors: Vec::new(),
            recursor_timeout: Duration::from_secs(2),
            // dnsmasq's dns-forward-max: a busy forwarder rarely has more in flight.
            recursor_max_inflight: 150,
            allow_stale: true,
            // Consul's default: ten years, i.e. any stale answer beats no answer.
            max_stale: Duration::from_secs(10 * 365 * 24 * 3600),
            udp_answer_limit: 3,
            a_record_limit: 0,
            enable_truncate: false,
            weighted_single_answer: false,
            use_cache: false,
            cache_max_age: Duration::ZERO,
            // As the HTTP side's `http_max_conns_per_client`.
            max_conns_per_client: 200,
            // miekg/dns's defaults, which Consul's DNS server runs with: 2 s to read a
            // query or write an answer, 8 s idle between queries.
            tcp_timeout: Duration::from_secs(2),
            tcp_idle_timeout: Duration::from_secs(8),
        }
    }
}

impl DnsConfig {
    pub(crate) fn ttl_of(&self, service: &str) -> u32 {
        self.service_ttl
            .get(service)
            .or_else(|| self.service_ttl.get("*"))
            .copied()
            .unwrap_or(0)
    }
}
