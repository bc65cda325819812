//! Recursion: names outside the served domains go to the configured upstream servers.
//!
//! Two guards keep a forwarding loop or a slow upstream from eating the agent:
//! - a recursor that is this agent's own DNS address is dropped when serving starts (each
//!   query would come back as a new query, forwarded again, until file descriptors ran out);
//! - at most `recursor_max_inflight` queries wait for an upstream at once; past that a query
//!   is answered SERVFAIL without asking anyone. A loop through other servers (A forwards to
//!   B, B back to A) then ends after that many hops, and a recursor that never answers holds
//!   that many sockets and buffers at most, each for `recursor_timeout`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use crate::answer::Answer;

/// Largest upstream reply read (hickory's own UDP receive buffer).
const MAX_REPLY: usize = 4096;
/// Warnings about a full recursion limit: at most one per this.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The upstream servers and the limit on queries waiting for them.
pub(crate) struct Recursors {
    addrs: Vec<SocketAddr>,
    timeout: Duration,
    inflight: Semaphore,
    max_inflight: usize,
    /// Milliseconds since `started` of the last "limit reached" warning, plus one (0: never).
    last_warn: AtomicU64,
    started: Instant,
}

impl Recursors {
    pub(crate) fn new(addrs: Vec<SocketAddr>, timeout: Duration, max_inflight: usize) -> Self {
        let max_inflight = max_inflight.clamp(1, Semaphore::MAX_PERMITS);
        Recursors {
            addrs,
            timeout,
            inflight: Semaphore::new(max_inflight),
            max_inflight,
            last_warn: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Drops every recursor that is one of `own` (the addresses this agent's DNS listens
    /// on), with a warning for each.
    pub(crate) fn drop_own(&mut self, own: &[SocketAddr]) {
        self.addrs.retain(|r| {
            let Some(o) = own.iter().find(|o| is_own(*r, **o)) else {
                return true;
            };
            tracing::warn!(
                recursor = %r,
                dns = %o,
                "dns: recursor {r} is this agent's own DNS address; ignoring it (every query \
                 sent there would come back here and be forwarded again)"
            );
            false
        });
        if self.addrs.is_empty() {
            tracing::warn!("dns: no recursor left; names outside the domain are REFUSED");
        }
    }

    /// Asks each recursor in turn; SERVFAIL when none answers in time, or at once when
    /// `recursor_max_inflight` queries are already waiting.
    pub(crate) async fn recurse(&self, q: hickory_proto::op::Query) -> Answer {
        let Ok(_permit) = self.inflight.try_acquire() else {
            self.warn_full();
            return Answer::empty(ResponseCode::ServFail, false);
        };
        let mut m = Message::new();
        m.set_id(rand::random())
            .set_recursion_desired(true)
            .add_query(q);
        let Ok(bytes) = m.to_vec() else {
            return Answer::empty(ResponseCode::ServFail, false);
        };
        for r in &self.addrs {
            let Ok(sock) = UdpSocket::bind(if r.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await
            else {
                continue;
            };
            let exchange = async {
                sock.send_to(&bytes, r).await.ok()?;
                let mut buf = vec![0u8; MAX_REPLY];
                loop {
                    let (n, from) = sock.recv_from(&mut buf).await.ok()?;
                    if from == *r {
                        let reply = Message::from_vec(&buf[..n]).ok()?;
                        if reply.id() == m.id() {
                            return Some(reply);
                        }
                    }
                }
            };
            match tokio::time::timeout(self.timeout, exchange).await {
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
        Answer::empty(ResponseCode::ServFail, false)
    }

    fn warn_full(&self) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_warn.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64)
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                limit = self.max_inflight,
                "dns: {} recursive queries already wait for a recursor; answering SERVFAIL \
                 (a slow recursor, or a forwarding loop back to this agent?)",
                self.max_inflight
            );
        }
    }
}

/// Whether a query sent to `recursor` reaches the DNS server listening on `own`.
fn is_own(recursor: SocketAddr, own: SocketAddr) -> bool {
    if recursor.port() != own.port() {
        return false;
    }
    let (r, o) = (recursor.ip().to_canonical(), own.ip().to_canonical());
    // Sending to 0.0.0.0 or :: reaches this host.
    if r == o || r.is_unspecified() {
        return true;
    }
    match o {
        // Listening on every IPv4 address: any IPv4 address of this host is us.
        IpAddr::V4(v4) if v4.is_unspecified() => r.is_ipv4() && is_local(r),
        // `::` may be dual-stack: any address of this host.
        IpAddr::V6(v6) if v6.is_unspecified() => is_local(r),
        _ => false,
    }
}

/// Whether `ip` is an address of this host: only then can a socket bind to it.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn recognises_its_own_address() {
        let own = a("127.0.0.1:8600");
        assert!(is_own(a("127.0.0.1:8600"), own));
        assert!(is_own(a("0.0.0.0:8600"), own));
        assert!(is_own(a("[::ffff:127.0.0.1]:8600"), own));
        assert!(!is_own(a("127.0.0.1:8601"), own), "another port");
        assert!(
            !is_own(a("127.0.0.2:8600"), own),
            "another loopback address"
        );
        assert!(!is_own(a("192.0.2.1:8600"), own));

        let any = a("0.0.0.0:8600");
        assert!(is_own(a("127.0.0.1:8600"), any));
        assert!(
            is_own(a("127.0.0.53:8600"), any),
            "all of 127/8 is this host"
        );
        assert!(
            !is_own(a("192.0.2.1:8600"), any),
            "not an address of this host"
        );
        assert!(
            !is_own(a("[::1]:8600"), any),
            "an IPv4 socket does not get IPv6"
        );
        assert!(!is_own(a("127.0.0.1:53"), any));

        let any6 = a("[::]:8600");
        assert!(is_own(a("[::1]:8600"), any6));
        assert!(is_own(a("127.0.0.1:8600"), any6));
        assert!(!is_own(a("[2001:db8::1]:8600"), any6));
    }

    #[test]
    fn drops_only_its_own_addresses() {
        let mut r = Recursors::new(
            vec![a("127.0.0.1:8600"), a("127.0.0.1:53"), a("0.0.0.0:8600")],
            Duration::from_secs(1),
            10,
        );
        r.drop_own(&[a("127.0.0.1:8600")]);
        assert_eq!(r.addrs, vec![a("127.0.0.1:53")]);
    }

    #[tokio::test]
    async fn over_the_limit_answers_servfail_at_once() {
        // An upstream that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let r = std::sync::Arc::new(Recursors::new(
            vec![silent.local_addr().expect("addr")],
            Duration::from_secs(30),
            2,
        ));
        let q =
            hickory_proto::op::Query::query("example.org.".parse().expect("name"), RecordType::A);
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let (r, q) = (r.clone(), q.clone());
                tokio::spawn(async move { r.recurse(q).await })
            })
            .collect();
        // Let both take their permit.
        tokio::time::timeout(Duration::from_secs(5), async {
            while r.inflight.available_permits() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("both queries in flight");
        let third = tokio::time::timeout(Duration::from_secs(1), r.recurse(q)).await;
        assert_eq!(third.map(|a| a.code).ok(), Some(ResponseCode::ServFail));
        for w in waiting {
            w.abort();
        }
    }
}
