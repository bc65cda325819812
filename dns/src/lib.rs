//! Muster's DNS interface: a hickory `RequestHandler` answering `.consul` names from the catalog
//! in-process, as Consul does:
//! - `<node>.node[.<dc>].<domain>`: A/AAAA of the node (TXT from its meta);
//! - `[<tag>.]<service>.service[.<dc>].<domain>`: A/AAAA of each healthy instance, SRV when
//!   asked, with the target's address in the additional section;
//! - `_<service>._<tag>[.service][.<dc>].<domain>` (RFC 2782; `_tcp`/`_udp` mean any tag);
//! - `<hex>.addr[.<dc>].<domain>`: the address encoded in the name (SRV targets of services
//!   with their own address).
//!
//! Instances with any critical check (node checks such as `serfHealth` and maintenance
//! included) are left out, and answers are shuffled on every query. Reads are stale reads of
//! the local server's state, so DNS keeps answering while Raft elects a leader. No healthy
//! instance or unknown name: NXDOMAIN; a name with no record of the asked type: NOERROR, empty;
//! both with the SOA (minimum TTL 0) in the authority section.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Header, MessageType, OpCode, ResponseCode};
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

/// DNS settings, built by the agent.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The domain served (`consul.`).
    pub domain: String,
    /// This agent's datacenter: the only `.<dc>.` label answered.
    pub datacenter: String,
    /// Leave out instances with warning checks too.
    pub only_passing: bool,
    /// TTL of node records (Consul's `node_ttl`, default 0).
    pub node_ttl: u32,
    /// TTL of service records: per service name, `*` for the rest (Consul's `service_ttl`).
    pub service_ttl: std::collections::HashMap<String, u32>,
    /// Upstream servers for names outside the domain, tried in turn; none: REFUSED.
    pub recursors: Vec<std::net::SocketAddr>,
    /// How long to wait for each recursor.
    pub recursor_timeout: Duration,
}

impl DnsConfig {
    fn ttl_of(&self, service: &str) -> u32 {
        self.service_ttl
            .get(service)
            .or_else(|| self.service_ttl.get("*"))
            .copied()
            .unwrap_or(0)
    }
}

/// Answers DNS queries from the catalog.
pub struct DnsHandler {
    server: Server,
    /// Healthy instances per service name: (applied index last validated at, service index,
    /// instances).
    cache: Mutex<HashMap<String, CachedService>>,
    /// Nodes by name: (applied index read at, node).
    nodes: Mutex<HashMap<String, (u64, Option<Node>)>>,
    domain: Name,
    domain_str: String,
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

impl DnsHandler {
    pub fn new(server: Server, config: DnsConfig) -> Self {
        let mut domain_str = config.domain.to_ascii_lowercase();
        if !domain_str.ends_with('.') {
            domain_str.push('.');
        }
        let domain = Name::from_str(&domain_str).unwrap_or_else(|_| Name::root());
        DnsHandler {
            server,
            cache: Mutex::default(),
            nodes: Mutex::default(),
            domain,
            domain_str,
            config,
        }
    }

