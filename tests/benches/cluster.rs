//! Cluster benchmarks: Muster against etcd (Debian's `etcd-server`) in the same run, driven by
//! the same load generator, so only the ratios matter on a shared, noisy machine.
//!
//! ```sh
//! cargo build --profile dist --bin muster    # the benches run target/dist/muster
//! cargo bench -p muster-tests --bench cluster               # everything
//! cargo bench -p muster-tests --bench cluster -- kv-put      # one of: kv-put failover read-failover memory
//! cargo bench -p muster-tests --bench cluster -- --secs 5    # shorter load phases
//! cargo bench -p muster-tests --bench cluster -- kv-put --servers 1   # single-node ceiling
//! ```
//!
//! - kv-put: three servers on 127.0.0.1, .2 and .3, each with its own data dir and fsync on
//!   every commit; 64 connections spread over the three; 100-byte values to random keys among
//!   100,000.
//! - failover: `kill -9` of the leader, then the time to the first successful write through a
//!   survivor; 10 trials, median.
//! - read-failover: 16 connections spread over the three servers read one key in the default
//!   (linearizable) mode while the leader is killed with `kill -9`; 10 trials, each on a fresh
//!   cluster, 1 s of reads before the kill and 3 s after. Latency of every answered read,
//!   reads answered with an error status, and reads that got no answer because their server
//!   was the one killed (refused, or cut off mid-request: a client of that server would see
//!   its agent gone).
//! - memory: RSS of one idle server, then holding 100,000 keys of 100 bytes.

use std::time::{Duration, Instant};

use base64::Engine;
use muster_tests::bench::{cpu_ticks, etcd_available, rss_kb, start_etcd, start_muster, Stats};
use muster_tests::{get, wait_for_agreed_leader, wait_until, Agent};
use rand::Rng;

const CONNS: usize = 64;
const KEYS: u32 = 100_000;

#[derive(Clone)]
enum Target {
    /// `PUT /v1/kv/<key>` on a Muster agent.
    Muster(String),
    /// `POST /v3/kv/put` on etcd's JSON gateway.
    Etcd(String),
}

impl Target {
    async fn put(&self, client: &reqwest::Client, key: &str, value: &[u8]) -> bool {
        let req = match self {
            Target::Muster(base) => client
                .put(format!("{base}/v1/kv/{key}"))
                .body(value.to_vec()),
            Target::Etcd(base) => {
                let b64 = base64::engine::general_purpose::STANDARD;
                let body = serde_json::json!({"key": b64.encode(key), "value": b64.encode(value)});
                client.post(format!("{base}/v3/kv/put")).json(&body)
            }
        };
        match req.send().await {
            Ok(r) if r.status().is_success() => match self {
                Target::Muster(_) => r.text().await.is_ok_and(|t| t == "true"),
                Target::Etcd(_) => r.bytes().await.is_ok(),
            },
            _ => false,
        }
    }
}

impl Target {
    /// A default-mode (Muster) or linearizable (etcd) read of `key`: `Ok(true)` answered,
    /// `Ok(false)` answered with an error status, `Err` when no answer came from the server
    /// (refused, or the connection died with it).
    async fn get(&self, client: &reqwest::Client, key: &str) -> Result<bool, ()> {
        let req = match self {
            Target::Muster(base) => client.get(format!("{base}/v1/kv/{key}")),
            Target::Etcd(base) => {
                let b64 = base64::engine::general_purpose::STANDARD;
                client
                    .post(format!("{base}/v3/kv/range"))
                    .json(&serde_json::json!({"key": b64.encode(key)}))
            }
        };
        match req.send().await {
            Ok(r) if !r.status().is_success() => Ok(false),
            Ok(r) => r.bytes().await.map(|_| true).map_err(|_| ()),
            Err(_) => Err(()),
        }
    }
}

