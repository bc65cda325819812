//! DNS against clients and upstreams that misbehave, over real UDP and TCP sockets against real
//! agents: zone transfers and EDNS versions, TCP clients that connect and say nothing or
//! open too many connections, recursors that loop back to the agent or never answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use muster_tests::*;
use serde_json::json;

/// A query; with `edns`, an OPT record of that version offering that many bytes, DO as given.
fn query(name: &str, qtype: RecordType, edns: Option<(u8, u16, bool)>) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name).expect("name"), qtype));
    if let Some((version, size, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_version(version)
            .set_max_payload(size)
            .set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
}

fn udp_bytes(addr: SocketAddr, q: &[u8]) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.send_to(q, addr).expect("send");
    let mut buf = [0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).expect("reply");
    Message::from_vec(&buf[..n]).expect("decode")
}

fn udp(addr: SocketAddr, name: &str, qtype: RecordType, edns: Option<(u8, u16, bool)>) -> Message {
    udp_bytes(addr, &query(name, qtype, edns))
}

/// One query and its answer over an open TCP connection.
fn tcp_on(s: &mut TcpStream, q: &[u8]) -> std::io::Result<Message> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    s.write_all(&framed)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    Message::from_vec(&buf).map_err(std::io::Error::other)
}

fn tcp(addr: SocketAddr, name: &str, qtype: RecordType, edns: Option<(u8, u16, bool)>) -> Message {
    let mut s = TcpStream::connect(addr).expect("connect");
    tcp_on(&mut s, &query(name, qtype, edns)).expect("tcp answer")
}

fn ips(m: &Message) -> Vec<String> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