    /// Splits `name` (lower case, with the trailing dot) into what it asks for. `None`: not
    /// ours, or not a form we answer.
    fn parse(&self, name: &str) -> Option<Result<Lookup, ()>> {
        if let Some(ip) = name.strip_suffix(".in-addr.arpa.") {
            let octets: Vec<u8> = ip.split('.').rev().filter_map(|o| o.parse().ok()).collect();
            return Some(match octets.as_slice() {
                [a, b, c, d] => Ok(Lookup::Ptr(IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d)))),
                _ => Err(()),
            });
        }
        if let Some(nibbles) = name.strip_suffix(".ip6.arpa.") {
            let hex: String = nibbles.split('.').rev().collect();
            return Some(match (hex.len(), decode_addr(&hex)) {
                (32, Some(ip)) => Ok(Lookup::Ptr(ip)),
                _ => Err(()),
            });
        }
        let rest = if name == self.domain_str {
            return Some(Ok(Lookup::Apex));
        } else {
            name.strip_suffix(&self.domain_str)?.strip_suffix('.')?
        };
        let mut labels: Vec<&str> = rest.split('.').collect();
        // An optional datacenter label after node/service/addr.
        let kinds = ["node", "service", "addr"];
        if labels.len() >= 2
            && kinds.contains(&labels[labels.len() - 2])
            && !kinds.contains(&labels[labels.len() - 1])
        {
            let dc = labels.pop()?;
            if dc != self.config.datacenter.to_ascii_lowercase() {
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

    fn soa(&self) -> Record {
        let ns = Name::from_str(&format!("ns.{}", self.domain_str))
            .unwrap_or_else(|_| self.domain.clone());
        let mbox = Name::from_str(&format!("hostmaster.{}", self.domain_str))
            .unwrap_or_else(|_| self.domain.clone());
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        // Minimum TTL 0: resolvers must not cache negative answers.
        Record::from_rdata(
            self.domain.clone(),
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

    async fn answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        let name = qname.to_ascii().to_ascii_lowercase();
        let nx = |soa| Answer {
            code: ResponseCode::NXDomain,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa,
        };
        let lookup = match self.parse(&name) {
            None => {
                return Answer {
                    code: ResponseCode::Refused,
                    answers: Vec::new(),
                    additionals: Vec::new(),
                    soa: false,
                }
            }
            Some(Err(())) => return nx(true),
            Some(Ok(l)) => l,
        };
        let mut answer = Answer {
            code: ResponseCode::NoError,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa: false,
        };
        match lookup {
            Lookup::Apex => {
                if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    answer.answers.push(self.soa());
                } else {
                    answer.soa = true;
                }
            }
            Lookup::Addr(ip) => {
                answer.answers = Self::addr_records(qname, self.config.ttl_of("*"), ip, qtype)
            }
            Lookup::Ptr(ip) => {
                let nodes = match self.server.read(Consistency::Stale, Query::Nodes).await {
                    Ok((QueryResult::Nodes(n), _)) => n,
                    _ => Vec::new(),
                };
                let matching: Vec<&Node> = nodes
                    .iter()
                    .filter(|n| n.address.parse::<IpAddr>().ok() == Some(ip))
                    .collect();
                if matching.is_empty() {
                    return nx(true);
                }
                if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                    for n in matching {
                        let target = format!(
                            "{}.node.{}.{}",
                            n.name, self.config.datacenter, self.domain_str
                        );
                        if let Ok(t) = Name::from_str(&target) {
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
                let Some(n) = self.node(&node).await else {
                    return nx(true);
                };
                let Ok(ip) = n.address.parse::<IpAddr>() else {
                    return nx(true);
                };
                answer.answers = Self::addr_records(qname, self.config.node_ttl, ip, qtype);
                if matches!(qtype, RecordType::TXT | RecordType::ANY) {
                    for (k, v) in &n.meta {
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
                let all = self.instances(&name).await;
                let mut picked: Vec<&Instance> = all
                    .iter()
                    .filter(|i| tag.as_deref().is_none_or(|t| i.tags.iter().any(|x| x == t)))
                    .collect();
                if picked.is_empty() {
                    return nx(true);
                }
                picked.shuffle(&mut rand::rng());
                let ttl = self.config.ttl_of(&name);
                for inst in picked {
                    if qtype == RecordType::SRV {
                        let srv = SRV::new(1, inst.weight, inst.port, inst.target.clone());
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
                        answer.additionals.extend(Self::addr_records(
                            &inst.target,
                            ttl,
                            inst.ip,
                            t,
                        ));
                    } else {
                        answer
                            .answers
                            .extend(Self::addr_records(qname, ttl, inst.ip, qtype));
                    }
                }
            }
        }
        if answer.answers.is_empty() {
            answer.soa = true;
        }
        answer
    }

    /// Asks each recursor in turn; SERVFAIL when none answers in time.
    async fn recurse(&self, q: hickory_proto::op::Query) -> Answer {
        let mut m = hickory_proto::op::Message::new();
        m.set_id(rand::random())
            .set_recursion_desired(true)
            .add_query(q);
        let Ok(bytes) = m.to_vec() else {
            return Answer {
                code: ResponseCode::ServFail,
                answers: Vec::new(),
                additionals: Vec::new(),
                soa: false,
            };
        };
        for r in &self.config.recursors {
            let Ok(sock) = UdpSocket::bind(if r.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await
            else {
                continue;
            };
            let exchange = async {
                sock.send_to(&bytes, r).await.ok()?;
                let mut buf = vec![0u8; 4096];
                loop {
                    let (n, from) = sock.recv_from(&mut buf).await.ok()?;
                    if from == *r {
                        let reply = hickory_proto::op::Message::from_vec(&buf[..n]).ok()?;
                        if reply.id() == m.id() {
                            return Some(reply);
                        }
                    }
                }
            };
            match tokio::time::timeout(self.config.recursor_timeout, exchange).await {
                Ok(Some(reply)) => {
                    return Answer {
                        code: reply.response_code(),
                        answers: reply.answers().to_vec(),
                        additionals: reply
                            .additionals()
                            .iter()
                            .filter(|r| r.record_type() != RecordType::OPT)
                            .cloned()
                            .collect(),
                        soa: false,
                    }
                }
                _ => tracing::debug!(recursor = %r, "dns: recursor did not answer"),
            }
        }
        Answer {
            code: ResponseCode::ServFail,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa: false,
        }
    }

    async fn node(&self, name: &str) -> Option<Node> {
        let applied = self.server.applied_index();
        if let (Some(a), Some((seen, n))) = (
            applied,
            self.nodes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name),
        ) {
            if *seen == a {
                return n.clone();
            }
        }
        let node = match self
            .server
            .read(
                Consistency::Stale,
                Query::Node {
                    name: name.to_string(),
                },
            )
            .await
        {
            Ok((QueryResult::Node(n), _)) => n.map(|(n, _)| n),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "dns: node lookup failed");
                return None;
            }
        };
        if let Some(a) = applied {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            if nodes.len() > 4096 {
                nodes.clear();
            }
            nodes.insert(name.to_string(), (a, node.clone()));
        }
        node
    }

    /// The healthy instances of a service, ready to answer with; rebuilt only when the
    /// service's index moves (one index read per query otherwise).
    async fn instances(&self, name: &str) -> Arc<Vec<Instance>> {
        // Nothing was applied since this entry was last checked: it is current.
        let applied = self.server.applied_index();
        if let (Some(a), Some((seen, _, v))) = (
            applied,
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name),
        ) {
            if *seen == a {
                return v.clone();
            }
        }
        let q = Query::ServiceHealth {
            name: name.to_string(),
        };
        let index = match self.server.read_meta(Consistency::Stale, q.clone()).await {
            Ok(m) => m.index,
            Err(e) => {
                tracing::debug!(error = %e, "dns: service lookup failed");
                return Arc::default();
            }
        };
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((seen, i, v)) = cache.get_mut(name) {
                if *i == index {
                    *seen = applied.unwrap_or(0);
                    return v.clone();
                }
            }
        }
        let (all, index) = match self.server.read(Consistency::Stale, q).await {
            Ok((QueryResult::ServiceHealth(v), meta)) => (v, meta.index),
            Ok(_) => (Vec::new(), index),
            Err(e) => {
                tracing::debug!(error = %e, "dns: service lookup failed");
                return Arc::default();
            }
        };
        let worst = if self.config.only_passing {
            HealthStatus::Passing
        } else {
            HealthStatus::Warning
        };
        let built: Vec<Instance> = all
            .into_iter()
            .filter(|h: &ServiceHealth| h.checks.iter().all(|c| c.status <= worst))
            .filter_map(|h| {
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
                let target = if h.service.address.is_empty() {
                    format!(
                        "{}.node.{}.{}",
                        h.node.name, self.config.datacenter, self.domain_str
                    )
                } else {
                    format!(
                        "{}.addr.{}.{}",
                        encode_addr(ip),
                        self.config.datacenter,
                        self.domain_str
                    )
                };
                Some(Instance {
                    ip,
                    port: h.service.port,
                    weight: weight.min(u16::MAX as u32) as u16,
                    target: Name::from_str(&target).ok()?,
                    tags: h
                        .service
                        .tags
                        .iter()
                        .map(|t| t.to_ascii_lowercase())
                        .collect(),
                })
            })
            .collect();
        let built = Arc::new(built);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(
            name.to_string(),
            (applied.unwrap_or(0), index, built.clone()),
        );
        built
    }
}

/// (applied index last validated at, service index, healthy instances).
type CachedService = (u64, u64, Arc<Vec<Instance>>);

/// A healthy service instance, as DNS answers with it.
struct Instance {
    ip: IpAddr,
    port: u16,
    weight: u16,
    target: Name,
    /// Lower case, for case-insensitive tag lookups.
    tags: Vec<String>,
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
        if let Some(last) = a.answers.pop() {
            if let RData::SRV(srv) = last.data() {
                let target = srv.target().clone();
                a.additionals.retain(|r| r.name() != &target);
            }
        }
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
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        let result = if request.message_type() != MessageType::Query
            || request.op_code() != OpCode::Query
        {
            header.set_response_code(ResponseCode::NotImp);
            response
                .send_response(builder.build_no_records(header))
                .await
        } else {
            match request.request_info() {
                Err(_) => {
                    header.set_response_code(ResponseCode::FormErr);
                    response
                        .send_response(builder.build_no_records(header))
                        .await
                }
                Ok(info)
                    if info.query.query_class() != DNSClass::IN
                        && info.query.query_class() != DNSClass::ANY =>
                {
                    header.set_response_code(ResponseCode::NotImp);
                    response
                        .send_response(builder.build_no_records(header))
                        .await
                }
                Ok(info) => {
                    let qname: Name = info.query.name().into();
                    let mut a = self.answer(&qname, info.query.query_type()).await;
                    if a.code == ResponseCode::Refused && !self.config.recursors.is_empty() {
                        let q = info.query.original().clone();
                        a = self.recurse(q).await;
                        header.set_recursion_available(true);
                    }
                    if request.protocol() == hickory_proto::xfer::Protocol::Udp {
                        let max = request.edns().map_or(512, |e| e.max_payload().max(512)) as usize;
                        if fit_udp(&mut a, info.query.original().clone(), max) {
                            header.set_truncated(true);
                        }
                    }
                    header.set_authoritative(a.code != ResponseCode::Refused);
                    header.set_response_code(a.code);

                    let soa = if a.soa { vec![self.soa()] } else { Vec::new() };
                    let msg = builder.build(
                        header,
                        a.answers.iter(),
                        std::iter::empty(),
                        soa.iter(),
                        a.additionals.iter(),
                    );
                    response.send_response(msg).await
                }
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

/// Serves DNS on already-bound sockets until `cancel` fires.
pub async fn serve(
    handler: DnsHandler,
    udp: UdpSocket,
    tcp: TcpListener,
    cancel: CancellationToken,
) {
    let mut server = ServerFuture::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> DnsHandler {
        let cfg = DnsConfig {
            domain: "consul".into(),
            datacenter: "dc1".into(),
            only_passing: false,
            node_ttl: 0,
            service_ttl: Default::default(),
            recursors: Vec::new(),
            recursor_timeout: Duration::from_secs(2),
        };
        DnsHandler::new(Server::client(), cfg)
    }

    #[test]
    fn parses_consul_names() {
        let h = handler();
        let p = |n: &str| h.parse(n);
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
