//! DNS over TCP, with the bounds hickory's listener lacks: a limit on connections per client
//! IP, and timeouts on every read and write (hickory's only resets when a whole message
//! arrives, and accepts as many connections as come).
//!
//! - A client has `tcp_timeout` to send its first query after connecting, and to send the
//!   rest of any query once its first byte arrived (slowloris ends there).
//! - Between queries a connection may idle for `tcp_idle_timeout`.
//! - An answer the client does not read within `tcp_timeout` closes the connection; one
//!   query is answered at a time, so a client that only writes holds one answer at most.
//! - Past `max_conns_per_client` connections from one IP, new ones are closed on accept.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Header, MessageType, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_proto::xfer::Protocol;
use hickory_server::authority::{MessageRequest, MessageResponse};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A warning about a client at its connection limit: at most one per this.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The bounds on TCP clients (from `DnsConfig`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    pub(crate) max_conns_per_client: usize,
    pub(crate) timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// Open connections per client IP.
#[derive(Default)]
struct Clients {
    open: HashMap<IpAddr, usize>,
    last_warn: Option<Instant>,
}

/// A connection's place in `Clients`, given back when the connection ends.
struct Slot {
    clients: Arc<Mutex<Clients>>,
    ip: IpAddr,
}

impl Slot {
    fn take(clients: &Arc<Mutex<Clients>>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut c = muster_server::sync::lock(clients);
        let n = c.open.entry(ip).or_insert(0);
        if max > 0 && *n >= max {
            if c.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                c.last_warn = Some(Instant::now());
                tracing::warn!(
                    client = %ip,
                    limit = max,
                    "dns: {ip} already has {max} TCP connections open (max_conns_per_client); \
                     closing new ones"
                );
            }
            return None;
        }
        *n += 1;
        Some(Slot {
            clients: clients.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = muster_server::sync::lock(&self.clients);
        if let Some(n) = c.open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.open.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` until `cancel` fires, then waits for open ones to end
/// (each ends within its timeouts, or at once on `cancel` while it waits for a query).
pub(crate) async fn serve<H: RequestHandler>(
    handler: Arc<H>,
    listener: TcpListener,
    limits: TcpLimits,
    cancel: CancellationToken,
) {
    let clients = Arc::new(Mutex::new(Clients::default()));
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "dns: TCP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Over the limit: dropping the stream closes it.
        let Some(slot) = Slot::take(&clients, peer.ip(), limits.max_conns_per_client) else {
            continue;
        };
        tracker.spawn(connection(
            handler.clone(),
            stream,
            peer,
            limits,
            cancel.clone(),
            slot,
        ));
    }
    tracker.close();
    tracker.wait().await;
}

/// Answers the queries of one connection, one at a time, until the client closes it, breaks
/// a timeout, or `cancel` fires.
async fn connection<H: RequestHandler>(
    handler: Arc<H>,
    mut stream: TcpStream,
    peer: SocketAddr,
    limits: TcpLimits,
    cancel: CancellationToken,
    _slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    let reply = Reply::default();
    let mut msg = Vec::new();
    // The first query must come promptly; later ones may wait the idle time.
    let mut wait = limits.timeout;
    loop {
        let mut len = [0u8; 2];
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(wait, stream.read(&mut len[..1])) => r,
        };
        if !matches!(first, Ok(Ok(1))) {
            // Closed, failed, or silent for too long.
            return;
        }
        let rest = async {
            stream.read_exact(&mut len[1..]).await?;
            msg.resize(usize::from(u16::from_be_bytes(len)), 0);
            stream.read_exact(&mut msg).await
        };
        if !matches!(tokio::time::timeout(limits.timeout, rest).await, Ok(Ok(_))) {
            tracing::debug!(client = %peer, "dns: TCP query not received in time; closing");
            return;
        }
        wait = limits.idle_timeout;
        let Some(frame) = answer(handler.as_ref(), &msg, peer, &reply).await else {
            continue;
        };
        let sent = tokio::time::timeout(limits.timeout, stream.write_all(&frame)).await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!(client = %peer, "dns: TCP answer not taken in time; closing");
            return;
        }
    }
}

/// The framed answer to `msg`, if it gets one: a query is answered by the handler, a
/// message with a readable header but a bad body gets FORMERR (as hickory's UDP side does),
/// anything else (a response, fewer than 12 bytes) nothing.
async fn answer<H: RequestHandler>(
    handler: &H,
    msg: &[u8],
    peer: SocketAddr,
    reply: &Reply,
) -> Option<Vec<u8>> {
    match MessageRequest::read(&mut BinDecoder::new(msg)) {
        Ok(m) if m.message_type() == MessageType::Query => {
            let request = Request::new(m, peer, Protocol::Tcp);
            handler.handle_request(&request, reply.clone()).await;
            let mut out = muster_server::sync::lock(&reply.0);
            out.take()
        }
        Ok(_) => None,
        Err(_) => {
            let header = Header::read(&mut BinDecoder::new(msg)).ok()?;
            if header.message_type() != MessageType::Query {
                return None;
            }
            let mut h = Header::response_from_request(&header);
            h.set_response_code(ResponseCode::FormErr);
            let mut buf = Vec::with_capacity(14);
            h.emit(&mut BinEncoder::new(&mut buf)).ok()?;
            Some(frame(&buf))
        }
    }
}

/// `msg` with its two-byte length in front.
fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Where the handler's answer to one TCP query is left for the connection to write: the
/// connection writes it itself, under its write timeout.
#[derive(Clone, Default)]
struct Reply(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Reply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> std::io::Result<ResponseInfo> {
        let id = response.header().id();
        let mut buf = Vec::with_capacity(512);
        let mut enc = BinEncoder::new(&mut buf);
        enc.set_max_size(u16::MAX);
        let info = match response.destructive_emit(&mut enc) {
            Ok(info) => info,
            Err(e) => {
                tracing::error!(error = %e, "dns: could not encode an answer; SERVFAIL");
                buf.clear();
                let mut h = Header::new();
                h.set_id(id)
                    .set_message_type(MessageType::Response)
                    .set_response_code(ResponseCode::ServFail);
                h.emit(&mut BinEncoder::new(&mut buf))
                    .map_err(std::io::Error::other)?;
                h.into()
            }
        };
        *muster_server::sync::lock(&self.0) = Some(frame(&buf));
        Ok(info)
    }
}
