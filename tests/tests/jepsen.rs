//! Jepsen-style histories: 10 clients read, write and compare-and-set 5 keys over HTTP on a
//! real 3-server cluster while a fault is injected, record every operation's invocation,
//! completion and answer, and each key's history is checked for linearizability
//! ([`muster_tests::linearizability`]). Default-mode and `?consistent` reads must both be
//! linearizable under every fault, and a final read of every key after healing must agree
//! with the history (no acknowledged write lost).
//!
//! The servers run on 127.0.0.2, .3 and .4. Run as root with `unshare`, `ip` and `iptables`
//! available (as CI does), each test re-executes itself inside a private network namespace,
//! where the leader can be cut off by the firewall without touching the host. Otherwise the
//! isolation fault is skipped, saying why, and the other faults run on the host's loopback.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use muster_tests::linearizability::{self, CheckError, Op, Operation, Ret};
use muster_tests::*;
use rand::{Rng, SeedableRng};

const CLIENTS: usize = 10;
const KEYS: usize = 5;
/// How long clients run while the fault is injected.
const LOAD: Duration = Duration::from_secs(12);
const IPS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
/// Groups the servers run as inside the namespace, for iptables' owner match.
const GIDS: [u32; 3] = [47_001, 47_002, 47_003];
/// Set in the environment of the copy of this binary that runs inside the namespace.
const NETNS_MARKER: &str = "MUSTER_JEPSEN_NETNS";

/// One cluster at a time: on 2 cores, concurrent runs would measure each other.
static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillLeader,
    StopLeader,
    IsolateLeader,
    RestartAll,
}

impl Fault {
    /// A request without an answer by then is indeterminate. Under kill -9 nothing hangs
    /// (connections are refused), so it outlasts the servers' 7 s wait for a leader and a
    /// read refused after it shows as a 500. A stopped or cut-off server makes every request
    /// sent to it hang: a shorter timeout keeps clients making progress elsewhere.
    fn request_timeout(self) -> Duration {
        match self {
            Fault::KillLeader | Fault::RestartAll => Duration::from_secs(8),
            Fault::StopLeader | Fault::IsolateLeader => Duration::from_secs(3),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill -9 of the leader",
            Fault::StopLeader => "SIGSTOP of the leader",
            Fault::IsolateLeader => "leader isolated by the firewall",
            Fault::RestartAll => "every server killed and restarted",
        }
    }
}

#[test]
fn jepsen_kill9_leader() -> anyhow::Result<()> {
    run("jepsen_kill9_leader", Fault::KillLeader)
}

#[test]
fn jepsen_sigstop_leader() -> anyhow::Result<()> {
    run("jepsen_sigstop_leader", Fault::StopLeader)
}

#[test]
fn jepsen_isolated_leader() -> anyhow::Result<()> {
    run("jepsen_isolated_leader", Fault::IsolateLeader)
}

#[test]
fn jepsen_whole_cluster_restart() -> anyhow::Result<()> {
    run("jepsen_whole_cluster_restart", Fault::RestartAll)
}

/// Runs `fault` here, or in a copy of this test binary inside a private network namespace.
fn run(test: &str, fault: Fault) -> anyhow::Result<()> {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let in_netns = std::env::var_os(NETNS_MARKER).is_some();
    if !in_netns {
        match netns_unavailable() {
            None => return run_in_netns(test),
            Some(why) if fault == Fault::IsolateLeader => {
                println!("jepsen: SKIPPED the isolation fault: {why}");
                return Ok(());
            }
            Some(_) => {}
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_fault(fault, in_netns))
}

/// Why this process cannot build a private network namespace with a firewall, if it cannot.
fn netns_unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("not running as root (network namespaces and iptables need it)".into());
    }
    let missing: Vec<&str> = ["unshare", "ip", "iptables"]
        .into_iter()
        .filter(|b| !on_path(b))
        .collect();
    (!missing.is_empty()).then(|| format!("not found on PATH: {}", missing.join(", ")))
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Re-executes this test binary, filtered to `test`, under `unshare --net` and waits for it.
fn run_in_netns(test: &str) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("find the test binary")?;
    let mut child = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_MARKER, "1")
        .env("MUSTER_BIN", muster_bin())
        .spawn()
        .context("run unshare --net")?;
    let deadline = Instant::now() + Duration::from_secs(170);
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!(
                    "{test} failed inside its network namespace ({status}); see its output above"
                );
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{test} did not finish within 170 s inside its network namespace");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The three servers, on fixed addresses and ports so restarts come back where they were.
struct Cluster {
    servers: Vec<Agent>,
    /// Each server's HTTP base URL (on 127.0.0.1, so the firewall never cuts clients off).
    urls: Vec<String>,
    /// Each server's server RPC address, as `/v1/status/leader` names it.
    rpcs: Vec<String>,
    in_netns: bool,
}

