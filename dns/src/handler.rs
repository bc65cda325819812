//! [`DnsHandler`]: hickory's `RequestHandler` for our names (checks the request, reads the
//! catalog, builds and cuts the answer, or hands names outside our domains to the
//! recursors), and [`serve`], which runs it on the agent's UDP socket and TCP listener.

use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use muster_server::acl::{Resolver, Resource};
use muster_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::answer::{soa, Answer, Question};
use crate::metrics::DnsMetrics;
use crate::name::{Lookup, Names};
use crate::prepared;
use crate::read::Reader;
use crate::recursor::Recursors;
use crate::{tcp, DnsConfig};

/// Consul's cap on `udp_answer_limit`: more would not fit 512 bytes reliably.
const MAX_UDP_ANSWER_LIMIT: usize = 8;
/// The UDP payload size our OPT record offers: what hickory's UDP socket reads (RFC 6891's
/// "requestor's payload size" is the largest datagram the sender can take). Answers are cut
/// to the smaller of this and the client's size.
const EDNS_PAYLOAD: u16 = 4096;

/// Answers DNS queries from the catalog.
pub struct DnsHandler {
    reader: Reader,
    /// For prepared queries, which are run afresh on every lookup.
    server: Server,
    names: Names,
    recursors: Recursors,
    config: DnsConfig,
    /// ACLs: names are answered only if the agent's `default` token may read them.
    acl: Option<Arc<Resolver>>,
    /// Queries by type and code, and their latency.
    metrics: Arc<DnsMetrics>,
}

impl DnsHandler {
    pub fn new(server: Server, config: DnsConfig) -> Self {
        let recursors = Recursors::new(
            config.recursors.clone(),
            config.recursor_timeout,
            config.recursor_max_inflight,
        );
        DnsHandler {
            reader: Reader::new(server.clone(), config.clone()),
            server,
            names: Names::new(&config),
            recursors,
            config,
            acl: None,
            metrics: Arc::default(),
        }
    }

    /// What this handler counts, for the agent's metrics registry.
    pub fn metrics(&self) -> Arc<DnsMetrics> {
        self.metrics.clone()
    }

    /// Answers only what the agent's `default` token may read (`resolver`'s settings).
    pub fn with_acl(mut self, resolver: Arc<Resolver>) -> Self {
        self.acl = Some(resolver);
        self
    }

    /// The answer and the index of the domain asked (for the SOA).
    async fn answer(&self, qname: &Name, qtype: RecordType) -> (Answer, usize) {
        let name = qname.to_ascii().to_ascii_lowercase();
        let (lookup, d) = match self.names.parse(&name) {
            None => return (Answer::empty(ResponseCode::Refused, false), 0),
            Some(Err(())) => return (Answer::empty(ResponseCode::NXDomain, true), 0),
            Some(Ok(l)) => l,
        };
        let q = Question { qname, qtype, d };
        let answer = match self.lookup(lookup, &q).await {
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

    /// Reads what `lookup` needs from the catalog and answers `q` with it.
    async fn lookup(&self, lookup: Lookup, q: &Question<'_>) -> muster_server::Result<Answer> {
        let authz = crate::acl::default_authorizer(self.acl.as_deref()).await;
        Ok(match lookup {
            Lookup::Apex => Answer::apex(self.names.domain(q.d), q.qtype),
            Lookup::Addr(ip) => Answer::addr(q, self.config.ttl_of("*"), ip),
            Lookup::Ptr(ip) => {
                let nodes = crate::acl::readable_nodes(&authz, self.reader.all_nodes().await?);
                Answer::ptr(q, &nodes, ip, &self.names, self.config.node_ttl)
            }
            Lookup::Node(node) => {
                let n = self.reader.node(&node).await?;
                let n = n.filter(|n| crate::acl::may_read(&authz, Resource::Node, &n.name));
                Answer::node(q, n.as_ref(), self.config.node_ttl)
            }
            Lookup::Service { name, tag } => {
                let all = if crate::acl::may_read(&authz, Resource::Service, &name) {
                    self.reader.instances(&name, &self.names).await?
                } else {
                    Default::default()
                };
                Answer::service(q, &name, tag.as_deref(), &all, &self.config)
            }
            Lookup::Query(name) => {
                let acl = self.acl.as_deref();
                prepared::lookup(&self.server, acl, &self.config, &self.names, q, &name).await?
            }
        })
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let info = self.respond(request, response).await;
        let qtype = request.queries().first().map(|q| q.query_type());
        self.metrics
            .observe(qtype, info.response_code(), started.elapsed());
        info
    }
}

impl DnsHandler {
    /// Answers one request (see the module's doc).
    async fn respond<R: ResponseHandler>(
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
                    if a.fit_udp(info.query.original().clone(), max) {
                        header.set_truncated(true);
                    }
                }
                header.set_authoritative(a.code != ResponseCode::Refused);
                header.set_response_code(a.code);

                let soa = if a.soa {
                    vec![soa(self.names.domain(d))]
                } else {
                    Vec::new()
                };
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
