//! HTTP API benchmarks on a 3-server loopback cluster, with etcd (Debian's `etcd-server`)
//! driven by the same load generator in the same run.
//!
//! ```sh
//! cargo build --profile dist --bin muster    # the benches run target/dist/muster
//! cargo bench -p muster-tests --bench api                # everything
//! cargo bench -p muster-tests --bench api -- kv-get      # one of: kv-get https health idle-watch wake conns
//! cargo bench -p muster-tests --bench api -- --secs 5
//! ```

use std::time::{Duration, Instant};

use base64::Engine;
use muster_tests::bench::load::{load, load_raw, pin, preload, report, CONNS, KEYS};
use muster_tests::bench::{cpu_ticks, start_etcd, start_muster};
use muster_tests::{get, put, wait_for_agreed_leader, wait_until, Agent};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

async fn bench_kv_get(secs: u64) -> anyhow::Result<()> {
    println!("== KV GET: 3 servers, {CONNS} connections spread over them, {KEYS} keys preloaded, {secs} s per mode");
    let root = tempfile::tempdir()?;
    let agents = start_muster(root.path(), 3).await?;
    let bases: Vec<String> = agents
        .iter()
        .map(|a| format!("http://{}", a.http))
        .collect();
    let first = bases[0].clone();
    preload(KEYS, move |k| {
        let url = format!("{first}/v1/kv/bench/{k:05}");
        async move { put(&url, &[b'v'; 100]).await.is_ok_and(|r| r.status == 200) }
    })
    .await;
    for (name, q) in [
        ("muster default", ""),
        ("muster ?stale", "?stale"),
        ("muster ?consistent", "?consistent"),
    ] {
        let pids: Vec<u32> = agents.iter().filter_map(Agent::pid).collect();
        let ticks = |pids: &[u32]| pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
        let t0 = ticks(&pids);
        let s = load(&bases, secs, move |c, base, k| {
            c.get(format!("{base}/v1/kv/bench/{k:05}{q}"))
        })
        .await;
        report(name, &s);
        // CPU per read: steadier than the rate on a shared machine (100 ticks a second).
        let per = (ticks(&pids) - t0) as f64 * 10_000.0 / s.ok.max(1) as f64;
        println!("  {:<22} server CPU {per:.1} µs per read", "");
    }
    drop(agents);
    if std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok()
    {
        let root = tempfile::tempdir()?;
        let etcd = start_etcd(root.path(), 3).await?;
        let first = etcd.urls[0].clone();
        preload(KEYS, move |k| {
            let url = format!("{first}/v3/kv/put");
            let body = serde_json::json!({"key": B64.encode(format!("bench/{k:05}")), "value": B64.encode([b'v'; 100])});
            async move { reqwest::Client::new().post(&url).json(&body).send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        for (name, serializable) in [("etcd linearizable", false), ("etcd serializable", true)] {
            let s = load(&etcd.urls, secs, move |c, base, k| {
                let body = serde_json::json!({"key": B64.encode(format!("bench/{k:05}")), "serializable": serializable});
                c.post(format!("{base}/v3/kv/range")).json(&body)
            })
            .await;
            report(name, &s);
        }
    }
    Ok(())
}

/// A rustls client config trusting the CA in `dir` and presenting its client certificate.
fn tls_client(dir: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs =
        |f: &str| CertificateDer::pem_file_iter(dir.join(f))?.collect::<Result<Vec<_>, _>>();
    let mut roots = rustls::RootCertStore::empty();
    for c in certs("consul-agent-ca.pem")? {
        roots.add(c)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            certs("dc1-client-consul-0.pem")?,
            PrivateKeyDer::from_pem_file(dir.join("dc1-client-consul-0-key.pem"))?,
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Rounds of the HTTPS benchmark.
const HTTPS_ROUNDS: usize = 3;

/// KV GET over HTTPS (with a client certificate, `verify_incoming`) against plain HTTP on the
/// same server, kept-alive connections both: the cost of TLS once the handshake is paid.
async fn bench_https_kv_get(secs: u64) -> anyhow::Result<()> {
    println!(
        "== KV GET, HTTPS vs HTTP: 1 server, {CONNS} kept-alive connections, {secs} s per mode"
    );
    let root = tempfile::tempdir()?;
    let certs = root.path().join("certs");
    std::fs::create_dir_all(&certs)?;
    for args in [
        &["tls", "ca", "create"][..],
        &["tls", "cert", "create", "-server"],
        &["tls", "cert", "create", "-client"],
    ] {
        let st = std::process::Command::new(muster_tests::muster_bin())
            .args(args)
            .current_dir(&certs)
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(st.success(), "muster {args:?} failed");
    }
    let f = |n: &str| certs.join(n).display().to_string();
    let cfg = root.path().join("tls.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "ports": {"https": 0},
            "tls": {"defaults": {
                "ca_file": f("consul-agent-ca.pem"),
                "cert_file": f("dc1-server-consul-0.pem"),
                "key_file": f("dc1-server-consul-0-key.pem"),
                "verify_incoming": true,
            }}
        })
        .to_string(),
    )?;
    let cfg = cfg.display().to_string();
    let agent = muster_tests::single_server(root.path(), "s1", &["-config-file", &cfg]).await?;
    let https = agent
        .https
        .ok_or_else(|| anyhow::anyhow!("no HTTPS port"))?;
    let first = format!("http://{}", agent.http);
    preload(KEYS, move |k| {
        let url = format!("{first}/v1/kv/bench/{k:05}");
        async move { put(&url, &[b'v'; 100]).await.is_ok_and(|r| r.status == 200) }
    })
    .await;
    let tls = std::sync::Arc::new(tls_client(&certs)?);
    let pid = agent.pid().unwrap_or(0);
    // The server on one core and this load generator on the other: otherwise the client's own
    // TLS work takes the server's CPU and the ratio measures both.
    let pinned = pin(pid, "0") && pin(std::process::id(), "1");
    println!("  server and load generator pinned to a core each: {pinned}");
    // Rounds of HTTP, HTTPS, HTTPS, HTTP, compared by their medians: drift on a shared
    // machine falls on both alike, and one disturbed phase does not decide the ratio.
    let mut rates = [Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new()];
    let round = [
        (0, "muster HTTP", agent.http),
        (1, "muster HTTPS", https),
        (1, "muster HTTPS", https),
        (0, "muster HTTP", agent.http),
    ];
    for (tls_on, name, addr) in round.into_iter().cycle().take(round.len() * HTTPS_ROUNDS) {
        let t0 = cpu_ticks(pid);
        let tls = (tls_on == 1).then(|| tls.clone());
        let s = load_raw(addr, tls, secs, |k| format!("/v1/kv/bench/{k:05}?stale")).await;
        report(name, &s);
        let per = (cpu_ticks(pid) - t0) as f64 * 10_000.0 / s.ok.max(1) as f64;
        println!("  {:<22} server CPU {per:.1} µs per read", "");
        rates[tls_on].push(s.rate());
        cpu[tls_on].push(per);
    }
    // The benchmarks after this one share both cores again.
    pin(std::process::id(), "0-1");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => 0.0,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let [mut http_rate, mut https_rate] = rates;
    let [mut http_cpu, mut https_cpu] = cpu;
    println!(
        "  HTTPS / HTTP (medians of {HTTPS_ROUNDS} rounds): rate {:.2}, server CPU per read {:.2}",
        median(&mut https_rate) / median(&mut http_rate).max(1.0),
        median(&mut https_cpu) / median(&mut http_cpu).max(f64::MIN_POSITIVE)
    );
    Ok(())
}

async fn bench_health(secs: u64) -> anyhow::Result<()> {
    println!(
        "== /v1/health/service/web?passing with 1,000 instances, {CONNS} connections, {secs} s"
    );
    let root = tempfile::tempdir()?;
    let agents = start_muster(root.path(), 3).await?;
    let bases: Vec<String> = agents
        .iter()
        .map(|a| format!("http://{}", a.http))
        .collect();
    let first = bases[0].clone();
    preload(1000, move |i| {
        let url = format!("{first}/v1/catalog/register");
        let body = serde_json::json!({"Node": format!("node{i:04}"), "Address": format!("10.0.{}.{}", i / 250, i % 250 + 1),
            "Service": {"Service": "web", "Port": 80, "Tags": ["v1"]},
            "Check": {"CheckID": "service:web", "ServiceID": "web", "Status": "passing"}});
        async move { put(&url, body.to_string().as_bytes()).await.is_ok_and(|r| r.status == 200) }
    })
    .await;
    let n = get(&format!("{}/v1/health/service/web?passing", bases[0]))
        .await?
        .json()
        .as_array()
        .map_or(0, Vec::len);
    let s = load(&bases, secs, |c, base, _| {
        c.get(format!("{base}/v1/health/service/web?passing"))
    })
    .await;
    report(&format!("muster ({n} instances)"), &s);
    Ok(())
}

async fn bench_idle_watch() -> anyhow::Result<()> {
    const WATCHERS: u32 = 10_000;
    println!("== {WATCHERS} idle blocking queries on one server: its CPU over 10 s");
    let root = tempfile::tempdir()?;
    // Every watcher connects from 127.0.0.1: lift the per-client connection limit (200).
    let cfg = root.path().join("limits.json");
    std::fs::write(&cfg, r#"{"limits": {"http_max_conns_per_client": 0}}"#)?;
    let cfg = cfg.to_string_lossy().into_owned();
    let a = Agent::start(
        "s1",
        &root.path().join("s1"),
        &[
            "-server",
            "-bootstrap-expect",
            "1",
            "-log-level",
            "warn",
            "-config-file",
            &cfg,
        ],
    )?;
    wait_until("leader", Duration::from_secs(10), || {
        muster_tests::leader_of(&a)
    })
    .await?;
    let base = format!("http://{}", a.http);
    let b2 = base.clone();
    preload(KEYS, move |k| {
        let url = format!("{b2}/v1/kv/bench/{k:05}");
        async move { put(&url, b"v").await.is_ok_and(|r| r.status == 200) }
    })
    .await;
    let index = get(&format!("{base}/v1/kv/bench/?recurse"))
        .await?
        .header("x-consul-index")
        .unwrap_or_default()
        .parse::<u64>()?;
    let pid = a.pid().expect("pid");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..WATCHERS {
        let c = client.clone();
        let url = format!("{base}/v1/kv/bench/{:05}?index={index}&wait=5m", i % KEYS);
        tasks.spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) });
    }
    // Let every watcher connect and park.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let early: Vec<_> = std::iter::from_fn(|| tasks.try_join_next()).collect();
    let ticks_per_sec = 100.0;
    let t0 = cpu_ticks(pid);
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let used = (cpu_ticks(pid) - t0) as f64 / ticks_per_sec / w0.elapsed().as_secs_f64();
    println!(
        "  muster: {:.2}% of one core with {} watchers parked ({} returned early)",
        used * 100.0,
        tasks.len(),
        early.len()
    );
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    if let Some(l) = rss.lines().find(|l| l.starts_with("VmRSS")) {
        println!("  muster {l}");
    }
    tasks.abort_all();
    Ok(())
}

/// Open file descriptors of `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Opens `n` TCP connections to `addr`, at most 100 from each source address (127.0.1.x,
/// 127.0.2.x, ...: many clients, each under the per-client limit), each sending `request`
/// once. With `read_reply`, each waits for its reply (an idle keep-alive connection after);
/// otherwise the request stays parked.
async fn open_conns(
    addr: std::net::SocketAddr,
    n: usize,
    request: impl Fn(usize) -> String,
    read_reply: bool,
) -> anyhow::Result<Vec<tokio::net::TcpStream>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let src =
            std::net::Ipv4Addr::new(127, 1 + (i / 25_000) as u8, (1 + i / 100 % 250) as u8, 1);
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind((src, 0).into())?;
        let mut s = sock.connect(addr).await?;
        s.write_all(request(i).as_bytes()).await?;
        if read_reply {
            let mut buf = [0u8; 4096];
            let got = s.read(&mut buf).await?;
            anyhow::ensure!(
                buf[..got].starts_with(b"HTTP/1.1 200"),
                "connection {i} refused"
            );
        }
        conns.push(s);
    }
    Ok(conns)
}