/// A port free for TCP and UDP on `ip` (gossip binds both), at the moment of asking.
fn free_port_on(ip: &str) -> anyhow::Result<u16> {
    let ip: IpAddr = ip.parse()?;
    for _ in 0..100 {
        let tcp = std::net::TcpListener::bind((ip, 0))?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both TCP and UDP on {ip}")
}

impl Cluster {
    async fn start(root: &Path, in_netns: bool) -> anyhow::Result<Cluster> {
        let mut servers = Vec::new();
        let mut urls = Vec::new();
        let mut rpcs = Vec::new();
        let mut join = String::new();
        for (i, ip) in IPS.iter().enumerate() {
            let (serf, rpc, http) = (free_port_on(ip)?, free_port_on(ip)?, free_port()?);
            let name = format!("s{}", i + 1);
            let ports = [serf.to_string(), rpc.to_string(), http.to_string()];
            let mut args = vec![
                "-server",
                "-bootstrap-expect",
                "3",
                "-bind",
                ip,
                "-serf-lan-port",
                &ports[0],
                "-server-port",
                &ports[1],
                "-http-port",
                &ports[2],
                "-log-level",
                "info",
            ];
            if i == 0 {
                join = format!("{ip}:{serf}");
            } else {
                args.extend(["-retry-join", &join]);
            }
            let dir = root.join(&name);
            let agent = if in_netns {
                Agent::start_in_group(&name, &dir, &args, GIDS[i])?
            } else {
                Agent::start(&name, &dir, &args)?
            };
            urls.push(format!("http://127.0.0.1:{http}"));
            rpcs.push(format!("{ip}:{rpc}"));
            servers.push(agent);
        }
        wait_for_agreed_leader(&servers, Duration::from_secs(30)).await?;
        Ok(Cluster {
            servers,
            urls,
            rpcs,
            in_netns,
        })
    }

    /// The leader's index, as the first server that answers within a second names it.
    async fn leader(&self) -> anyhow::Result<usize> {
        let client = short_client();
        wait_until("a leader", Duration::from_secs(15), || async {
            for url in &self.urls {
                let Ok(r) = client.get(format!("{url}/v1/status/leader")).send().await else {
                    continue;
                };
                let Ok(l) = r.json::<serde_json::Value>().await else {
                    continue;
                };
                if let Some(i) = self
                    .rpcs
                    .iter()
                    .position(|r| Some(r.as_str()) == l.as_str())
                {
                    return Some(i);
                }
            }
            None
        })
        .await
    }

    fn signal(&self, i: usize, sig: &str) -> anyhow::Result<()> {
        let pid = self.servers[i].pid().context("server not running")?;
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill {sig} {pid} failed");
        Ok(())
    }

    /// Cuts server `i` off from the other two, both ways: by address (packets from the
    /// `-bind` address) and by owner (packets a server sends from any address).
    fn isolate(&self, i: usize) -> anyhow::Result<()> {
        for j in (0..3).filter(|&j| j != i) {
            let (a, b) = (IPS[i], IPS[j]);
            for (src, dst) in [(a, b), (b, a)] {
                iptables(&["-A", "INPUT", "-s", src, "-d", dst, "-j", "DROP"])?;
            }
            for (k, dst) in [(i, b), (j, a)] {
                let gid = GIDS[k].to_string();
                iptables(&[
                    "-A",
                    "OUTPUT",
                    "-m",
                    "owner",
                    "--gid-owner",
                    &gid,
                    "-d",
                    dst,
                    "-j",
                    "DROP",
                ])?;
            }
        }
        Ok(())
    }

    fn heal_network(&self) -> anyhow::Result<()> {
        if self.in_netns {
            iptables(&["-F", "INPUT"])?;
            iptables(&["-F", "OUTPUT"])?;
        }
        Ok(())
    }

    /// Every server running and not stopped, the firewall open, a leader all agree on.
    async fn heal(&mut self) -> anyhow::Result<()> {
        self.heal_network()?;
        for i in 0..self.servers.len() {
            match self.servers[i].pid() {
                Some(_) => self.signal(i, "-CONT")?,
                None => self.restart(i)?,
            }
        }
        wait_for_agreed_leader(&self.servers, Duration::from_secs(30))
            .await
            .map_err(|e| self.with_logs(e))?;
        Ok(())
    }

    fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        // Waits for the startup banner: keep it off the clients' threads.
        tokio::task::block_in_place(|| self.servers[i].restart())
    }

    /// `e` with each server's log lines about leadership (elections, votes, terms), so a
    /// history that does not check says who led when.
    fn with_elections(&self, e: anyhow::Error) -> anyhow::Error {
        let logs: Vec<String> = self
            .servers
            .iter()
            .map(|s| {
                let l = s.logs();
                let hits: Vec<&str> = l
                    .lines()
                    .filter(|line| {
                        let low = line.to_ascii_lowercase();
                        ["leader", "vote", "term", "elect"]
                            .iter()
                            .any(|w| low.contains(w))
                    })
                    .collect();
                let from = hits.len().saturating_sub(80);
                format!(
                    "--- {} (leadership lines, last {} of {})\n{}",
                    s.name,
                    hits.len() - from,
                    hits.len(),
                    hits[from..].join("\n")
                )
            })
            .collect();
        anyhow::anyhow!("{e}\n{}", logs.join("\n"))
    }

    fn with_logs(&self, e: anyhow::Error) -> anyhow::Error {
        let logs: Vec<String> = self
            .servers
            .iter()
            .map(|s| {
                let l = s.logs();
                let tail: Vec<&str> = l.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} (last 40 lines)\n{}", s.name, tail.join("\n"))
            })
            .collect();
        anyhow::anyhow!("{e}\n{}", logs.join("\n"))
    }
}

