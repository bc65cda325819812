//! Muster's DNS interface: a hickory `RequestHandler` answering `.consul` names from the catalog
//! in-process, as Consul does:
//! - `<node>.node[.<dc>].<domain>`: A/AAAA of the node (TXT from its meta);
//! - `[<tag>.]<service>.service[.<dc>].<domain>`: A/AAAA of each healthy instance, SRV when
//!   asked, with the target's address in the additional section;
//! - `_<service>._<tag>[.service][.<dc>].<domain>` (RFC 2782; `_tcp`/`_udp` mean any tag);
//! - `<hex>.addr[.<dc>].<domain>`: the address encoded in the name (SRV targets of services
//!   with their own address).
//!
//! Every name also answers under `alt_domain` when one is set, with SRV targets in the domain
//! that was asked. Instances with any critical check (node checks such as `serfHealth` and
//! maintenance included) are left out, and answers are shuffled on every query. Reads are
//! stale reads (`allow_stale`, bounded by `max_stale`), so DNS keeps answering while Raft
//! elects a leader; a client agent keeps the answers it got for `max_stale` and falls back on
//! them while no server answers. No healthy instance or unknown name: NXDOMAIN; a name with no
//! record of the asked type: NOERROR, empty; both with the SOA (minimum TTL 0) in the
//! authority section. A catalog that cannot be read: SERVFAIL.

mod config;
#[doc(hidden)]
pub mod fuzz;
mod recursor;
mod tcp;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use config::DnsConfig;
use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use muster_server::model::{Consistency, HealthStatus, Node, Query, QueryResult, ServiceHealth};
use muster_server::Server;
use rand::seq::SliceRandom;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use recursor::Recursors;

/// Consul's cap on `udp_answer_limit`: more would not fit 512 bytes reliably.
const MAX_UDP_ANSWER_LIMIT: usize = 8;
/// The UDP payload size our OPT record offers: what hickory's UDP socket reads (RFC 6891's
/// "requestor's payload size" is the largest datagram the sender can take). Answers are cut
/// to the smaller of this and the client's size.
const EDNS_PAYLOAD: u16 = 4096;

/// A served domain: `consul.` or the alt domain.
struct Domain {
    name: Name,
    /// Lower case, with the trailing dot.
    text: String,
}

/// A read result kept between queries.
struct Cached<T> {
    /// The applied index (on a server) at which this was last known current.
    applied: u64,
    /// The index of the data read.
    index: u64,
    /// When a server last confirmed it (client agents).
    fetched: Instant,
    /// When a lookup last used it.
    used: Instant,
    /// A watcher keeps it current (`use_cache`).
    watched: bool,
    value: T,
}

type Cache<T> = Arc<Mutex<HashMap<String, Cached<T>>>>;

/// A watched entry nobody looked up for this long is dropped, and its watcher ends.
const WATCH_IDLE: Duration = Duration::from_secs(600);
/// Longest blocking query a watcher parks on a server.
const WATCH_WAIT: Duration = Duration::from_secs(300);

/// Answers DNS queries from the catalog.
pub struct DnsHandler {
    server: Server,
    /// Healthy instances per service name.
    services: Cache<Arc<Vec<Instance>>>,
    /// Nodes by name.
    nodes: Cache<Option<Node>>,
    /// Every node, for PTR lookups (one entry).
    all_nodes: Cache<Arc<Vec<Node>>>,
    /// The primary domain, then the alt domain if any.
    domains: Vec<Domain>,
    recursors: Recursors,
    config: DnsConfig,
}

/// What a name asks for.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Node(String),
    Service {
        name: String,
        tag: Option<String>,
    },
    Addr(IpAddr),
    Apex,
    /// A reverse lookup of an address.
    Ptr(IpAddr),
}

/// The answer, before it is encoded.
struct Answer {
    code: ResponseCode,
    answers: Vec<Record>,
    additionals: Vec<Record>,
    /// Whether to put the SOA in the authority section (negative answers).
    soa: bool,
}