/// `CONNS` connections, each pinned to one target, PUTting random keys for `secs`.
async fn load(targets: &[Target], secs: u64) -> Stats {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..CONNS {
        let t = targets[i % targets.len()].clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            let mut lat = Vec::new();
            let mut failed = 0;
            let mut value = vec![0u8; 100];
            while Instant::now() < deadline {
                let (key, fill) = {
                    let mut rng = rand::rng();
                    (
                        format!("bench/{:06}", rng.random_range(0..KEYS)),
                        rng.random_range(b'a'..=b'z'),
                    )
                };
                value.fill(fill);
                let t0 = Instant::now();
                if t.put(&client, &key, &value).await {
                    lat.push(t0.elapsed());
                } else {
                    failed += 1;
                }
            }
            (lat, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.expect("load task");
        all.extend(l);
        failed += f;
    }
    Stats::new(all, failed, start.elapsed().as_secs_f64())
}

/// CPU time (clock ticks) the servers under test and this process, the load generator, used
/// during `f`: on a shared 2-core machine the load generator's share limits both peers.
/// Per server, in the order of `pids`.
async fn with_cpu<T>(pids: &[u32], f: impl std::future::Future<Output = T>) -> (T, Vec<u64>, u64) {
    let servers = || pids.iter().map(|&p| cpu_ticks(p)).collect::<Vec<u64>>();
    let (s0, g0) = (servers(), cpu_ticks(std::process::id()));
    let out = f.await;
    let (s1, g1) = (servers(), cpu_ticks(std::process::id()));
    let used = s1.iter().zip(&s0).map(|(a, b)| a.saturating_sub(*b));
    (out, used.collect(), g1.saturating_sub(g0))
}

fn report(name: &str, s: &Stats, server_ticks: &[u64], leader: Option<usize>, gen_ticks: u64) {
    // Clock ticks are 10 ms each.
    let per_put = |ticks: u64| ticks as f64 * 10_000.0 / s.ok.max(1) as f64;
    println!(
        "  {name:<8} {:>9.0} PUT/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} ok, {} failed in {:.1} s)",
        s.rate(),
        s.p50_ms,
        s.p99_ms,
        s.ok,
        s.failed,
        s.secs
    );
    println!(
        "  {:<8} CPU per PUT: servers {:>5.0} us, load generator {:>4.0} us",
        "",
        per_put(server_ticks.iter().sum()),
        per_put(gen_ticks)
    );
    if server_ticks.len() > 1 {
        let each: Vec<String> = server_ticks
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let role = if Some(i) == leader { " (leader)" } else { "" };
                format!("s{} {:.0} us{role}", i + 1, per_put(t))
            })
            .collect();
        println!("  {:<8} per server: {}", "", each.join(", "));
    }
}

async fn bench_kv_put(secs: u64, servers: usize) -> anyhow::Result<()> {
    println!(
        "== KV PUT: {servers} servers, {CONNS} connections, 100-byte values, {KEYS} keys, {secs} s"
    );
    let root = tempfile::tempdir()?;
    let muster = {
        let agents = start_muster(root.path(), servers).await?;
        let targets: Vec<Target> = agents
            .iter()
            .map(|a| Target::Muster(format!("http://{}", a.http)))
            .collect();
        let pids: Vec<u32> = agents.iter().filter_map(Agent::pid).collect();
        let (stats, st, gt) = with_cpu(&pids, load(&targets, secs)).await;
        let leader = wait_for_agreed_leader(&agents, Duration::from_secs(10))
            .await
            .ok()
            .flatten();
        report("muster", &stats, &st, leader, gt);
        stats
    };
    if etcd_available() {
        let etcd_root = tempfile::tempdir()?;
        let etcd = start_etcd(etcd_root.path(), servers).await?;
        let targets: Vec<Target> = etcd.urls.iter().cloned().map(Target::Etcd).collect();
        let pids: Vec<u32> = etcd.procs.iter().flatten().map(|p| p.0.id()).collect();
        let (e, st, gt) = with_cpu(&pids, load(&targets, secs)).await;
        report("etcd", &e, &st, etcd.leader().await, gt);
        println!(
            "  ratio muster/etcd: {:.2}x throughput, p99 {:.2}x",
            muster.rate() / e.rate(),
            muster.p99_ms / e.p99_ms
        );
    } else {
        println!("  etcd not installed (apt-get install etcd-server): no comparison");
    }
    Ok(())
}