fn iptables(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("iptables").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "iptables {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn short_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("http client")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    DefaultRead,
    ConsistentRead,
    Write,
    Cas,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// A definite answer.
    Ok,
    /// An error answer, or a connection refused (the request was never sent).
    Failed(Option<u16>),
    /// No answer: timed out or lost the connection mid-request.
    Indeterminate,
}

struct Record {
    kind: Kind,
    outcome: Outcome,
    latency: Duration,
    op: Operation,
}

/// What the client last read of a key: its value and ModifyIndex, for the next CAS.
type LastRead = HashMap<String, (Option<String>, u64)>;

/// One client: random operations on random keys through random servers until `end`.
async fn client(
    id: usize,
    urls: Vec<String>,
    timeout: Duration,
    t0: Instant,
    end: Instant,
) -> anyhow::Result<Vec<Record>> {
    // No pooled connections: one left over from a killed server would turn the next write
    // into an indeterminate one for no reason.
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()?;
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let mut last: LastRead = HashMap::new();
    let mut records = Vec::new();
    let mut seq = 0usize;
    while Instant::now() < end {
        let s = rng.random_range(0..urls.len());
        let key = format!("jepsen/k{}", rng.random_range(0..KEYS));
        let kind = match rng.random_range(0..10) {
            0..=2 => Kind::DefaultRead,
            3..=4 => Kind::ConsistentRead,
            5..=7 => Kind::Write,
            _ => Kind::Cas,
        };
        seq += 1;
        let value = format!("c{id}-{seq}");
        records.push(one_op(&http, id, &urls[s], s, &key, kind, value, &mut last, t0).await);
    }
    Ok(records)
}