impl Answer {
    fn empty(code: ResponseCode, soa: bool) -> Self {
        Answer {
            code,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa,
        }
    }

    /// Keeps the first `n` answers, and the additional records of the SRV targets kept.
    fn truncate(&mut self, n: usize) {
        if self.answers.len() <= n {
            return;
        }
        self.answers.truncate(n);
        let targets: Vec<&Name> = self
            .answers
            .iter()
            .filter_map(|r| match r.data() {
                RData::SRV(s) => Some(s.target()),
                _ => None,
            })
            .collect();
        self.additionals.retain(|r| targets.contains(&r.name()));
    }
}

fn domain(text: &str) -> Domain {
    let mut text = text.to_ascii_lowercase();
    if !text.ends_with('.') {
        text.push('.');
    }
    let name = Name::from_str(&text).unwrap_or_else(|_| Name::root());
    Domain { name, text }
}

impl DnsHandler {
    pub fn new(server: Server, config: DnsConfig) -> Self {
        let mut domains = vec![domain(&config.domain)];
        if let Some(alt) = &config.alt_domain {
            domains.push(domain(alt));
        }
        let recursors = Recursors::new(
            config.recursors.clone(),
            config.recursor_timeout,
            config.recursor_max_inflight,
        );
        DnsHandler {
            server,
            services: Cache::default(),
            nodes: Cache::default(),
            all_nodes: Cache::default(),
            domains,
            recursors,
            config,
        }
    }

