//! DNS over real UDP and TCP sockets against a real agent: node and service names, tags,
//! SRV, health filtering, shuffling, negative answers with the SOA.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use muster_tests::*;
use serde_json::json;

/// A query, with an EDNS OPT record offering `edns` bytes when given.
fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name).expect("name"), qtype));
    if let Some(size) = edns {
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
}

/// Sends raw bytes over UDP; the reply, or `None` when none came within a second.
fn udp_raw(addr: SocketAddr, packet: &[u8]) -> Option<Message> {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    s.send_to(packet, addr).expect("send");
    let mut buf = [0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(Message::from_vec(&buf[..n]).expect("decode"))
}

fn udp_with(addr: SocketAddr, name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.send_to(&query(name, qtype, edns), addr).expect("send");
    let mut buf = [0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).expect("reply");
    Message::from_vec(&buf[..n]).expect("decode")
}

/// A UDP query offering 1232 bytes through EDNS, as dig and most stub resolvers do.
fn udp(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    udp_with(addr, name, qtype, Some(1232))
}

/// A UDP query without EDNS (glibc's default): 512 bytes at most.
fn udp_plain(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    udp_with(addr, name, qtype, None)
}

fn tcp(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let q = query(name, qtype, None);
    s.write_all(&(q.len() as u16).to_be_bytes()).expect("len");
    s.write_all(&q).expect("query");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("reply len");
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).expect("reply");
    Message::from_vec(&buf).expect("decode")
}