/// RSS and open descriptors of one server holding 5,000 idle keep-alive connections, then
/// 2,000 parked blocking queries, each from its own connection.
async fn bench_conns() -> anyhow::Result<()> {
    const IDLE: usize = 5_000;
    const PARKED: usize = 2_000;
    println!("== Connections: one server with {IDLE} idle HTTP connections, then {PARKED} parked blocking queries");
    // This process holds every client end: lift its own soft descriptor limit.
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let root = tempfile::tempdir()?;
    let a = muster_tests::single_server(root.path(), "s1", &["-log-level", "warn"]).await?;
    let pid = a.pid().expect("pid");
    put(&format!("http://{}/v1/kv/park", a.http), b"v").await?;
    let index = get(&format!("http://{}/v1/kv/park", a.http))
        .await?
        .header("x-consul-index")
        .unwrap_or_default()
        .parse::<u64>()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss0, fd0) = (muster_tests::bench::rss_kb(pid), fd_count(pid));
    println!(
        "  idle server:           RSS {:>6.1} MB  fds {fd0}",
        rss0 as f64 / 1024.0
    );

    let idle = open_conns(
        a.http,
        IDLE,
        |_| "GET /v1/status/leader HTTP/1.1\r\nHost: bench\r\n\r\n".to_string(),
        true,
    )
    .await?;
    let t = Instant::now();
    let probe = get(&format!("http://{}/v1/status/leader", a.http)).await?;
    let probe_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (rss1, fd1) = (muster_tests::bench::rss_kb(pid), fd_count(pid));
    println!(
        "  + {IDLE} idle conns:     RSS {:>6.1} MB  fds {fd1}  ({:.1} KB per connection; a new request meanwhile: {} in {probe_ms:.1} ms)",
        rss1 as f64 / 1024.0,
        (rss1.saturating_sub(rss0)) as f64 / IDLE as f64,
        probe.status
    );
    drop(idle);
    wait_until(
        "idle connections closed",
        Duration::from_secs(10),
        || async { (fd_count(pid) <= fd0 + 10).then_some(()) },
    )
    .await?;

    let parked = open_conns(
        a.http,
        PARKED,
        |i| format!("GET /v1/kv/park?index={index}&wait=5m&n={i} HTTP/1.1\r\nHost: bench\r\n\r\n"),
        false,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss2, fd2) = (muster_tests::bench::rss_kb(pid), fd_count(pid));
    println!(
        "  + {PARKED} parked queries: RSS {:>6.1} MB  fds {fd2}  ({:.1} KB per query)",
        rss2 as f64 / 1024.0,
        (rss2.saturating_sub(rss0)) as f64 / PARKED as f64
    );
    drop(parked);
    Ok(())
}

