//! A rolling restart of all three servers under load, as operators do it: each server in turn
//! is stopped with SIGTERM (a graceful leave) and started again with the same data dir and
//! addresses, and the next one waits until it is back in the Raft configuration and the
//! cluster agrees on a leader. Meanwhile writers PUT keys through a client agent, retrying
//! on errors, and DNS is queried without pause. No acknowledged write may be lost and no DNS
//! query may fail.

use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use muster_tests::*;
use serde_json::json;

/// Why one DNS query counts as failed, or `None` when it was answered with exactly `want`.
fn dns_failure(addr: SocketAddr, name: &str, want: &str) -> Option<String> {
    let mut m = Message::new();
    m.set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_str(name).expect("name"),
            RecordType::A,
        ));
    let packet = m.to_vec().expect("encode");
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    if let Err(e) = s.send_to(&packet, addr) {
        return Some(format!("send to {addr}: {e}"));
    }
    let mut buf = [0u8; 4096];
    let n = match s.recv_from(&mut buf) {
        Ok((n, _)) => n,
        Err(e) => return Some(format!("no answer from {addr} within 2 s: {e}")),
    };
    let r = match Message::from_vec(&buf[..n]) {
        Ok(r) => r,
        Err(e) => return Some(format!("undecodable answer from {addr}: {e}")),
    };
    if r.response_code() != ResponseCode::NoError {
        return Some(format!("{name} from {addr}: {}", r.response_code()));
    }
    let ips: Vec<String> = r
        .answers()
        .iter()
        .filter_map(|rec| match rec.data() {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    (ips != [want]).then(|| format!("{name} from {addr}: {ips:?}, want [{want}]"))
}

/// Tallies of the DNS prober.
#[derive(Default)]
struct DnsTally {
    /// Rounds begun, each with the target read afresh.
    rounds: AtomicU64,
    queries: AtomicU64,
    failures: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_restart_loses_no_write_and_dns_keeps_answering() -> anyhow::Result<()> {
    let started = Instant::now();
    let root = tempfile::tempdir()?;
    // Fixed gossip and RPC ports, so each server comes back at the address its peers know,
    // and every server's retry-join names the other two, as in a real deployment.
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<std::io::Result<_>>()?;
    let mut servers = Vec::new();
    for (i, (serf, rpc)) in ports.iter().enumerate() {
        let name = format!("s{}", i + 1);
        let mut args: Vec<String> = [
            "-server",
            "-bootstrap-expect",
            "3",
            "-serf-lan-port",
            &serf.to_string(),
            "-server-port",
            &rpc.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (j, (other, _)) in ports.iter().enumerate() {
            if j != i {
                args.extend(["-retry-join".into(), format!("127.0.0.1:{other}")]);
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        servers.push(Agent::start(&name, &root.path().join(&name), &refs)?);
    }
    let joins: Vec<String> = ports
        .iter()
        .flat_map(|(serf, _)| ["-retry-join".to_string(), format!("127.0.0.1:{serf}")])
        .collect();
    let refs: Vec<&str> = joins.iter().map(String::as_str).collect();
    let client = Agent::start("c1", &root.path().join("c1"), &refs)?;
    wait_for_agreed_leader(&servers, Duration::from_secs(30)).await?;

    let r = put(
        &client.url("/v1/catalog/register"),
        json!({"Node": "web1", "Address": "10.9.0.1",
               "Service": {"Service": "web", "Port": 80}})
        .to_string()
        .as_bytes(),
    )
    .await?;
    anyhow::ensure!(r.status == 200, "register: {} {}", r.status, r.text());
    let client_dns = client.dns.expect("client dns");
    for s in servers
        .iter()
        .map(|s| s.dns.expect("dns"))
        .chain([client_dns])
    {
        wait_until(
            "web answered by DNS",
            Duration::from_secs(10),
            || async move {
                dns_failure(s, "web.service.consul.", "10.9.0.1")
                    .is_none()
                    .then_some(())
            },
        )
        .await?;
    }

    // Writers: PUTs through the client agent, retried on any error; only a `true` answer
    // counts as acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (stop, acked, url) = (stop.clone(), acked.clone(), client.url("/v1/kv/rr/"));
        writers.push(tokio::spawn(async move {
            let http = http();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}-{i:06}");
                let ok = match http
                    .put(format!("{url}{key}"))
                    .body(key.clone())
                    .send()
                    .await
                {
                    Ok(r) => r.status() == 200 && r.text().await.is_ok_and(|t| t == "true"),
                    Err(_) => false,
                };
                if ok {
                    acked.lock().expect("lock").push(key);
                    i += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }

    // The DNS prober: every round asks the client agent and the server not being restarted
    // (`target`, switched before each restart, and the restart waits until the prober asks
    // the new one), for the service and for the node. A query fails when no answer comes
    // within 2 s, when its code is not NOERROR, or when it does not hold exactly the one
    // address. The server being restarted is not asked: a stopping agent closes its DNS.
    let tally = Arc::new(DnsTally::default());
    let target = Arc::new(Mutex::new(servers[1].dns.expect("dns")));
    let prober = {
        let (stop, tally, target) = (stop.clone(), tally.clone(), target.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let server = *target.lock().expect("lock");
                tally.rounds.fetch_add(1, Ordering::SeqCst);
                for (who, addr) in [("client", client_dns), ("server", server)] {
                    for name in ["web.service.consul.", "web1.node.consul."] {
                        tally.queries.fetch_add(1, Ordering::Relaxed);
                        if let Some(why) = dns_failure(addr, name, "10.9.0.1") {
                            let at = started.elapsed();
                            let wall = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap_or_default();
                            let why = format!("{who} at {at:?} (unix {wall:?}): {why}");
                            tally.failures.lock().expect("lock").push(why);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let acked_now = || acked.lock().expect("lock").len();
    wait_until("writes flowing", Duration::from_secs(10), || async {
        (acked_now() >= 20).then_some(())
    })
    .await?;

    for k in 0..3 {
        *target.lock().expect("lock") = servers[(k + 1) % 3].dns.expect("dns");
        // A round that read the old target may still be asking it: wait for one that began
        // after the switch before stopping that server.
        let round = tally.rounds.load(Ordering::SeqCst);
        wait_until(
            "the prober on its new target",
            Duration::from_secs(10),
            || async { (tally.rounds.load(Ordering::SeqCst) > round + 1).then_some(()) },
        )
        .await?;
        let before = acked_now();
        let t = Instant::now();
        servers[k].restart_graceful(Duration::from_secs(15))?;
        let rpc = servers[k].rpc.clone().expect("rpc address");
        // Back in the Raft configuration as a voter, with a leader every server agrees on.
        wait_until(
            "the restarted server back among the voters",
            Duration::from_secs(20),
            || async {
                let p = get(&servers[(k + 1) % 3].url("/v1/status/peers"))
                    .await
                    .ok()?
                    .json();
                let p = p.as_array()?;
                (p.len() == 3 && p.iter().any(|x| x.as_str() == Some(rpc.as_str()))).then_some(())
            },
        )
        .await?;
        wait_for_agreed_leader(&servers, Duration::from_secs(20)).await?;
        // The load went on through this restart.
        wait_until(
            "writes after the restart",
            Duration::from_secs(10),
            || async { (acked_now() >= before + 20).then_some(()) },
        )
        .await?;
        eprintln!(
            "server s{} restarted at {:?}, rejoined in {:?}",
            k + 1,
            t.duration_since(started),
            t.elapsed()
        );
    }

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    prober.join().expect("prober thread");

    let acked = acked.lock().expect("lock").clone();
    let keys = get(&servers[0].url("/v1/kv/rr/?keys&consistent"))
        .await?
        .json();
    let have: std::collections::HashSet<&str> = keys
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str())
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !have.contains(format!("rr/{k}").as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let queries = tally.queries.load(Ordering::Relaxed);
    let failures = tally.failures.lock().expect("lock").clone();
    eprintln!(
        "{} acknowledged writes, {queries} DNS queries, {} failed, in {:?}",
        acked.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(queries > 200, "only {queries} DNS queries");
    if !failures.is_empty() {
        let kept = root.keep();
        panic!(
            "DNS failures: {failures:?}; logs kept in {}",
            kept.display()
        );
    }
    Ok(())
}