#[allow(clippy::too_many_arguments)]
async fn one_op(
    http: &reqwest::Client,
    client: usize,
    base: &str,
    server: usize,
    key: &str,
    kind: Kind,
    value: String,
    last: &mut LastRead,
    t0: Instant,
) -> Record {
    let url = format!("{base}/v1/kv/{key}");
    let (op, req, note) = match kind {
        Kind::DefaultRead => (Op::Read, http.get(&url), "default read"),
        Kind::ConsistentRead => (
            Op::Read,
            http.get(format!("{url}?consistent")),
            "consistent read",
        ),
        Kind::Write => (
            Op::Write(value.clone()),
            http.put(&url).body(value.clone()),
            "write",
        ),
        Kind::Cas => {
            let (expected, index) = last.get(key).cloned().unwrap_or((None, 0));
            let req = http.put(format!("{url}?cas={index}")).body(value.clone());
            let op = Op::Cas {
                expected,
                new: value.clone(),
            };
            (op, req, "cas")
        }
    };
    let started = Instant::now();
    let invoked = started.duration_since(t0).as_nanos() as u64;
    let answer = match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Ok(body) => Ok((status, body)),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let done = Instant::now();
    let completed = done.duration_since(t0).as_nanos() as u64;
    let note = format!("via s{} {note}", server + 1);
    let mut record = Record {
        kind,
        outcome: Outcome::Indeterminate,
        latency: done - started,
        op: Operation {
            client,
            key: key.to_string(),
            op,
            invoked,
            completed: None,
            note,
        },
    };
    let (status, body) = match answer {
        Ok(a) => a,
        Err(e) if e.is_connect() => {
            record.outcome = Outcome::Failed(None);
            return record;
        }
        Err(_) => return record,
    };
    let ret = match (kind, status) {
        (Kind::DefaultRead | Kind::ConsistentRead, 404) => {
            last.insert(key.to_string(), (None, 0));
            Some(Ret::Read(None))
        }
        (Kind::DefaultRead | Kind::ConsistentRead, 200) => parse_entry(&body).map(|(v, idx)| {
            last.insert(key.to_string(), (Some(v.clone()), idx));
            Ret::Read(Some(v))
        }),
        (Kind::Write, 200) => (body.as_ref() == b"true").then_some(Ret::Write),
        (Kind::Cas, 200) => match body.as_ref() {
            b"true" => Some(Ret::Cas(true)),
            b"false" => Some(Ret::Cas(false)),
            _ => None,
        },
        _ => None,
    };
    match ret {
        Some(ret) => {
            record.outcome = Outcome::Ok;
            record.op.completed = Some((completed, ret));
        }
        None => {
            record.outcome = Outcome::Failed(Some(status));
            record.op.note = format!(
                "{}, answered {status} {}",
                record.op.note,
                String::from_utf8_lossy(&body).trim()
            );
        }
    }
    record
}

/// The value (as text) and ModifyIndex of a `GET /v1/kv/K` answer.
fn parse_entry(body: &[u8]) -> Option<(String, u64)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get(0)?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(e["Value"].as_str()?)
        .ok()?;
    Some((String::from_utf8(raw).ok()?, e["ModifyIndex"].as_u64()?))
}

/// The fault's schedule, run while the clients load the cluster; returns how many times the
/// fault was injected.
async fn nemesis(c: &mut Cluster, fault: Fault, end: Instant) -> anyhow::Result<usize> {
    let mut injected = 0;
    let at = |s: f64| end - LOAD + Duration::from_secs_f64(s);
    match fault {
        Fault::KillLeader => {
            for start in [2.0, 5.5, 9.0] {
                tokio::time::sleep_until(at(start).into()).await;
                let l = c.leader().await?;
                c.servers[l].kill9();
                injected += 1;
                println!("jepsen: {:.1}s kill -9 of the leader s{}", start, l + 1);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                c.restart(l)?;
            }
        }
        Fault::StopLeader => {
            tokio::time::sleep_until(at(3.0).into()).await;
            let l = c.leader().await?;
            c.signal(l, "-STOP")?;
            injected += 1;
            println!("jepsen: 3.0s SIGSTOP of the leader s{} for 5 s", l + 1);
            tokio::time::sleep(Duration::from_secs(5)).await;
            c.signal(l, "-CONT")?;
        }
        Fault::IsolateLeader => {
            tokio::time::sleep_until(at(3.0).into()).await;
            let l = c.leader().await?;
            c.isolate(l)?;
            injected += 1;
            println!(
                "jepsen: 3.0s leader s{} cut off from the others for 5 s",
                l + 1
            );
            tokio::time::sleep(Duration::from_secs(5)).await;
            c.heal_network()?;
        }
        Fault::RestartAll => {
            for start in [3.0, 8.0] {
                tokio::time::sleep_until(at(start).into()).await;
                for s in &mut c.servers {
                    s.kill9();
                }
                injected += 1;
                println!("jepsen: {start:.1}s kill -9 of every server");
                tokio::time::sleep(Duration::from_millis(500)).await;
                for i in 0..c.servers.len() {
                    c.restart(i)?;
                }
            }
        }
    }
    Ok(injected)
}