fn ips(m: &Message) -> Vec<String> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn register(a: &Agent, v: serde_json::Value) {
    let r = put(&a.url("/v1/catalog/register"), v.to_string().as_bytes())
        .await
        .expect("register");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn names_records_health_and_negative_answers() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "dns1", &[]).await?;
    let dns = a.dns.expect("dns port");
    for i in 1..=3 {
        let tag = if i == 1 { "master" } else { "replica" };
        register(&a, json!({"Node": format!("r{i}"), "Address": format!("10.0.0.{i}"), "NodeMeta": {"rack": format!("r{i}")},
            "Service": {"Service": "redis", "Tags": [tag], "Port": 6379 + i, "Weights": {"Passing": 10 * i, "Warning": 1}},
            "Check": {"CheckID": "serfHealth", "Status": "passing"}})).await;
    }
    register(&a, json!({"Node": "r4", "Address": "10.0.0.4", "Service": {"Service": "redis", "Tags": ["replica"], "Address": "10.9.9.9", "Port": 7000}})).await;

    // Nodes: A, TXT from meta, case-insensitive, with and without the datacenter label.
    let m = udp(dns, "r1.node.consul.", RecordType::A);
    assert_eq!(
        (m.response_code(), ips(&m)),
        (ResponseCode::NoError, vec!["10.0.0.1".to_string()])
    );
    assert!(m.authoritative());
    assert_eq!(
        ips(&udp(dns, "R2.NODE.DC1.CONSUL.", RecordType::A)),
        ["10.0.0.2"]
    );
    let txt = udp(dns, "r3.node.consul.", RecordType::TXT);
    assert!(
        txt.answers()
            .iter()
            .any(|r| r.data().to_string().contains("rack=r3")),
        "{txt:?}"
    );
    assert_eq!(
        udp(dns, "r1.node.dc9.consul.", RecordType::A).response_code(),
        ResponseCode::NXDomain
    );

    // Services: every healthy instance; the service address when set.
    let all = udp(dns, "redis.service.consul.", RecordType::A);
    assert_eq!(
        sorted(ips(&all)),
        ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.9.9.9"]
    );
    assert_eq!(
        ips(&udp(dns, "master.redis.service.consul.", RecordType::A)),
        ["10.0.0.1"]
    );
    assert_eq!(
        sorted(ips(&tcp(
            dns,
            "replica.redis.service.dc1.consul.",
            RecordType::A
        ))),
        ["10.0.0.2", "10.0.0.3", "10.9.9.9"]
    );

    // SRV: port, weight, node target with its address in the additional section.
    let srv = udp(dns, "_redis._master.service.consul.", RecordType::SRV);
    let RData::SRV(s) = srv.answers()[0].data() else {
        panic!("not SRV: {srv:?}")
    };
    assert_eq!((s.priority(), s.weight(), s.port()), (1, 10, 6380));
    assert_eq!(s.target().to_ascii(), "r1.node.dc1.consul.");
    assert!(srv.additionals().iter().any(
        |r| r.name().to_ascii() == "r1.node.dc1.consul." && r.data().to_string() == "10.0.0.1"
    ));
    let srv4 = udp(dns, "_redis._tcp.service.consul.", RecordType::SRV);
    let addr_target = srv4.answers().iter().find_map(|r| match r.data() {
        RData::SRV(s) if s.port() == 7000 => Some(s.target().to_ascii()),
        _ => None,
    });
    assert_eq!(addr_target.as_deref(), Some("0a090909.addr.dc1.consul."));
    assert_eq!(
        ips(&udp(dns, "0a090909.addr.dc1.consul.", RecordType::A)),
        ["10.9.9.9"]
    );

    // Shuffled: the first answer changes over repeated queries.
    let firsts: BTreeSet<String> = (0..40)
        .map(|_| ips(&udp(dns, "redis.service.consul.", RecordType::A))[0].clone())
        .collect();
    assert!(firsts.len() >= 3, "answers not shuffled: {firsts:?}");

    // A critical node check (serfHealth) removes the node's instance; warnings stay.
    register(&a, json!({"Node": "r2", "SkipNodeUpdate": true, "Check": {"CheckID": "serfHealth", "Status": "critical"}})).await;
    register(&a, json!({"Node": "r3", "SkipNodeUpdate": true, "Check": {"CheckID": "serfHealth", "Status": "warning"}})).await;
    assert_eq!(
        sorted(ips(&udp(
            dns,
            "replica.redis.service.consul.",
            RecordType::A
        ))),
        ["10.0.0.3", "10.9.9.9"]
    );
    let srv3 = udp(dns, "_redis._replica.service.consul.", RecordType::SRV);
    let w3 = srv3.answers().iter().find_map(|r| match r.data() {
        RData::SRV(s) if s.port() == 6382 => Some(s.weight()),
        _ => None,
    });
    assert_eq!(w3, Some(1), "a warning instance gets its warning weight");

    // Negative answers: NXDOMAIN for unknown or all-unhealthy names, NOERROR-empty for a
    // name without the asked type; both with the SOA, minimum TTL 0.
    for (name, qtype, code) in [
        (
            "nope.service.consul.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        ("nope.node.consul.", RecordType::A, ResponseCode::NXDomain),
        ("r1.node.consul.", RecordType::AAAA, ResponseCode::NoError),
        ("consul.", RecordType::A, ResponseCode::NoError),
    ] {
        let m = udp(dns, name, qtype);
        assert_eq!(m.response_code(), code, "{name} {qtype}");
        assert!(m.answers().is_empty(), "{name}");
        let soa = m.name_servers().iter().find_map(|r| match r.data() {
            RData::SOA(s) => Some(s.minimum()),
            _ => None,
        });
        assert_eq!(soa, Some(0), "{name}: SOA with minimum TTL 0 in authority");
    }
    register(&a, json!({"Node": "r1", "SkipNodeUpdate": true, "Check": {"CheckID": "serfHealth", "Status": "critical"}})).await;
    assert_eq!(
        udp(dns, "master.redis.service.consul.", RecordType::A).response_code(),
        ResponseCode::NXDomain
    );
    // Not ours: refused (no recursors configured).
    assert_eq!(
        udp(dns, "example.com.", RecordType::A).response_code(),
        ResponseCode::Refused
    );
    Ok(())
}