async fn register(a: &Agent, v: serde_json::Value) {
    let r = put(&a.url("/v1/catalog/register"), v.to_string().as_bytes())
        .await
        .expect("register");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The agent's resident set size in KiB, from /proc.
fn rss_kib(a: &Agent) -> u64 {
    let pid = a.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// How long until the peer closes `s` (a read returns 0 or fails), at most `within`.
fn closed_after(mut s: TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => Some(start.elapsed()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(start.elapsed()),
        _ => None,
    }
}

/// A UDP upstream that reads every query and never answers; counts what it got.
fn silent_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = s.local_addr().expect("addr");
    let got = Arc::new(AtomicUsize::new(0));
    let count = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while s.recv_from(&mut buf).is_ok() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread")]
async fn zone_transfers_refused_and_edns_answered_with_opt() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "edns", &[]).await?;
    let dns = a.dns.expect("dns");
    register(&a, json!({"Node": "e1", "Address": "10.6.0.1"})).await;

    // Zone transfers: REFUSED over TCP and UDP, for our domain and any other.
    for (name, qtype) in [
        ("consul.", RecordType::AXFR),
        ("consul.", RecordType::IXFR),
        ("example.org.", RecordType::AXFR),
    ] {
        let t = tcp(dns, name, qtype, None);
        assert_eq!(t.response_code(), ResponseCode::Refused, "{name} {qtype}");
        assert!(t.answers().is_empty() && t.name_servers().is_empty());
        let u = udp(dns, name, qtype, None);
        assert_eq!(u.response_code(), ResponseCode::Refused, "{name} {qtype}");
    }

    // EDNS: an OPT back, version 0, our payload size; DO copied; answers as usual.
    let m = udp(
        dns,
        "e1.node.consul.",
        RecordType::A,
        Some((0, 1232, false)),
    );
    assert_eq!(ips(&m), ["10.6.0.1"]);
    let e = m
        .extensions()
        .as_ref()
        .expect("an OPT record in the answer");
    assert_eq!((e.version(), e.max_payload()), (0, 4096));
    assert!(!e.flags().dnssec_ok);
    let m = udp(dns, "e1.node.consul.", RecordType::A, Some((0, 1232, true)));
    assert!(m.extensions().as_ref().expect("OPT").flags().dnssec_ok);
    let m = tcp(
        dns,
        "e1.node.consul.",
        RecordType::A,
        Some((0, 4096, false)),
    );
    assert_eq!(ips(&m), ["10.6.0.1"]);
    assert!(m.extensions().is_some(), "OPT over TCP too");
    // Negative and refused answers carry it too; a query without EDNS gets none.
    let nx = udp(
        dns,
        "nope.node.consul.",
        RecordType::A,
        Some((0, 1232, false)),
    );
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    assert!(nx.extensions().is_some());
    let r = udp(dns, "example.org.", RecordType::A, Some((0, 1232, false)));
    assert_eq!(r.response_code(), ResponseCode::Refused);
    assert!(r.extensions().is_some());
    assert!(udp(dns, "e1.node.consul.", RecordType::A, None)
        .extensions()
        .is_none());

    // EDNS version 1: BADVERS (an extended code, so with an OPT of version 0), no answer.
    for m in [
        udp(
            dns,
            "e1.node.consul.",
            RecordType::A,
            Some((1, 1232, false)),
        ),
        tcp(
            dns,
            "e1.node.consul.",
            RecordType::A,
            Some((1, 1232, false)),
        ),
    ] {
        // BADVERS is 16, which hickory decodes by its TSIG name, BADSIG.
        assert_eq!(u16::from(m.response_code()), 16, "{:?}", m.response_code());
        assert!(m.answers().is_empty());
        assert_eq!(m.extensions().as_ref().map(Edns::version), Some(0));
    }

    // The client's advertised size bounds a UDP answer (with TC when cut).
    for i in 1..=60 {
        register(
            &a,
            json!({"Node": format!("big{i}"), "Address": format!("10.6.1.{i}"),
            "Service": {"Service": "big", "Port": 80}}),
        )
        .await;
    }
    let q = query("big.service.consul.", RecordType::A, Some((0, 600, false)));
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.send_to(&q, dns)?;
    let mut buf = [0u8; 65535];
    let (n, _) = s.recv_from(&mut buf)?;
    let m = Message::from_vec(&buf[..n])?;
    assert!(n <= 600, "{n} bytes for a client offering 600");
    assert!(m.truncated() && !m.answers().is_empty());
    assert_eq!(
        tcp(
            dns,
            "big.service.consul.",
            RecordType::A,
            Some((0, 600, false))
        )
        .answers()
        .len(),
        60,
        "TCP is not cut"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_clients_that_say_nothing_or_trickle_are_closed() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "slowtcp", &[]).await?;
    let dns = a.dns.expect("dns");
    register(&a, json!({"Node": "t1", "Address": "10.6.0.2"})).await;

    // The three at once, each on its own thread: the agent must close each within its 2 s
    // read timeout (hickory's listener waits 5 s between whole messages).
    let silent = std::thread::spawn(move || {
        let s = TcpStream::connect(dns).expect("connect");
        closed_after(s, Duration::from_secs(10))
    });
    let half = std::thread::spawn(move || {
        let mut s = TcpStream::connect(dns).expect("connect");
        s.write_all(&200u16.to_be_bytes()).expect("len");
        s.write_all(b"\x12\x34").expect("part");
        closed_after(s, Duration::from_secs(10))
    });
    let trickle = std::thread::spawn(move || {
        // A 100-byte query, one byte every 300 ms: every read makes progress, the whole
        // never arrives.
        let mut s = TcpStream::connect(dns).expect("connect");
        s.write_all(&100u16.to_be_bytes()).expect("len");
        let start = Instant::now();
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(300));
            if s.write_all(b"x").is_err() {
                break;
            }
            let mut probe = [0u8; 1];
            s.set_nonblocking(true).expect("nonblocking");
            let r = s.read(&mut probe);
            s.set_nonblocking(false).expect("blocking");
            match r {
                Ok(0) => return Some(start.elapsed()),
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
                    return Some(start.elapsed())
                }
                _ => {}
            }
        }
        None
    });
    for (what, t) in [
        ("silent", silent),
        ("half a query", half),
        ("trickle", trickle),
    ] {
        let after = t.join().expect("thread");
        let after = after.unwrap_or_else(|| panic!("{what}: connection never closed"));
        assert!(
            after < Duration::from_millis(3500),
            "{what}: closed only after {after:?}"
        );
    }

    // A client that sent a query may idle longer (8 s) before the next.
    let mut s = TcpStream::connect(dns)?;
    let q = query("t1.node.consul.", RecordType::A, None);
    assert_eq!(ips(&tcp_on(&mut s, &q)?), ["10.6.0.2"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ips(&tcp_on(&mut s, &q)?), ["10.6.0.2"]);
    // And is closed past it.
    let after = closed_after(s, Duration::from_secs(15)).expect("idle connection closed");
    assert!(
        after < Duration::from_secs(10),
        "idle closed after {after:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_connections_past_the_per_client_limit_are_closed() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "conns", &[]).await?;
    let dns = a.dns.expect("dns");
    register(&a, json!({"Node": "c1", "Address": "10.6.0.3"})).await;
    let q = query("c1.node.consul.", RecordType::A, None);

    // 200 connections from 127.0.0.1, each answered once (so each may idle for 8 s).
    let mut open = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(dns)?;
        let m = tcp_on(&mut s, &q).map_err(|e| anyhow::anyhow!("connection {i}: {e}"))?;
        assert_eq!(ips(&m), ["10.6.0.3"]);
        open.push(s);
    }
    // The 201st is closed at once.
    let extra = TcpStream::connect(dns)?;
    let closed = closed_after(extra, Duration::from_secs(1));
    assert!(closed.is_some(), "connection 201 from one client kept open");

    // Others are served: the open connections, another client address, UDP.
    assert_eq!(ips(&tcp_on(&mut open[0], &q)?), ["10.6.0.3"]);
    assert_eq!(ips(&tcp_on(&mut open[199], &q)?), ["10.6.0.3"]);
    let other = tokio::net::TcpSocket::new_v4()?;
    other.bind("127.0.0.2:0".parse()?)?;
    let mut other = other.connect(dns).await?.into_std()?;
    other.set_nonblocking(false)?;
    assert_eq!(ips(&tcp_on(&mut other, &q)?), ["10.6.0.3"]);
    assert_eq!(
        ips(&udp(dns, "c1.node.consul.", RecordType::A, None)),
        ["10.6.0.3"]
    );

    // A closed connection frees its place.
    drop(open.pop());
    wait_until("a free place after a close", Duration::from_secs(5), || {
        let q = q.clone();
        async move {
            let mut s = TcpStream::connect(dns).ok()?;
            let m = tcp_on(&mut s, &q).ok()?;
            (ips(&m) == ["10.6.0.3"]).then_some(())
        }
    })
    .await?;
    assert!(a.logs().contains("max_conns_per_client"), "warned");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recursor_pointing_at_the_agent_itself_is_ignored() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let port = free_port()?;
    let upstream = muster_tests::tiny_upstream();
    let me = format!("127.0.0.1:{port}");
    let a = single_server(
        root.path(),
        "selfrec",
        &[
            "-dns-port",
            &port.to_string(),
            "-recursor",
            &me,
            "-recursor",
            &format!("0.0.0.0:{port}"),
            "-recursor",
            &upstream.to_string(),
        ],
    )
    .await?;
    let dns = a.dns.expect("dns");
    assert_eq!(dns.port(), port);

    // Names outside the domain go straight to the real upstream, quickly, and memory stays.
    let before = rss_kib(&a);
    for i in 0..50 {
        let start = Instant::now();
        let m = udp(dns, &format!("host{i}.example.org."), RecordType::A, None);
        assert_eq!(
            (m.response_code(), ips(&m)),
            (ResponseCode::NoError, vec!["192.0.2.7".to_string()])
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "query {i} took {:?}",
            start.elapsed()
        );
    }
    let after = rss_kib(&a);
    eprintln!("self recursor: RSS {before} KiB before 50 queries, {after} KiB after");
    assert!(
        after < before + 10 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 50 queries"
    );
    assert!(
        a.logs().contains("is this agent's own DNS address"),
        "no warning at start"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forwarding_loop_between_two_agents_ends_quickly() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let start_one = |name: String, port: u16, other: u16| {
        let root = root.path().to_path_buf();
        async move {
            single_server(
                &root,
                &name,
                &[
                    "-dns-port",
                    &port.to_string(),
                    "-recursor",
                    &format!("127.0.0.1:{other}"),
                ],
            )
            .await
        }
    };
    // Each agent must know the other's port before either starts: a port picked free can be
    // taken by a parallel test meanwhile, so a start refused for a port in use tries new ones.
    let mut attempt = 0;
    let (a, b) = loop {
        attempt += 1;
        let (pa, pb) = (free_port()?, free_port()?);
        let pair = async {
            let a = start_one(format!("loopa{attempt}"), pa, pb).await?;
            let b = start_one(format!("loopb{attempt}"), pb, pa).await?;
            anyhow::Ok((a, b))
        };
        match pair.await {
            Ok(pair) => break pair,
            Err(e) if attempt < 5 && e.to_string().contains("Address already in use") => continue,
            Err(e) => return Err(e),
        }
    };
    let dns = a.dns.expect("dns");
    let before = (rss_kib(&a), rss_kib(&b));
    for i in 0..20 {
        let start = Instant::now();
        let m = udp(dns, &format!("loop{i}.example.org."), RecordType::A, None);
        assert_eq!(m.response_code(), ResponseCode::ServFail);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "query {i} took {:?}",
            start.elapsed()
        );
    }
    let after = (rss_kib(&a), rss_kib(&b));
    eprintln!("forwarding loop: RSS (KiB) {before:?} before 20 queries, {after:?} after");
    assert!(
        after.0 < before.0 + 20 * 1024 && after.1 < before.1 + 20 * 1024,
        "RSS grew from {before:?} KiB to {after:?} KiB over 20 looping queries"
    );
    assert!(
        a.logs().contains("already wait for a recursor")
            || b.logs().contains("already wait for a recursor")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recursor_that_never_answers_holds_a_bounded_number_of_queries() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (silent, got) = silent_upstream();
    let cfg = root.path().join("rec.json");
    std::fs::write(
        &cfg,
        json!({"recursors": [silent.to_string()], "dns_config": {"recursor_timeout": "10s"}})
            .to_string(),
    )?;
    let a = single_server(
        root.path(),
        "silent",
        &["-config-file", &cfg.display().to_string()],
    )
    .await?;
    let dns = a.dns.expect("dns");
    register(&a, json!({"Node": "s1", "Address": "10.6.0.4"})).await;
    let before = rss_kib(&a);

    // 1,000 queries for outside names in bursts of 50; each burst waits (briefly) until the
    // earlier ones were either answered or handed to the recursor, so that a busy machine
    // does not drop datagrams from the agent's socket buffer. Answers are read on another
    // thread.
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let (servfails, others) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = {
        let (sock, servfails, others) = (sock.clone(), servfails.clone(), others.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                match Message::from_vec(&buf[..n]).map(|m| m.response_code()) {
                    Ok(ResponseCode::ServFail) => servfails.fetch_add(1, Ordering::Relaxed),
                    _ => others.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let sent_at = Instant::now();
    for i in 0..1000 {
        sock.send_to(
            &query(&format!("h{i}.example.org."), RecordType::A, None),
            dns,
        )?;
        if i % 50 == 49 {
            let settled = Instant::now() + Duration::from_millis(200);
            while servfails.load(Ordering::Relaxed)
                + others.load(Ordering::Relaxed)
                + got.load(Ordering::Relaxed)
                < i + 1
                && Instant::now() < settled
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    // The names of the domain are still answered while the recursor holds its queries.
    assert_eq!(
        ips(&udp(dns, "s1.node.consul.", RecordType::A, None)),
        ["10.6.0.4"]
    );
    let peak = rss_kib(&a);
    let upstream_got = got.load(Ordering::Relaxed);
    reader.join().expect("reader");
    let (servfail, other) = (
        servfails.load(Ordering::Relaxed),
        others.load(Ordering::Relaxed),
    );
    eprintln!(
        "silent recursor: RSS {before} KiB before 1000 queries, {peak} KiB at the peak; \
         {upstream_got} reached the recursor, {servfail} SERVFAIL at once"
    );
    // All of this happened well within the 10 s recursor timeout: the answers counted are
    // the immediate SERVFAILs of queries past the limit.
    assert!(sent_at.elapsed() < Duration::from_secs(9));
    assert!(
        upstream_got <= 150,
        "{upstream_got} queries waiting on the silent recursor at once"
    );
    assert!(
        servfail + upstream_got >= 990 && other == 0,
        "{servfail} immediate SERVFAILs and {upstream_got} held of 1000, {other} other answers"
    );
    assert!(
        peak < before + 10 * 1024,
        "RSS grew from {before} KiB to {peak} KiB with the recursor silent"
    );
    Ok(())
}