    /// Splits `name` (lower case, with the trailing dot) into what it asks for and which of
    /// the domains it is in. `None`: not ours; `Some(Err)`: ours, but no such name.
    fn parse(&self, name: &str) -> Option<Result<(Lookup, usize), ()>> {
        if let Some(ip) = name.strip_suffix(".in-addr.arpa.") {
            let octets: Vec<u8> = ip.split('.').rev().filter_map(|o| o.parse().ok()).collect();
            return Some(match octets.as_slice() {
                [a, b, c, d] => Ok((Lookup::Ptr(IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d))), 0)),
                _ => Err(()),
            });
        }
        if let Some(nibbles) = name.strip_suffix(".ip6.arpa.") {
            let hex: String = nibbles.split('.').rev().collect();
            return Some(match (hex.len(), decode_addr(&hex)) {
                (32, Some(ip)) => Ok((Lookup::Ptr(ip), 0)),
                _ => Err(()),
            });
        }
        let (d, rest) = self.domains.iter().enumerate().find_map(|(i, d)| {
            if name == d.text {
                Some((i, None))
            } else {
                Some((i, Some(name.strip_suffix(&d.text)?.strip_suffix('.')?)))
            }
        })?;
        let Some(rest) = rest else {
            return Some(Ok((Lookup::Apex, d)));
        };
        self.parse_labels(rest).map(|r| r.map(|l| (l, d)))
    }

    /// What the labels before the domain ask for.
    fn parse_labels(&self, rest: &str) -> Option<Result<Lookup, ()>> {
        let mut labels: Vec<&str> = rest.split('.').collect();
        // An optional datacenter label after node/service/addr.
        let kinds = ["node", "service", "addr"];
        if labels.len() >= 2
            && kinds.contains(&labels[labels.len() - 2])
            && !kinds.contains(&labels[labels.len() - 1])
        {
            let dc = labels.pop()?;
            if !dc.eq_ignore_ascii_case(&self.config.datacenter) {
                return Some(Err(()));
            }
        }
        // RFC 2782: _svc._tag[.service]
        if labels.first().is_some_and(|l| l.starts_with('_')) {
            if labels.last() == Some(&"service") {
                labels.pop();
            }
            if labels.len() == 2 {
                let name = labels[0].trim_start_matches('_').to_string();
                let tag = labels[1].trim_start_matches('_');
                let tag = (tag != "tcp" && tag != "udp").then(|| tag.to_string());
                return Some(Ok(Lookup::Service { name, tag }));
            }
            return Some(Err(()));
        }
        let kind = labels.pop()?;
        Some(match (kind, labels.as_slice()) {
            ("node", [node]) => Ok(Lookup::Node(node.to_string())),
            ("node", parts) if !parts.is_empty() => Ok(Lookup::Node(parts.join("."))),
            ("service", [svc]) => Ok(Lookup::Service {
                name: svc.to_string(),
                tag: None,
            }),
            ("service", [tag, svc]) => Ok(Lookup::Service {
                name: svc.to_string(),
                tag: Some(tag.to_string()),
            }),
            ("addr", [hex]) => decode_addr(hex).map(Lookup::Addr).ok_or(()),
            _ => Err(()),
        })
    }

    fn soa(&self, d: usize) -> Record {
        let domain = &self.domains[d];
        let ns =
            Name::from_str(&format!("ns.{}", domain.text)).unwrap_or_else(|_| domain.name.clone());
        let mbox = Name::from_str(&format!("hostmaster.{}", domain.text))
            .unwrap_or_else(|_| domain.name.clone());
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        // Minimum TTL 0: resolvers must not cache negative answers.
        Record::from_rdata(
            domain.name.clone(),
            0,
            RData::SOA(SOA::new(ns, mbox, serial, 3600, 600, 86400, 0)),
        )
    }

    fn addr_records(name: &Name, ttl: u32, ip: IpAddr, qtype: RecordType) -> Vec<Record> {
        match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
                vec![Record::from_rdata(name.clone(), ttl, RData::A(A(v4)))]
            }
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                vec![Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(v6)))]
            }
            _ => Vec::new(),
        }
    }

    /// `<name>.<what>.<dc>.<domain>.`
    fn target(&self, name: &str, what: &str, d: usize) -> Option<Name> {
        let text = format!(
            "{name}.{what}.{}.{}",
            self.config.datacenter, self.domains[d].text
        );
        Name::from_str(&text).ok()
    }

    /// The answer and the index of the domain asked (for the SOA).
    async fn answer(&self, qname: &Name, qtype: RecordType) -> (Answer, usize) {
        let name = qname.to_ascii().to_ascii_lowercase();
        let (lookup, d) = match self.parse(&name) {
            None => return (Answer::empty(ResponseCode::Refused, false), 0),
            Some(Err(())) => return (Answer::empty(ResponseCode::NXDomain, true), 0),
            Some(Ok(l)) => l,
        };
        let answer = match self.lookup(lookup, d, qname, qtype).await {
            Ok(mut a) => {
                if a.answers.is_empty() {
                    a.soa = true;
                }
                a
            }
            Err(e) => {
                tracing::debug!(error = %e, %name, "dns: catalog read failed");
                Answer::empty(ResponseCode::ServFail, false)
            }
        };
        (answer, d)
    }

    async fn lookup(
        &self,
        lookup: Lookup,
        d: usize,
        qname: &Name,
        qtype: RecordType,
    ) -> muster_server::Result<Answer> {
        let mut answer = Answer::empty(ResponseCode::NoError, false);
        let nx = Answer::empty(ResponseCode::NXDomain, true);
        match lookup {
            Lookup::Apex => {
                if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    answer.answers.push(self.soa(d));
                }
            }
            Lookup::Addr(ip) => {
                answer.answers = Self::addr_records(qname, self.config.ttl_of("*"), ip, qtype)
            }
            Lookup::Ptr(ip) => {
                let nodes = self
                    .read(&self.all_nodes, "", Query::Nodes, |r| match r {
                        QueryResult::Nodes(n) => Arc::new(n),
                        _ => Arc::default(),
                    })
                    .await?;
                let matching: Vec<&Node> = nodes
                    .iter()
                    .filter(|n| n.address.parse::<IpAddr>().ok() == Some(ip))
                    .collect();
                if matching.is_empty() {
                    return Ok(nx);
                }
                if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                    for n in matching {
                        if let Some(t) = self.target(&n.name, "node", 0) {
                            let rdata = RData::PTR(hickory_proto::rr::rdata::PTR(t));
                            answer.answers.push(Record::from_rdata(
                                qname.clone(),
                                self.config.node_ttl,
                                rdata,
                            ));
                        }
                    }
                }
            }
            Lookup::Node(node) => {
                let q = Query::Node { name: node.clone() };
                let n = self
                    .read(&self.nodes, &node, q, |r| match r {
                        QueryResult::Node(n) => n.map(|(n, _)| n),
                        _ => None,
                    })
                    .await?;
                let Some(ip) = n.as_ref().and_then(|n| n.address.parse::<IpAddr>().ok()) else {
                    return Ok(nx);
                };
                answer.answers = Self::addr_records(qname, self.config.node_ttl, ip, qtype);
                if matches!(qtype, RecordType::TXT | RecordType::ANY) {
                    for (k, v) in n.iter().flat_map(|n| &n.meta) {
                        let txt = RData::TXT(TXT::new(vec![format!("{k}={v}")]));
                        answer.answers.push(Record::from_rdata(
                            qname.clone(),
                            self.config.node_ttl,
                            txt,
                        ));
                    }
                }
            }
            Lookup::Service { name, tag } => {
                let all = self.instances(&name).await?;
                let mut picked: Vec<&Instance> = all
                    .iter()
                    .filter(|i| tag.as_deref().is_none_or(|t| i.tags.iter().any(|x| x == t)))
                    .collect();
                if picked.is_empty() {
                    return Ok(nx);
                }
                let ttl = self.config.ttl_of(&name);
                if qtype == RecordType::SRV {
                    picked.shuffle(&mut rand::rng());
                    for inst in picked {
                        let target = &inst.targets[d.min(inst.targets.len() - 1)];
                        let srv = SRV::new(1, inst.weight, inst.port, target.clone());
                        answer.answers.push(Record::from_rdata(
                            qname.clone(),
                            ttl,
                            RData::SRV(srv),
                        ));
                        let t = if inst.ip.is_ipv4() {
                            RecordType::A
                        } else {
                            RecordType::AAAA
                        };
                        answer
                            .additionals
                            .extend(Self::addr_records(target, ttl, inst.ip, t));
                    }
                    return Ok(answer);
                }
                // Only instances with an address of the asked family can answer.
                picked.retain(|i| match qtype {
                    RecordType::A => i.ip.is_ipv4(),
                    RecordType::AAAA => i.ip.is_ipv6(),
                    _ => true,
                });
                if self.config.weighted_single_answer && !picked.is_empty() {
                    picked = vec![weighted_pick(&picked)];
                } else {
                    picked.shuffle(&mut rand::rng());
                }
                for inst in picked {
                    answer
                        .answers
                        .extend(Self::addr_records(qname, ttl, inst.ip, qtype));
                }
                if self.config.a_record_limit > 0 {
                    answer.truncate(self.config.a_record_limit);
                }
            }
        }
        Ok(answer)
    }

    /// The consistency to read at: stale unless `allow_stale` is off or this server has not
    /// heard from the leader for `max_stale`. On a server, a non-stale mode is settled here
    /// (the barrier), so the local reads that follow may be stale reads.
    async fn mode(&self) -> muster_server::Result<Consistency> {
        if !self.server.is_server() {
            // The server a client agent asks reports how stale it is: see `read`.
            return Ok(if self.config.allow_stale {
                Consistency::Stale
            } else {
                Consistency::Default
            });
        }
        if self.config.allow_stale {
            let meta = self.server.barrier(Consistency::Stale).await?;
            if u128::from(meta.last_contact_ms) <= self.config.max_stale.as_millis() {
                return Ok(Consistency::Stale);
            }
        }
        // Resolvers give up after a few seconds: wait for an election, not for Raft's hold.
        self.server
            .barrier_within(Consistency::Default, Duration::from_secs(1))
            .await?;
        Ok(Consistency::Default)
    }

    /// Reads `q` through `cache` under `key`; `build` turns the result into what is kept.
    ///
    /// On a server, an entry is current while nothing was applied since it was checked, and
    /// stays so while the query's index does not move: most queries cost one atomic load.
    /// On a client agent, each query asks a server for the index first; when no server
    /// answers, an entry younger than `max_stale` is answered with.
    async fn read<T: Clone + Send + 'static>(
        &self,
        cache: &Cache<T>,
        key: &str,
        q: Query,
        build: impl FnOnce(QueryResult) -> T,
    ) -> muster_server::Result<T> {
        let get = |current: &dyn Fn(&mut Cached<T>) -> bool| -> Option<T> {
            let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
            c.get_mut(key)
                .and_then(|e| current(e).then(|| e.value.clone()))
        };
        let cached = self.config.use_cache && !self.server.is_server();
        if cached {
            let now = Instant::now();
            let current = |e: &mut Cached<T>| {
                let age = e.fetched.elapsed();
                let ok = e.watched
                    && age <= self.config.max_stale
                    && (self.config.cache_max_age.is_zero() || age <= self.config.cache_max_age);
                if ok {
                    e.used = now;
                }
                ok
            };
            if let Some(v) = get(&current) {
                return Ok(v);
            }
        }
        let mut mode = self.mode().await?;
        let applied = self.server.applied_index();
        if let Some(a) = applied {
            if let Some(v) = get(&|e| e.applied == a) {
                return Ok(v);
            }
            mode = Consistency::Stale;
        }
        // Only a client agent with `use_cache` keeps the query, for the entry's watcher.
        let q_watch = cached.then(|| q.clone());
        let fresh = async {
            let mut meta = self.server.read_meta(mode, q.clone()).await?;
            if mode == Consistency::Stale
                && applied.is_none()
                && u128::from(meta.last_contact_ms) > self.config.max_stale.as_millis()
            {
                mode = Consistency::Default;
                meta = self.server.read_meta(mode, q.clone()).await?;
            }
            let now = Instant::now();
            let reuse = |e: &mut Cached<T>| {
                // A watched entry found stale is read afresh, which restarts its watcher.
                let same = e.index == meta.index && !e.watched;
                if same {
                    e.applied = applied.unwrap_or(0);
                    e.fetched = now;
                    e.used = now;
                }
                same
            };
            if let Some(v) = get(&reuse) {
                return Ok(v);
            }
            let (result, meta) = self.server.read(mode, q).await?;
            let value = build(result);
            let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
            // Bounds memory against queries for ever new names.
            if c.len() > 4096 {
                c.clear();
            }
            // One watcher per entry: a concurrent miss that read the same index has one.
            let watch = cached
                && !c
                    .get(key)
                    .is_some_and(|e| e.watched && e.index == meta.index);
            let entry = Cached {
                applied: applied.unwrap_or(0),
                index: meta.index,
                fetched: now,
                used: now,
                watched: cached,
                value: value.clone(),
            };
            c.insert(key.to_string(), entry);
            if let Some(q) = q_watch.filter(|_| watch) {
                tokio::spawn(watch_entry(
                    self.server.clone(),
                    cache.clone(),
                    key.to_string(),
                    q,
                    meta.index,
                    self.watch_wait(),
                ));
            }
            Ok(value)
        };
        match fresh.await {
            Ok(v) => Ok(v),
            Err(e) if applied.is_none() => {
                let max = self.config.max_stale;
                get(&|c| c.fetched.elapsed() <= max).ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    /// How long a watcher's blocking query may park: it must come back (and confirm its
    /// entry) well within the ages `read` accepts.
    fn watch_wait(&self) -> Duration {
        let mut wait = WATCH_WAIT.min(self.config.max_stale / 2);
        if !self.config.cache_max_age.is_zero() {
            wait = wait.min(self.config.cache_max_age / 2);
        }
        wait.max(Duration::from_millis(100))
    }

    /// The healthy instances of a service, ready to answer with.
    async fn instances(&self, name: &str) -> muster_server::Result<Arc<Vec<Instance>>> {
        let q = Query::ServiceHealth {
            name: name.to_string(),
        };
        let worst = if self.config.only_passing {
            HealthStatus::Passing
        } else {
            HealthStatus::Warning
        };
        let build = |r: QueryResult| {
            let QueryResult::ServiceHealth(all) = r else {
                return Arc::default();
            };
            let built: Vec<Instance> = all
                .into_iter()
                .filter(|h: &ServiceHealth| h.checks.iter().all(|c| c.status <= worst))
                .filter_map(|h| self.instance(h))
                .collect();
            Arc::new(built)
        };
        self.read(&self.services, name, q, build).await
    }

    fn instance(&self, h: ServiceHealth) -> Option<Instance> {
        let addr = if h.service.address.is_empty() {
            &h.node.address
        } else {
            &h.service.address
        };
        let ip = addr.parse::<IpAddr>().ok()?;
        let warning = h.checks.iter().any(|c| c.status == HealthStatus::Warning);
        let weight = if warning {
            h.service.weight_warning
        } else {
            h.service.weight_passing
        };
        let targets = (0..self.domains.len())
            .map(|d| {
                if h.service.address.is_empty() {
                    self.target(&h.node.name, "node", d)
                } else {
                    self.target(&encode_addr(ip), "addr", d)
                }
            })
            .collect::<Option<Vec<Name>>>()?;
        Some(Instance {
            ip,
            port: h.service.port,
            weight: weight.min(u16::MAX as u32) as u16,
            targets,
            tags: h
                .service
                .tags
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
        })
    }
}

/// Keeps a client agent's cached answer for `key` current (`use_cache`): a blocking query
/// parks on a server until the data behind it changes, and then the entry is dropped, so the
/// next lookup reads it afresh and starts a new watcher. Every return from the query without
/// a change confirms the entry. Ends when the entry goes unused for `WATCH_IDLE`.
async fn watch_entry<T>(
    server: Server,
    cache: Cache<T>,
    key: String,
    q: Query,
    index: u64,
    wait: Duration,
) {
    let lock = || cache.lock().unwrap_or_else(|p| p.into_inner());
    let mine = |e: &Cached<T>| e.watched && e.index == index;
    loop {
        {
            let mut c = lock();
            match c.get(&key) {
                Some(e) if mine(e) && e.used.elapsed() < WATCH_IDLE => {}
                Some(e) if mine(e) => {
                    c.remove(&key);
                    return;
                }
                _ => return,
            }
        }
        match server
            .wait_index(Consistency::Stale, q.clone(), index.max(1), wait)
            .await
        {
            Ok(meta) if meta.index == index => {
                if let Some(e) = lock().get_mut(&key).filter(|e| mine(e)) {
                    e.fetched = Instant::now();
                }
            }
            Ok(_) => {
                let mut c = lock();
                if c.get(&key).is_some_and(mine) {
                    c.remove(&key);
                }
                return;
            }
            // No server: the entry ages until `read` stops answering with it.
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// A healthy service instance, as DNS answers with it.
struct Instance {
    ip: IpAddr,
    port: u16,
    weight: u16,
    /// The SRV target in each served domain.
    targets: Vec<Name>,
    /// Lower case, for case-insensitive tag lookups.
    tags: Vec<String>,
}

/// One instance, with a chance proportional to its weight (uniform when all weigh 0).
fn weighted_pick<'a>(from: &[&'a Instance]) -> &'a Instance {
    let total: u32 = from.iter().map(|i| u32::from(i.weight)).sum();
    if total == 0 {
        return from[rand::random_range(0..from.len())];
    }
    let mut x = rand::random_range(0..total);
    for i in from {
        if x < u32::from(i.weight) {
            return i;
        }
        x -= u32::from(i.weight);
    }
    from[from.len() - 1]
}

/// Drops answers (already shuffled) until the reply fits `max` bytes; true if any was dropped.
/// SRV targets' addresses go with their SRV record.
fn fit_udp(a: &mut Answer, query: hickory_proto::op::Query, max: usize) -> bool {
    let size = |a: &Answer| {
        let mut m = hickory_proto::op::Message::new();
        m.add_query(query.clone());
        m.add_answers(a.answers.iter().cloned());
        m.add_additionals(a.additionals.iter().cloned());
        // Room for the SOA, an OPT record, and how the server encodes names (a few bytes more).
        m.to_vec()
            .map_or(usize::MAX, |v| v.len() + if a.soa { 100 } else { 11 } + 32)
    };
    let mut dropped = false;
    while !a.answers.is_empty() && size(a) > max {
        a.truncate(a.answers.len() - 1);
        dropped = true;
    }
    dropped
}

/// `0a000001` ↔ 10.0.0.1, 32 hex digits for IPv6, as Consul's `.addr.` names.
fn encode_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
        IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
    }
}

