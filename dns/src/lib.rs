//! Muster's DNS interface: a hickory `RequestHandler` answering `.consul` names
//! (`<node>.node.consul`, `[<tag>.]<svc>.service.consul`, SRV, PTR) from the catalog in-process,
//! with Consul's health filtering, shuffling and stale reads.
//!
//! So far only the listener exists: names under the domain answer NXDOMAIN and anything else
//! REFUSED, so the port is open and well-behaved until the record logic lands.

use std::time::Duration;

use hickory_proto::op::{Header, ResponseCode};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use muster_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

/// DNS settings, built by the agent.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The domain served, lower case with a trailing dot (`consul.`).
    pub domain: String,
}

/// Answers DNS queries from the catalog.
pub struct DnsHandler {
    #[allow(dead_code)] // read by the record logic still to come
    server: Server,
    domain: String,
}

impl DnsHandler {
    pub fn new(server: Server, config: DnsConfig) -> Self {
        let mut domain = config.domain.to_ascii_lowercase();
        if !domain.ends_with('.') {
            domain.push('.');
        }
        DnsHandler { server, domain }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let code = match request.request_info() {
            Ok(info) => {
                let name = info.query.name().to_string().to_ascii_lowercase();
                if name == self.domain || name.ends_with(&format!(".{}", self.domain)) {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::Refused
                }
            }
            Err(_) => ResponseCode::FormErr,
        };
        let builder = MessageResponseBuilder::from_message_request(request);
        let msg = builder.error_msg(request.header(), code);
        match response.send_response(msg).await {
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