async fn bench_wake() -> anyhow::Result<()> {
    const ROUNDS: usize = 200;
    println!("== Blocking query wake-up: PUT on the leader -> watcher's reply, watchers on every server, {ROUNDS} rounds");
    let root = tempfile::tempdir()?;
    let agents = start_muster(root.path(), 3).await?;
    let leader = wait_for_agreed_leader(&agents, Duration::from_secs(10))
        .await?
        .unwrap_or(0);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut lat = Vec::new();
    for round in 0..ROUNDS {
        let watcher = &agents[round % 3];
        let r = get(&watcher.url("/v1/kv/wake")).await?;
        let index: u64 = r
            .header("x-consul-index")
            .unwrap_or_default()
            .parse()
            .unwrap_or(1);
        let url = watcher.url(&format!("/v1/kv/wake?index={index}&wait=30s"));
        let c = client.clone();
        let waiting = tokio::spawn(async move {
            let r = c.get(url).send().await;
            (Instant::now(), r.map(|r| r.status().as_u16()))
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        put(
            &agents[leader].url("/v1/kv/wake"),
            format!("{round}").as_bytes(),
        )
        .await?;
        let (t1, status) = waiting.await?;
        if status.is_ok_and(|s| s == 200) {
            lat.push(t1.saturating_duration_since(t0));
        }
    }
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "  muster: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} rounds)",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        lat.len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = muster_tests::bench::start(10)?;
    let secs = cli.secs;
    let names = ["kv-get", "https", "health", "idle-watch", "wake", "conns"];
    let want = |n: &str| cli.wants(&names, n);
    if want("kv-get") {
        bench_kv_get(secs).await?;
    }
    if want("https") {
        bench_https_kv_get(secs).await?;
    }
    if want("health") {
        bench_health(secs).await?;
    }
    if want("idle-watch") {
        bench_idle_watch().await?;
    }
    if want("wake") {
        bench_wake().await?;
    }
    if want("conns") {
        bench_conns().await?;
    }
    Ok(())
}