fn decode_addr(hex: &str) -> Option<IpAddr> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect();
    match bytes?.as_slice() {
        [a, b, c, d] => Some(IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d))),
        b if b.len() == 16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        // RFC 6891: a query with an OPT record gets one back, ours (version 0, our UDP size,
        // DO copied as RFC 3225 asks); a version we do not speak gets BADVERS.
        let mut badvers = false;
        if let Some(e) = request.edns() {
            let mut ours = Edns::new();
            ours.set_version(0)
                .set_max_payload(EDNS_PAYLOAD)
                .set_dnssec_ok(e.flags().dnssec_ok);
            builder.edns(ours);
            badvers = e.version() > 0;
        }
        let info = if badvers {
            Err(ResponseCode::BADVERS)
        } else if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query
        {
            Err(ResponseCode::NotImp)
        } else {
            match request.request_info() {
                Err(_) => Err(ResponseCode::FormErr),
                Ok(info)
                    if info.query.query_class() != DNSClass::IN
                        && info.query.query_class() != DNSClass::ANY =>
                {
                    Err(ResponseCode::NotImp)
                }
                // Zone transfers are not offered (nor forwarded to recursors).
                Ok(info)
                    if matches!(info.query.query_type(), RecordType::AXFR | RecordType::IXFR) =>
                {
                    Err(ResponseCode::Refused)
                }
                Ok(info) => Ok(info),
            }
        };
        let result = match info {
            Err(code) => {
                header.set_response_code(code);
                response
                    .send_response(builder.build_no_records(header))
                    .await
            }
            Ok(info) => {
                let qname: Name = info.query.name().into();
                let (mut a, d) = self.answer(&qname, info.query.query_type()).await;
                if a.code == ResponseCode::Refused && !self.recursors.is_empty() {
                    let q = info.query.original().clone();
                    a = self.recursors.recurse(q).await;
                    header.set_recursion_available(true);
                }
                if request.protocol() == hickory_proto::xfer::Protocol::Udp {
                    let max = request
                        .edns()
                        .map_or(512, |e| e.max_payload().clamp(512, EDNS_PAYLOAD))
                        as usize;
                    // Consul's udp_answer_limit: for clients that cannot take more than
                    // 512 bytes, a few answers, shuffled, are enough.
                    let limit = self.config.udp_answer_limit.min(MAX_UDP_ANSWER_LIMIT);
                    if max == 512 && limit > 0 && a.answers.len() > limit {
                        a.truncate(limit);
                        if self.config.enable_truncate {
                            header.set_truncated(true);
                        }
                    }
                    if fit_udp(&mut a, info.query.original().clone(), max) {
                        header.set_truncated(true);
                    }
                }
                header.set_authoritative(a.code != ResponseCode::Refused);
                header.set_response_code(a.code);

                let soa = if a.soa { vec![self.soa(d)] } else { Vec::new() };
                let msg = builder.build(
                    header,
                    a.answers.iter(),
                    std::iter::empty(),
                    soa.iter(),
                    a.additionals.iter(),
                );
                response.send_response(msg).await
            }
        };
        match result {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "dns: could not send response");
                let mut h = Header::response_from_request(request.header());
                h.set_response_code(ResponseCode::ServFail);
                h.into()
            }
        }
    }
}