/// dnsmasq on a loopback port, forwarding `.consul` to Muster; killed by PID on drop.
struct Dnsmasq(std::process::Child, SocketAddr);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts dnsmasq on a free loopback port and waits until it listens. A port found free can
/// be taken before dnsmasq binds it (tests run in parallel, and dnsmasq wants it for UDP and
/// TCP both): dnsmasq then exits, and another port is tried.
fn dnsmasq(upstream: SocketAddr, dir: &std::path::Path) -> anyhow::Result<Dnsmasq> {
    let log = dir.join("dnsmasq.log");
    for _ in 0..5 {
        let port = muster_tests::free_port()?;
        let mut child = std::process::Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
            ])
            .args([
                "--listen-address=127.0.0.1",
                &format!("--port={port}"),
                "--cache-size=0",
            ])
            .arg(format!(
                "--server=/consul/{}#{}",
                upstream.ip(),
                upstream.port()
            ))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                break;
            }
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(Dnsmasq(child, addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    anyhow::bail!(
        "dnsmasq did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn resolves_through_dnsmasq_including_search_domains() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "web01", &[]).await?;
    for i in 1..=2 {
        register(
            &a,
            json!({"Node": format!("agg{i}"), "Address": format!("10.1.0.{i}"),
            "Service": {"Service": "log-aggregator", "Port": 24224}}),
        )
        .await;
    }
    // The server's own node record lands once the leader has reconciled its membership.
    let dns = a.dns.expect("dns");
    wait_until(
        "web01 in the catalog",
        Duration::from_secs(10),
        || async move {
            (ips(&udp(dns, "web01.node.consul.", RecordType::A)) == ["127.0.0.1"]).then_some(())
        },
    )
    .await?;
    let d = dnsmasq(dns, root.path())?;
    let dm = d.1;
    assert_eq!(
        sorted(ips(&udp(
            dm,
            "log-aggregator.service.consul.",
            RecordType::A
        ))),
        ["10.1.0.1", "10.1.0.2"]
    );
    assert_eq!(
        ips(&udp(dm, "web01.node.consul.", RecordType::A)),
        ["127.0.0.1"]
    );
    assert_eq!(
        udp(dm, "nope.service.consul.", RecordType::A).response_code(),
        ResponseCode::NXDomain
    );
    // `search node.consul service.consul`: a short name completed by the resolver.
    let out = std::process::Command::new("dig")
        .args([
            "+short",
            "+search",
            "+domain=node.consul",
            "-p",
            &dm.port().to_string(),
            "@127.0.0.1",
            "web01",
        ])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "127.0.0.1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Three servers, one service `svc` at `ip`; returns them, the leader's position, and the DNS
/// address of a follower once it answers for `svc`.
async fn cluster_serving(
    root: &std::path::Path,
    extra: &[&str],
    svc: &str,
    ip: &str,
) -> anyhow::Result<(Vec<Agent>, usize, SocketAddr)> {
    let servers = start_servers(root, 3, extra).await?;
    register(
        &servers[0],
        json!({"Node": format!("{svc}1"), "Address": ip, "Service": {"Service": svc, "Port": 80}}),
    )
    .await;
    let leader = wait_for_agreed_leader(&servers, Duration::from_secs(10))
        .await?
        .expect("leader");
    let dns = servers[(leader + 1) % 3].dns.expect("dns");
    let name = format!("{svc}.service.consul.");
    wait_until("replicated", Duration::from_secs(10), || {
        let name = name.clone();
        async move { (ips(&udp(dns, &name, RecordType::A)) == [ip]).then_some(()) }
    })
    .await?;
    Ok((servers, leader, dns))
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_keeps_answering_while_the_cluster_elects_a_leader() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (mut servers, leader, dns) = cluster_serving(root.path(), &[], "app", "10.2.0.1").await?;
    servers[leader].kill9();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut answered = 0;
    while std::time::Instant::now() < deadline {
        let m = udp(dns, "app.service.consul.", RecordType::A);
        assert_eq!(
            ips(&m),
            ["10.2.0.1"],
            "a query went unanswered during the election"
        );
        answered += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(answered > 50);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn truncation_recursors_ptr_and_dns_config() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dead = UdpSocket::bind("127.0.0.1:0")?.local_addr()?; // nobody answers there once dropped
    let upstream = muster_tests::tiny_upstream();
    let cfg = root.path().join("dns.json");
    std::fs::write(&cfg, json!({"recursors": [dead.to_string(), upstream.to_string()],
        "dns_config": {"only_passing": true, "node_ttl": "10s", "service_ttl": {"*": "5s", "web": "30s"}, "recursor_timeout": "300ms"}}).to_string())?;
    let a = Agent::start(
        "d1",
        &root.path().join("d1"),
        &[
            "-server",
            "-bootstrap-expect",
            "1",
            "-config-file",
            &cfg.display().to_string(),
        ],
    )?;
    wait_until("leader", Duration::from_secs(10), || leader_of(&a)).await?;
    let dns = a.dns.expect("dns");
    for i in 0..100 {
        register(&a, json!({"Node": format!("b{i:03}"), "Address": format!("10.3.{}.{}", i / 200, i % 200 + 1),
            "Service": {"Service": "big", "Port": 80}})).await;
    }
    let u = udp(dns, "big.service.consul.", RecordType::A);
    assert!(u.truncated(), "TC set when records were dropped");
    assert!(!u.answers().is_empty() && u.answers().len() < 100);
    assert!(u.to_vec()?.len() <= 1232, "fits the client's EDNS size");
    // Without EDNS, Consul's udp_answer_limit (3) applies, without TC (no enable_truncate).
    let plain = udp_plain(dns, "big.service.consul.", RecordType::A);
    assert_eq!((plain.answers().len(), plain.truncated()), (3, false));
    let t = tcp(dns, "big.service.consul.", RecordType::A);
    assert_eq!(
        (t.truncated(), t.answers().len()),
        (false, 100),
        "TCP returns everything"
    );

    // PTR of a known node.
    let p = udp(dns, "1.0.3.10.in-addr.arpa.", RecordType::PTR);
    let ptr = p.answers().iter().find_map(|r| match r.data() {
        RData::PTR(n) => Some(n.0.to_ascii()),
        _ => None,
    });
    assert_eq!(ptr.as_deref(), Some("b000.node.dc1.consul."));
    assert_eq!(
        udp(dns, "9.9.9.10.in-addr.arpa.", RecordType::PTR).response_code(),
        ResponseCode::NXDomain
    );

    // TTLs and only_passing from dns_config.
    register(
        &a,
        json!({"Node": "w1", "Address": "10.4.0.1", "Service": {"Service": "web", "Port": 80},
        "Check": {"CheckID": "c", "ServiceID": "web", "Status": "passing"}}),
    )
    .await;
    register(
        &a,
        json!({"Node": "w2", "Address": "10.4.0.2", "Service": {"Service": "web", "Port": 80},
        "Check": {"CheckID": "c", "ServiceID": "web", "Status": "warning"}}),
    )
    .await;
    let w = udp(dns, "web.service.consul.", RecordType::A);
    assert_eq!(ips(&w), ["10.4.0.1"], "only_passing leaves out warnings");
    assert_eq!(w.answers()[0].ttl(), 30);
    assert_eq!(
        udp(dns, "big.service.consul.", RecordType::A).answers()[0].ttl(),
        5
    );
    assert_eq!(
        udp(dns, "w1.node.consul.", RecordType::A).answers()[0].ttl(),
        10
    );

    // Other names go to the recursors in turn: the dead one times out, the next answers.
    let r = udp(dns, "example.org.", RecordType::A);
    assert_eq!(
        (r.response_code(), ips(&r)),
        (ResponseCode::NoError, vec!["192.0.2.7".to_string()])
    );
    assert!(r.recursion_available());
    Ok(())
}

/// Starts a single-server agent with `config` as its config file.
async fn agent_with(root: &std::path::Path, name: &str, config: serde_json::Value) -> Agent {
    let cfg = root.join(format!("{name}.json"));
    std::fs::write(&cfg, config.to_string()).expect("config");
    single_server(root, name, &["-config-file", &cfg.display().to_string()])
        .await
        .expect("agent")
}

/// Registers `n` instances of `svc` on nodes `<svc>-<i>` at 10.7.<k>.<i>, weights from `w`.
async fn instances(a: &Agent, svc: &str, k: u8, n: u8, w: impl Fn(u8) -> u32) {
    for i in 1..=n {
        register(a, json!({"Node": format!("{svc}-{i}"), "Address": format!("10.7.{k}.{i}"),
            "Service": {"Service": svc, "Port": 8000 + i as u16, "Weights": {"Passing": w(i), "Warning": 1}}}))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn answer_limits_alt_domain_and_weighted_single_answers() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = agent_with(root.path(), "lim1", json!({"alt_domain": "muster"})).await;
    let dns = a.dns.expect("dns");
    instances(&a, "pool", 1, 5, |_| 1).await;

    // Default udp_answer_limit: 3 answers to a client without EDNS, all of them otherwise.
    let plain = udp_plain(dns, "pool.service.consul.", RecordType::A);
    assert_eq!((plain.answers().len(), plain.truncated()), (3, false));
    assert_eq!(
        ips(&udp(dns, "pool.service.consul.", RecordType::A)).len(),
        5
    );
    assert_eq!(
        ips(&tcp(dns, "pool.service.consul.", RecordType::A)).len(),
        5
    );

    // The alt domain answers the same names; SRV targets and the SOA are in the asked domain.
    assert_eq!(
        ips(&udp(dns, "pool-2.node.muster.", RecordType::A)),
        ["10.7.1.2"]
    );
    let srv = udp(dns, "_pool._tcp.service.dc1.muster.", RecordType::SRV);
    assert_eq!(srv.answers().len(), 5);
    for r in srv.answers() {
        let RData::SRV(s) = r.data() else {
            panic!("not SRV: {r:?}")
        };
        assert!(
            s.target().to_ascii().ends_with(".node.dc1.muster."),
            "{s:?}"
        );
        assert!(srv.additionals().iter().any(|x| x.name() == s.target()));
    }
    let nx = udp(dns, "nope.service.muster.", RecordType::A);
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    assert_eq!(nx.name_servers()[0].name().to_ascii(), "muster.");

    // a_record_limit caps A answers over any transport, not SRV; udp_answer_limit with
    // enable_truncate sets TC.
    let b = agent_with(
        root.path(),
        "lim2",
        json!({"dns_config": {"a_record_limit": 2, "udp_answer_limit": 1, "enable_truncate": true}}),
    )
    .await;
    let dns = b.dns.expect("dns");
    instances(&b, "pool", 2, 5, |_| 1).await;
    assert_eq!(
        ips(&tcp(dns, "pool.service.consul.", RecordType::A)).len(),
        2
    );
    assert_eq!(
        ips(&udp(dns, "pool.service.consul.", RecordType::A)).len(),
        2
    );
    let one = udp_plain(dns, "pool.service.consul.", RecordType::A);
    assert_eq!((one.answers().len(), one.truncated()), (1, true));
    assert_eq!(
        tcp(dns, "pool.service.consul.", RecordType::SRV)
            .answers()
            .len(),
        5
    );

    // weighted_single_answer: one address per answer, picked as often as its weight says.
    let c = agent_with(
        root.path(),
        "lim3",
        json!({"dns_config": {"weighted_single_answer": true}}),
    )
    .await;
    let dns = c.dns.expect("dns");
    instances(&c, "pool", 3, 2, |i| if i == 1 { 1 } else { 9 }).await;
    let mut heavy = 0;
    for _ in 0..400 {
        let got = ips(&udp(dns, "pool.service.consul.", RecordType::A));
        assert_eq!(got.len(), 1, "{got:?}");
        heavy += usize::from(got[0] == "10.7.3.2");
    }
    // 360 expected; the bounds are over five standard deviations away.
    assert!(
        (320..=392).contains(&heavy),
        "weight 9 of 10 picked {heavy}/400"
    );
    assert_eq!(
        tcp(dns, "pool.service.consul.", RecordType::SRV)
            .answers()
            .len(),
        2,
        "SRV still lists every instance with its weight"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_hostile_packets_get_errors_not_stalls() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = agent_with(root.path(), "hostile", json!({})).await;
    let dns = a.dns.expect("dns");
    register(&a, json!({"Node": "h1", "Address": "10.8.0.1"})).await;

    // A TCP client that announces a 200-byte query and never sends it holds its own
    // connection only.
    let mut slow = TcpStream::connect(dns)?;
    slow.write_all(&200u16.to_be_bytes())?;
    slow.write_all(b"\x12\x34")?;

    let header = |flags: u16, qd: u16| {
        let mut h = vec![0xab, 0xcd];
        h.extend(flags.to_be_bytes());
        h.extend(qd.to_be_bytes());
        h.extend([0u8; 6]);
        h
    };
    let question = |name: &str, qtype: u16, class: u16| {
        let mut q = Vec::new();
        for l in name.split('.').filter(|l| !l.is_empty()) {
            q.push(l.len() as u8);
            q.extend(l.as_bytes());
        }
        q.push(0);
        q.extend(qtype.to_be_bytes());
        q.extend(class.to_be_bytes());
        q
    };
    let code = |p: &[u8]| udp_raw(dns, p).map(|m| m.response_code());
    let with = |mut h: Vec<u8>, q: Vec<u8>| {
        h.extend(q);
        h
    };
    // Garbage after an ID, a question count with no question, two questions: FORMERR.
    assert_eq!(
        code(b"\xab\xcdnot a dns message at all"),
        Some(ResponseCode::FormErr)
    );
    assert_eq!(code(&header(0x0100, 1)), Some(ResponseCode::FormErr));
    let two = with(
        header(0x0100, 2),
        [
            question("h1.node.consul", 1, 1),
            question("h1.node.consul", 1, 1),
        ]
        .concat(),
    );
    assert_eq!(code(&two), Some(ResponseCode::FormErr));
    let mut bad_label = header(0x0100, 1);
    bad_label.extend([200u8, b'a', b'b', 0, 0, 1, 0, 1]);
    assert_eq!(code(&bad_label), Some(ResponseCode::FormErr));
    // Class CHAOS, NOTIFY and UPDATE opcodes: NOTIMP.
    let chaos = with(header(0x0100, 1), question("version.bind", 16, 3));
    assert_eq!(code(&chaos), Some(ResponseCode::NotImp));
    for opcode_flags in [0x2000, 0x2800] {
        let m = with(header(opcode_flags, 1), question("consul", 6, 1));
        assert_eq!(code(&m), Some(ResponseCode::NotImp));
    }
    // Shorter than a header, or a response: no reply (nothing to answer; no reflection loops).
    assert_eq!(code(b"\xab\xcd\x01"), None);
    let response = with(header(0x8100, 1), question("consul", 6, 1));
    assert_eq!(code(&response), None);
    // An oversized datagram: a valid query followed by junk is still answered.
    let mut big = with(header(0x0100, 1), question("h1.node.consul", 1, 1));
    big.extend([0u8; 3000]);
    assert_eq!(
        udp_raw(dns, &big).map(|m| ips(&m)),
        Some(vec!["10.8.0.1".to_string()])
    );
    // A TCP frame of junk gets FORMERR or a closed connection, never a crash.
    let mut junk = TcpStream::connect(dns)?;
    junk.set_read_timeout(Some(Duration::from_secs(5)))?;
    junk.write_all(&4000u16.to_be_bytes())?;
    junk.write_all(&[0x5a; 4000])?;
    let mut len = [0u8; 2];
    if junk.read_exact(&mut len).is_ok() {
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        junk.read_exact(&mut buf)?;
        assert_eq!(
            Message::from_vec(&buf)?.response_code(),
            ResponseCode::FormErr
        );
    }

    // Through all of it, with the slow TCP client still connected, queries are answered.
    assert_eq!(
        ips(&udp(dns, "h1.node.consul.", RecordType::A)),
        ["10.8.0.1"]
    );
    assert_eq!(
        ips(&tcp(dns, "h1.node.consul.", RecordType::A)),
        ["10.8.0.1"]
    );
    drop(slow);
    assert!(a.logs().find("panicked").is_none(), "{}", a.logs());
    Ok(())
}

/// A client agent `cli` joined to `server`, with `config` as its config file.
fn client_agent(
    root: &std::path::Path,
    server: &Agent,
    config: serde_json::Value,
) -> anyhow::Result<Agent> {
    let cfg = root.join("client.json");
    std::fs::write(&cfg, config.to_string())?;
    Agent::start(
        "cli",
        &root.join("cli"),
        &[
            "-retry-join",
            &server.serf.to_string(),
            "-config-file",
            &cfg.display().to_string(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn client_agent_answers_from_its_cache_for_max_stale() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut s = single_server(root.path(), "srv", &[]).await?;
    register(
        &s,
        json!({"Node": "db1", "Address": "10.9.0.1", "Service": {"Service": "db", "Port": 5432}}),
    )
    .await;
    let c = client_agent(root.path(), &s, json!({"dns_config": {"max_stale": "3s"}}))?;
    let dns = c.dns.expect("dns");
    wait_until("client answers", Duration::from_secs(15), || async move {
        (ips(&udp(dns, "db.service.consul.", RecordType::A)) == ["10.9.0.1"]).then_some(())
    })
    .await?;
    assert_eq!(
        ips(&udp(dns, "db1.node.consul.", RecordType::A)),
        ["10.9.0.1"]
    );

    // The only server dies: the client keeps answering what it had, for max_stale.
    s.kill9();
    let m = udp(dns, "db.service.consul.", RecordType::A);
    assert_eq!(
        (m.response_code(), ips(&m)),
        (ResponseCode::NoError, vec!["10.9.0.1".to_string()])
    );
    assert_eq!(
        ips(&udp(dns, "db1.node.consul.", RecordType::A)),
        ["10.9.0.1"]
    );
    // A name it never asked for cannot be answered.
    assert_eq!(
        udp(dns, "other.service.consul.", RecordType::A).response_code(),
        ResponseCode::ServFail
    );
    // Past max_stale: SERVFAIL, not an answer of unknown age.
    wait_until("cache expired", Duration::from_secs(15), || async move {
        (udp(dns, "db.service.consul.", RecordType::A).response_code() == ResponseCode::ServFail)
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn client_agent_use_cache_answers_without_a_server_and_follows_changes() -> anyhow::Result<()>
{
    let root = tempfile::tempdir()?;
    let s = single_server(root.path(), "srv", &[]).await?;
    let web = |i: u8| {
        json!({"Node": format!("web{i}"), "Address": format!("10.8.0.{i}"),
        "Service": {"Service": "web", "Port": 80}})
    };
    register(&s, web(1)).await;
    let c = client_agent(root.path(), &s, json!({"dns_config": {"use_cache": true}}))?;
    let dns = c.dns.expect("dns");
    let web_ips = move || sorted(ips(&udp(dns, "web.service.consul.", RecordType::A)));
    wait_until("client answers", Duration::from_secs(15), || async move {
        (web_ips() == ["10.8.0.1"]).then_some(())
    })
    .await?;

    // The entry's watcher (a blocking query on the server) sees the change.
    register(&s, web(2)).await;
    wait_until(
        "cached answer follows",
        Duration::from_secs(10),
        || async move { (web_ips() == ["10.8.0.1", "10.8.0.2"]).then_some(()) },
    )
    .await?;

    // A frozen server cannot answer; the cached answer comes without asking it, within the
    // one second `udp_raw` waits (an uncached lookup waits out the 5 s server RPC).
    let pid = s.pid().expect("server pid").to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
    };
    assert!(signal("-STOP")?.success());
    let ask = query("web.service.consul.", RecordType::A, Some(1232));
    let m = tokio::task::spawn_blocking(move || udp_raw(dns, &ask)).await?;
    assert!(signal("-CONT")?.success());
    let m = m.expect("a cached answer within a second while the server is frozen");
    assert_eq!(sorted(ips(&m)), ["10.8.0.1", "10.8.0.2"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_past_max_stale_without_a_leader_answer_servfail() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cfg = root.path().join("stale.json");
    std::fs::write(&cfg, json!({"dns_config": {"max_stale": "2s"}}).to_string())?;
    let cfg = cfg.display().to_string();
    let (mut servers, leader, dns) =
        cluster_serving(root.path(), &["-config-file", &cfg], "m", "10.10.0.1").await?;
    // Two of three gone: no leader can be elected. Answers continue until max_stale has
    // passed since the last contact, then the leader is asked, and there is none.
    servers[leader].kill9();
    servers[(leader + 2) % 3].kill9();
    assert_eq!(
        ips(&udp(dns, "m.service.consul.", RecordType::A)),
        ["10.10.0.1"]
    );
    wait_until(
        "SERVFAIL past max_stale",
        Duration::from_secs(20),
        || async move {
            (udp(dns, "m.service.consul.", RecordType::A).response_code() == ResponseCode::ServFail)
                .then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_ipv6_any_ptr_and_soa() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = agent_with(root.path(), "mnt", json!({})).await;
    let dns = a.dns.expect("dns");
    let r = put(
        &a.url("/v1/agent/service/register"),
        json!({"Name": "api", "Port": 9000}).to_string().as_bytes(),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let api_code = move || udp(dns, "api.service.consul.", RecordType::A).response_code();
    wait_until("api answers", Duration::from_secs(10), || async move {
        (api_code() == ResponseCode::NoError).then_some(())
    })
    .await?;

    // Node maintenance hides the node's instances; disabling brings them back. The same for
    // one service's maintenance.
    for (on, off) in [
        (
            "/v1/agent/maintenance?enable=true&reason=AMI",
            "/v1/agent/maintenance?enable=false",
        ),
        (
            "/v1/agent/service/maintenance/api?enable=true",
            "/v1/agent/service/maintenance/api?enable=false",
        ),
    ] {
        assert_eq!(put(&a.url(on), b"").await?.status, 200);
        wait_until("hidden", Duration::from_secs(10), || async move {
            (api_code() == ResponseCode::NXDomain).then_some(())
        })
        .await?;
        assert_eq!(put(&a.url(off), b"").await?.status, 200);
        wait_until("back", Duration::from_secs(10), || async move {
            (api_code() == ResponseCode::NoError).then_some(())
        })
        .await?;
    }

    // An IPv6 node: AAAA answers, A is NOERROR-empty, PTR through ip6.arpa.
    register(
        &a,
        json!({"Node": "v6", "Address": "fd00::17", "NodeMeta": {"zone": "b"}}),
    )
    .await;
    let aaaa = udp(dns, "v6.node.consul.", RecordType::AAAA);
    assert_eq!(ips(&aaaa), ["fd00::17"]);
    let a4 = udp(dns, "v6.node.consul.", RecordType::A);
    assert_eq!(
        (a4.response_code(), a4.answers().len()),
        (ResponseCode::NoError, 0)
    );
    let rev = "7.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    let ptr = udp(dns, rev, RecordType::PTR);
    assert_eq!(
        ptr.answers()[0].data().to_string(),
        "v6.node.dc1.consul.",
        "{ptr:?}"
    );
    // ANY: the address and the meta TXT; SOA at the apex.
    let any = tcp(dns, "v6.node.consul.", RecordType::ANY);
    let types: BTreeSet<RecordType> = any.answers().iter().map(|r| r.record_type()).collect();
    assert_eq!(
        types,
        BTreeSet::from([RecordType::AAAA, RecordType::TXT]),
        "{any:?}"
    );
    let soa = udp(dns, "consul.", RecordType::SOA);
    assert!(
        matches!(soa.answers().first().map(|r| r.data()), Some(RData::SOA(s)) if s.mname().to_ascii() == "ns.consul."),
        "{soa:?}"
    );
    Ok(())
}