/// Reads every key through every server, consistent then default, after healing, retrying
/// error answers: these close each key's history, so a lost acknowledged write shows.
async fn final_reads(c: &Cluster, t0: Instant) -> anyhow::Result<Vec<Record>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(8))
        .build()?;
    let mut records = Vec::new();
    for k in 0..KEYS {
        let key = format!("jepsen/k{k}");
        for (s, url) in c.urls.iter().enumerate() {
            for kind in [Kind::ConsistentRead, Kind::DefaultRead] {
                let what = format!("a final {kind:?} of {key} through s{}", s + 1);
                let r = wait_until(&what, Duration::from_secs(15), || {
                    let (http, key) = (&http, &key);
                    async move {
                        let mut last = LastRead::new();
                        let c = 100 + s;
                        let r =
                            one_op(http, c, url, s, key, kind, String::new(), &mut last, t0).await;
                        (r.outcome == Outcome::Ok).then_some(r)
                    }
                })
                .await?;
                records.push(r);
            }
        }
    }
    Ok(records)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn run_fault(fault: Fault, in_netns: bool) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut cluster = Cluster::start(root.path(), in_netns).await?;
    let t0 = Instant::now();
    let end = t0 + LOAD;
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..CLIENTS {
        let urls = cluster.urls.clone();
        clients.spawn(client(id, urls, fault.request_timeout(), t0, end));
    }
    let injected = nemesis(&mut cluster, fault, end).await;
    let mut records = Vec::new();
    while let Some(r) = clients.join_next().await {
        records.extend(r??);
    }
    // Heal whatever the schedule left, even if it failed half-way.
    let healed = cluster.heal().await;
    let injected = injected.map_err(|e| cluster.with_logs(e))?;
    healed?;
    records.extend(
        final_reads(&cluster, t0)
            .await
            .map_err(|e| cluster.with_logs(e))?,
    );

    let summary = summarize(fault, injected, &records);
    println!("{summary}");

    // Consistent reads alone first, so a failure says which read mode broke.
    let without_default: Vec<Operation> = records
        .iter()
        .filter(|r| r.kind != Kind::DefaultRead)
        .filter_map(to_checked)
        .collect();
    let all: Vec<Operation> = records.iter().filter_map(to_checked).collect();
    let started = Instant::now();
    let consistent = linearizability::check(&without_default);
    let full = linearizability::check(&all);
    println!(
        "jepsen [{}]: checked in {:?}: without default reads {}; with them {}",
        fault.name(),
        started.elapsed(),
        verdict(&consistent),
        verdict(&full)
    );
    if let Err(e) = consistent {
        return Err(cluster.with_elections(anyhow::anyhow!(
            "[{}] writes, CAS and ?consistent reads are not linearizable:\n{e}",
            fault.name()
        )));
    }
    if let Err(e) = full {
        return Err(cluster.with_elections(anyhow::anyhow!(
            "[{}] default-mode reads are not linearizable (writes, CAS and ?consistent reads \
             are):\n{e}",
            fault.name()
        )));
    }
    let ok_writes = records
        .iter()
        .filter(|r| r.kind == Kind::Write && r.outcome == Outcome::Ok)
        .count();
    anyhow::ensure!(
        ok_writes >= 50,
        "[{}] only {ok_writes} writes acknowledged: too few for the history to mean much",
        fault.name()
    );
    anyhow::ensure!(
        injected > 0,
        "[{}] the fault was never injected",
        fault.name()
    );
    if fault == Fault::KillLeader {
        let mut failed: Vec<&Record> = records
            .iter()
            .filter(|r| r.kind == Kind::DefaultRead && r.outcome == Outcome::Failed(Some(500)))
            .collect();
        failed.sort_by_key(|r| r.op.invoked);
        let failed: Vec<String> = failed
            .iter()
            .map(|r| {
                format!(
                    "  at {:.3}s client {} {} after {:?}",
                    r.op.invoked as f64 / 1e9,
                    r.op.client,
                    r.op.note,
                    r.latency
                )
            })
            .collect();
        anyhow::ensure!(
            failed.is_empty(),
            "[{}] {} default-mode reads answered 500 (they should wait for the new leader):\n{}",
            fault.name(),
            failed.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

fn verdict(r: &Result<linearizability::Checked, CheckError>) -> String {
    match r {
        Ok(c) => format!(
            "linearizable ({} keys, {} ops, {} indeterminate)",
            c.keys, c.ops, c.indeterminate
        ),
        Err(CheckError::NotLinearizable(v)) => format!("NOT linearizable (key {:?})", v.key),
        Err(e) => format!("not checked: {e}"),
    }
}

/// The operation as the checker takes it: failed reads dropped, failed writes and CASes
/// indeterminate (an error answer may come after the command reached the log), writes that
/// were never sent (connection refused) dropped.
fn to_checked(r: &Record) -> Option<Operation> {
    match (r.kind, r.outcome) {
        (_, Outcome::Ok) => Some(r.op.clone()),
        (_, Outcome::Failed(None)) => None,
        (Kind::DefaultRead | Kind::ConsistentRead, _) => None,
        (Kind::Write | Kind::Cas, _) => {
            let mut op = r.op.clone();
            op.completed = None;
            Some(op)
        }
    }
}

fn summarize(fault: Fault, injected: usize, records: &[Record]) -> String {
    let count = |f: &dyn Fn(&Record) -> bool| records.iter().filter(|r| f(r)).count();
    let ok = count(&|r| r.outcome == Outcome::Ok);
    let failed = count(&|r| matches!(r.outcome, Outcome::Failed(Some(_))));
    let refused = count(&|r| r.outcome == Outcome::Failed(None));
    let indeterminate = count(&|r| r.outcome == Outcome::Indeterminate);
    let default_500 =
        count(&|r| r.kind == Kind::DefaultRead && r.outcome == Outcome::Failed(Some(500)));
    let consistent_500 =
        count(&|r| r.kind == Kind::ConsistentRead && r.outcome == Outcome::Failed(Some(500)));
    let writes_500 = count(&|r| {
        matches!(r.kind, Kind::Write | Kind::Cas) && r.outcome == Outcome::Failed(Some(500))
    });
    let by_kind = |k: Kind| {
        let n = count(&|r| r.kind == k);
        let ok = count(&|r| r.kind == k && r.outcome == Outcome::Ok);
        format!("{ok}/{n}")
    };
    let cas_won = count(&|r| {
        r.op.completed
            .as_ref()
            .is_some_and(|c| c.1 == Ret::Cas(true))
    });
    let mut reads: Vec<Duration> = records
        .iter()
        .filter(|r| matches!(r.kind, Kind::DefaultRead | Kind::ConsistentRead))
        .filter(|r| r.outcome != Outcome::Failed(None))
        .map(|r| r.latency)
        .collect();
    reads.sort();
    let read_timeouts = count(&|r| {
        matches!(r.kind, Kind::DefaultRead | Kind::ConsistentRead)
            && r.outcome == Outcome::Indeterminate
    });
    format!(
        "jepsen [{}] x{injected}: {} ops: {ok} ok, {failed} failed (error answer), \
         {refused} refused (never sent), {indeterminate} indeterminate ({read_timeouts} of \
         them reads); 500s: {default_500} default reads, {consistent_500} consistent reads, \
         {writes_500} writes/CAS; ok/all by kind: default reads {}, consistent reads {}, \
         writes {}, CAS {} ({cas_won} swapped); read latency p50 {:?} p99 {:?} max {:?}",
        fault.name(),
        records.len(),
        by_kind(Kind::DefaultRead),
        by_kind(Kind::ConsistentRead),
        by_kind(Kind::Write),
        by_kind(Kind::Cas),
        percentile(&reads, 0.5),
        percentile(&reads, 0.99),
        reads.last().copied().unwrap_or_default(),
    )
}