/// Serves DNS on already-bound sockets until `cancel` fires: UDP through hickory's server,
/// TCP through `tcp::serve` (per-client limit and timeouts). Recursors that are the
/// addresses of these sockets are dropped first, with a warning.
pub async fn serve(
    mut handler: DnsHandler,
    udp: UdpSocket,
    tcp: TcpListener,
    cancel: CancellationToken,
) {
    let own: Vec<std::net::SocketAddr> = [udp.local_addr(), tcp.local_addr()]
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    handler.recursors.drop_own(&own);
    let limits = tcp::TcpLimits {
        max_conns_per_client: handler.config.max_conns_per_client,
        timeout: handler.config.tcp_timeout,
        idle_timeout: handler.config.tcp_idle_timeout,
    };
    let handler = Arc::new(handler);
    let mut server = ServerFuture::new(Shared(handler.clone()));
    server.register_socket(udp);
    let tcp = tcp::serve(handler, tcp, limits, cancel.clone());
    let udp = async {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = server.shutdown_gracefully().await;
            }
            r = server.block_until_done() => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "dns server stopped");
                }
            }
        }
    };
    tokio::join!(udp, tcp);
}

/// The handler, shared by hickory's UDP server and our TCP server.
struct Shared(Arc<DnsHandler>);