/// Kills the leader and times the first successful write through a survivor. A new probe
/// starts every 25 ms (each may wait for the election), so the figure does not depend on a
/// client timeout.
async fn first_write_after(targets: &[Target], kill: impl FnOnce()) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t0 = Instant::now();
    kill();
    let mut probes = tokio::task::JoinSet::new();
    let mut i = 0;
    loop {
        let t = targets[i % targets.len()].clone();
        let tx = tx.clone();
        probes.spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            if t.put(&client, "failover/probe", b"x").await {
                let _ = tx.send(t0.elapsed());
            }
        });
        i += 1;
        tokio::select! {
            Some(d) = rx.recv() => return d,
            _ = tokio::time::sleep(Duration::from_millis(25)) => {}
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return t0.elapsed();
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn bench_failover(trials: usize) -> anyhow::Result<()> {
    println!(
        "== Leader failover: kill -9 of the leader -> first successful write, {trials} trials"
    );
    let mut m = Vec::new();
    for _ in 0..trials {
        let root = tempfile::tempdir()?;
        let mut agents = start_muster(root.path(), 3).await?;
        let leader = wait_for_agreed_leader(&agents, Duration::from_secs(10))
            .await?
            .unwrap_or(0);
        let survivors: Vec<Target> = (0..3)
            .filter(|&i| i != leader)
            .map(|i| Target::Muster(format!("http://{}", agents[i].http)))
            .collect();
        let d = first_write_after(&survivors, || agents[leader].kill9()).await;
        m.push(d);
    }
    let mm = median(m.clone());
    println!(
        "  muster   median {:>6.0} ms  (trials: {:?})",
        mm.as_secs_f64() * 1000.0,
        m.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    if etcd_available() {
        let mut e = Vec::new();
        for _ in 0..trials {
            let root = tempfile::tempdir()?;
            let mut etcd = start_etcd(root.path(), 3).await?;
            let leader =
                wait_until("etcd leader", Duration::from_secs(10), || etcd.leader()).await?;
            let survivors: Vec<Target> = (0..3)
                .filter(|&i| i != leader)
                .map(|i| Target::Etcd(etcd.urls[i].clone()))
                .collect();
            let d = first_write_after(&survivors, || drop(etcd.procs[leader].take())).await;
            e.push(d);
        }
        let em = median(e.clone());
        println!(
            "  etcd     median {:>6.0} ms  (trials: {:?})",
            em.as_secs_f64() * 1000.0,
            e.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
        );
        println!(
            "  ratio muster/etcd: {:.2}x",
            mm.as_secs_f64() / em.as_secs_f64()
        );
    }
    Ok(())
}

/// Reads during leader kills, summed over trials.
#[derive(Default)]
struct FailoverReads {
    latencies: Vec<Duration>,
    failed: usize,
    unreachable: usize,
}

impl FailoverReads {
    fn report(&mut self, name: &str) {
        self.latencies.sort();
        let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let pct = |p: f64| {
            let i = (self.latencies.len() as f64 * p) as usize;
            ms(self
                .latencies
                .get(i.min(self.latencies.len().saturating_sub(1))))
        };
        println!(
            "  {name:<8} {} reads answered  p50 {:.2} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.0} ms;  \
             {} answered with an error, {} unanswered (the killed server)",
            self.latencies.len(),
            pct(0.5),
            pct(0.99),
            pct(0.999),
            ms(self.latencies.last()),
            self.failed,
            self.unreachable
        );
    }
}

/// Reads `key` through `targets` from 16 connections for 1 s, kills the leader, reads 3 s more.
async fn reads_through_kill(
    targets: &[Target],
    key: &str,
    kill: impl FnOnce(),
    into: &mut FailoverReads,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for i in 0..16 {
        let t = targets[i % targets.len()].clone();
        let (stop, key) = (stop.clone(), key.to_string());
        readers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("client");
            let mut out = FailoverReads::default();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t0 = Instant::now();
                match t.get(&client, &key).await {
                    Ok(true) => out.latencies.push(t0.elapsed()),
                    Ok(false) => out.failed += 1,
                    Err(()) => {
                        out.unreachable += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            out
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        if let Ok(o) = r.await {
            into.latencies.extend(o.latencies);
            into.failed += o.failed;
            into.unreachable += o.unreachable;
        }
    }
}

async fn bench_read_failover(trials: usize) -> anyhow::Result<()> {
    println!(
        "== Reads during leader kills: 16 connections over 3 servers, default-mode (Muster) and \
         linearizable (etcd) reads, kill -9 of the leader, {trials} trials"
    );
    let mut m = FailoverReads::default();
    for _ in 0..trials {
        let root = tempfile::tempdir()?;
        let mut agents = start_muster(root.path(), 3).await?;
        let targets: Vec<Target> = agents
            .iter()
            .map(|a| Target::Muster(format!("http://{}", a.http)))
            .collect();
        let client = reqwest::Client::new();
        while !targets[0].put(&client, "failover/read", b"x").await {}
        let leader = wait_for_agreed_leader(&agents, Duration::from_secs(10))
            .await?
            .unwrap_or(0);
        reads_through_kill(&targets, "failover/read", || agents[leader].kill9(), &mut m).await;
    }
    m.report("muster");
    if etcd_available() {
        let mut e = FailoverReads::default();
        for _ in 0..trials {
            let root = tempfile::tempdir()?;
            let mut etcd = start_etcd(root.path(), 3).await?;
            let leader =
                wait_until("etcd leader", Duration::from_secs(10), || etcd.leader()).await?;
            let targets: Vec<Target> = etcd.urls.iter().map(|u| Target::Etcd(u.clone())).collect();
            let client = reqwest::Client::new();
            while !targets[0].put(&client, "failover/read", b"x").await {}
            reads_through_kill(
                &targets,
                "failover/read",
                || drop(etcd.procs[leader].take()),
                &mut e,
            )
            .await;
        }
        e.report("etcd");
    }
    Ok(())
}

/// Writes every key of 0..KEYS once (100-byte values), 64 at a time.
async fn fill(target: Target) {
    let mut tasks = Vec::new();
    for c in 0..CONNS as u32 {
        let t = target.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut k = c;
            while k < KEYS {
                let key = format!("bench/{k:06}");
                while !t.put(&client, &key, &[b'm'; 100]).await {}
                k += CONNS as u32;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// How much longer than `settle` the idle server runs before its steady idle RSS is read.
const SETTLED: Duration = Duration::from_secs(60);

async fn bench_memory() -> anyhow::Result<()> {
    println!("== Memory: one server idle, then holding {KEYS} keys of 100 bytes (VmRSS)");
    let settle = Duration::from_secs(3);
    let root = tempfile::tempdir()?;
    let agents = start_muster(root.path(), 1).await?;
    let pid = agents[0].pid().expect("pid");
    tokio::time::sleep(settle).await;
    let idle = rss_kb(pid);
    // Again once the agent's periodic tasks (anti-entropy, reconciliation) have all run once:
    // the steady idle figure, a few hundred KB above the first.
    tokio::time::sleep(SETTLED).await;
    let settled = rss_kb(pid);
    fill(Target::Muster(format!("http://{}", agents[0].http))).await;
    tokio::time::sleep(settle).await;
    let loaded = rss_kb(pid);
    let n = get(&format!("http://{}/v1/kv/bench/?keys", agents[0].http))
        .await?
        .json()
        .as_array()
        .map_or(0, Vec::len);
    println!(
        "  muster   idle {:>6.1} MB  loaded {:>6.1} MB  ({n} keys); idle after {} s: {:.1} MB",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0,
        (settle + SETTLED).as_secs(),
        settled as f64 / 1024.0
    );
    drop(agents);
    if etcd_available() {
        let root = tempfile::tempdir()?;
        let etcd = start_etcd(root.path(), 1).await?;
        let pid = etcd.procs[0].as_ref().map(|p| p.0.id()).expect("pid");
        tokio::time::sleep(settle).await;
        let eidle = rss_kb(pid);
        fill(Target::Etcd(etcd.urls[0].clone())).await;
        tokio::time::sleep(settle).await;
        let eloaded = rss_kb(pid);
        println!(
            "  etcd     idle {:>6.1} MB  loaded {:>6.1} MB",
            eidle as f64 / 1024.0,
            eloaded as f64 / 1024.0
        );
        println!(
            "  ratio muster/etcd: idle {:.2}x, loaded {:.2}x",
            idle as f64 / eidle as f64,
            loaded as f64 / eloaded as f64
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = muster_tests::bench::start(20)?;
    let (args, secs) = (&cli.words, cli.secs);
    let want = |name: &str| cli.wants(&["kv-put", "failover", "read-failover", "memory"], name);
    if want("kv-put") {
        let servers = args
            .iter()
            .position(|a| a == "--servers")
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(3);
        bench_kv_put(secs, servers).await?;
    }
    if want("failover") {
        bench_failover(10).await?;
    }
    if want("read-failover") {
        bench_read_failover(10).await?;
    }
    if want("memory") {
        bench_memory().await?;
    }
    Ok(())
}
