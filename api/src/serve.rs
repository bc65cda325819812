//! Serving the router on a TCP listener, with the limits a hostile client meets: a deadline
//! for each request head (which also closes idle kept-alive connections and slowloris
//! clients), Consul's per-client-IP connection limit (extra connections get a 429 and are
//! closed at once), a pause instead of a busy loop when accept fails (out of descriptors),
//! and a plain-text reason on the 400, 414 and 431 answers hyper writes on its own. HTTPS
//! ([`serve_tls`]) has the same limits and a deadline for the TLS handshake, which runs on the
//! connection's task, so a slow handshake holds up no one else.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Connection limits of the HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Most concurrent connections from one client IP; 0 for none (Consul's
    /// `limits.http_max_conns_per_client`, 200).
    pub max_conns_per_client: usize,
    /// How long a client may take to send a request's line and headers, counted from the
    /// moment the server waits for them: on a kept-alive connection, from the end of the
    /// previous response. A connection past it is closed.
    pub read_header_timeout: Duration,
    /// How long an HTTPS client may take over its TLS handshake (Consul's
    /// `limits.https_handshake_timeout`, 5 s); the head deadline starts after it.
    pub https_handshake_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_conns_per_client: 200,
            read_header_timeout: Duration::from_secs(30),
            https_handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// Largest request head (request line and headers), and most header fields; hyper's own
/// defaults, named here so the 431 can say them.
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
const MAX_HEADERS: usize = 100;
/// hyper's fixed limit on the request target.
const MAX_URI_BYTES: usize = u16::MAX as usize - 1;

const TOO_MANY_CONNS: &str =
    "Your IP is issuing too many concurrent connections, please rate limit your calls\n";

/// Serves `app` on `listener` until `shutdown`, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    serve_with(listener, app, limits, None, shutdown).await
}

/// [`serve`] over TLS with `tls` (HTTPS). The config's certificate resolver is asked at each
/// handshake, so a certificate it replaces is used by new connections only.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve_with(listener, app, limits, Some(acceptor), shutdown).await
}

async fn serve_with(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let per_ip = PerIp::default();
    let mut conns = JoinSet::new();
    let mut last_warn: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, most likely: say so now and then, and let closing
                    // connections free some instead of spinning on accept.
                    if warn_due(&mut last_warn) {
                        tracing::error!(error = %e, "HTTP accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = per_ip.take(peer.ip(), limits.max_conns_per_client) else {
            if warn_due(&mut last_warn) {
                tracing::warn!(client = %peer, limit = limits.max_conns_per_client,
                    "too many concurrent HTTP connections from one client; answering 429");
            }
            // Over TLS the refusal would need a handshake first: just close.
            if tls.is_none() {
                conns.spawn(refuse(stream));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (builder, app, stop) = (builder.clone(), app.clone(), shutdown.clone());
        let tls = tls.clone();
        let deadline = limits.https_handshake_timeout;
        conns.spawn(async move {
            let _slot = slot;
            let Some(acceptor) = tls else {
                return serve_conn(builder, stream, app, stop, peer).await;
            };
            match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_conn(builder, stream, app, stop, peer).await,
                Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
            }
        });
    }
    while conns.join_next().await.is_some() {}
}

/// Serves HTTP on one connection until it closes, or gracefully once `stop` fires.
async fn serve_conn<S>(
    builder: hyper::server::conn::http1::Builder,
    stream: S,
    app: Router,
    stop: CancellationToken,
    peer: std::net::SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(ErrorBodies::new(stream));
    let svc = TowerToHyperService::new(app);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = r {
        tracing::debug!(client = %peer, error = %e, "HTTP connection ended");
    }
}

/// Whether a rate-limited warning may be logged now (at most one a second).
fn warn_due(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
        return false;
    }
    *last = Some(now);
    true
}

/// Answers a connection over the per-client limit with Consul's 429 and closes it.
async fn refuse(mut stream: TcpStream) {
    let reply = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{TOO_MANY_CONNS}",
        TOO_MANY_CONNS.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Open connections per client IP.
#[derive(Clone, Default)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One counted connection; dropping it gives the slot back.
struct Slot {
    per_ip: PerIp,
    ip: IpAddr,
}

impl PerIp {
    fn take(&self, ip: IpAddr, limit: usize) -> Option<Slot> {
        let mut m = muster_server::sync::lock(&self.0);
        let n = m.entry(ip).or_default();
        if limit > 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            per_ip: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = muster_server::sync::lock(&self.per_ip.0);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A connection whose bodiless error answers from hyper itself (a request it could not parse:
/// 400, 414, 431) are rewritten with a plain-text reason. hyper writes such an answer as one
/// head ending the connection, with `content-length: 0`; our own handlers never send a 4xx
/// without a body, so nothing else matches.
struct ErrorBodies<S> {
    inner: S,
    /// A rewritten answer and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> ErrorBodies<S> {
    fn new(inner: S) -> Self {
        ErrorBodies {
            inner,
            pending: None,
        }
    }
}

/// The answer to send instead of `head`, if `head` is one of hyper's bodiless error answers.
fn with_reason(head: &[u8]) -> Option<Vec<u8>> {
    if !(head.starts_with(b"HTTP/1.") && head.ends_with(b"\r\n\r\n")) {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let status_line = text.split("\r\n").next()?;
    let reason = match status_line.get(9..12)? {
        "400" => "Bad request: the request line or a header is malformed".to_string(),
        "414" => format!("URI too long: the request target is over {MAX_URI_BYTES} bytes"),
        "431" => format!(
            "Request header fields too large: the request line and headers are over \
             {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} fields"
        ),
        _ => return None,
    };
    // Exactly one head, without a body: hyper's own answer.
    let lower = text.to_ascii_lowercase();
    if !lower.contains("\r\ncontent-length: 0\r\n") || text.matches("\r\n\r\n").count() != 1 {
        return None;
    }
    let body = format!("{reason}\n");
    Some(
        format!(
            "{status_line}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> ErrorBodies<S> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((buf, done)) = &mut self.pending {
            if *done == buf.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ErrorBodies<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ErrorBodies<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(replacement) = with_reason(buf) {
            // The whole head counts as written; the replacement goes out now or on flush.
            self.pending = Some((replacement, 0));
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    // Vectored writes pass through, so hyper hands head and body over in one call instead of
    // copying them into one buffer first: over TLS, rustls seals them as one record. hyper's
    // own error answers are a lone head, written with a single slice, so they still match.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let [one] = bufs {
            return self.poll_write(cx, one);
        }
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_hypers_bodiless_errors_a_reason() {
        let head =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(with_reason(head).expect("rewritten")).expect("utf8");
        assert!(out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(out.ends_with("over 417792 bytes or 100 fields\n"), "{out}");
        let len: usize = out
            .split("content-length: ")
            .nth(1)
            .and_then(|r| r.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .expect("length");
        assert_eq!(len, out.split("\r\n\r\n").nth(1).expect("body").len());
        // Answers with a body, other codes and partial writes pass untouched.
        assert!(with_reason(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\n").is_none());
        assert!(with_reason(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(with_reason(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n").is_none());
    }

    #[test]
    fn counts_connections_per_client_ip() {
        let per_ip = PerIp::default();
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let s1 = per_ip.take(a, 2).expect("first");
        let _s2 = per_ip.take(a, 2).expect("second");
        assert!(per_ip.take(a, 2).is_none());
        assert!(per_ip.take(b, 2).is_some());
        drop(s1);
        assert!(per_ip.take(a, 2).is_some());
        assert!(per_ip.take(a, 0).is_some(), "0 is no limit");
    }
}