#[async_trait::async_trait]
impl RequestHandler for Shared {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        self.0.handle_request(request, response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> DnsHandler {
        let cfg = DnsConfig {
            alt_domain: Some("Muster".into()),
            ..DnsConfig::default()
        };
        DnsHandler::new(Server::client(), cfg)
    }

    #[test]
    fn parses_consul_names() {
        let h = handler();
        let p = |n: &str| h.parse(n).map(|r| r.map(|(l, _)| l));
        assert_eq!(
            h.parse("web01.node.dc1.muster."),
            Some(Ok((Lookup::Node("web01".into()), 1))),
            "the alt domain answers the same names"
        );
        assert_eq!(h.parse("muster."), Some(Ok((Lookup::Apex, 1))));
        assert_eq!(
            p("web01.node.consul."),
            Some(Ok(Lookup::Node("web01".into())))
        );
        assert_eq!(
            p("web01.node.dc1.consul."),
            Some(Ok(Lookup::Node("web01".into())))
        );
        assert_eq!(p("web01.node.dc2.consul."), Some(Err(())));
        assert_eq!(
            p("redis.service.consul."),
            Some(Ok(Lookup::Service {
                name: "redis".into(),
                tag: None
            }))
        );
        assert_eq!(
            p("master.redis.service.dc1.consul."),
            Some(Ok(Lookup::Service {
                name: "redis".into(),
                tag: Some("master".into())
            }))
        );
        assert_eq!(
            p("_redis._tcp.service.consul."),
            Some(Ok(Lookup::Service {
                name: "redis".into(),
                tag: None
            }))
        );
        assert_eq!(
            p("_redis._master.consul."),
            Some(Ok(Lookup::Service {
                name: "redis".into(),
                tag: Some("master".into())
            }))
        );
        assert_eq!(
            p("0a000001.addr.dc1.consul."),
            Some(Ok(Lookup::Addr("10.0.0.1".parse().expect("ip"))))
        );
        assert_eq!(p("consul."), Some(Ok(Lookup::Apex)));
        assert_eq!(p("example.com."), None);
        assert_eq!(
            p("4.3.2.10.in-addr.arpa."),
            Some(Ok(Lookup::Ptr("10.2.3.4".parse().expect("ip"))))
        );
        assert_eq!(p("x.y.z.service.consul."), Some(Err(())));
        assert_eq!(
            decode_addr(&encode_addr("fe80::1".parse().expect("ip"))),
            Some("fe80::1".parse().expect("ip"))
        );
    }
}
