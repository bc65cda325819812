//! HTTP load: `CONNS` kept-alive connections issuing requests for a phase, and the preload
//! of `KEYS` keys before it.

use std::time::{Duration, Instant};

use rand::Rng;

use super::Stats;

/// Connections per load phase.
pub const CONNS: usize = 64;
/// Keys preloaded and read.
pub const KEYS: u32 = 10_000;

/// One line: rate, latency percentiles and counts of a phase.
pub fn report(name: &str, s: &Stats) {
    println!(
        "  {name:<22} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} ok, {} failed)",
        s.rate(),
        s.p50_ms,
        s.p99_ms,
        s.ok,
        s.failed
    );
}

/// `CONNS` connections, each pinned to one base URL, issuing `make(base, key)` requests.
pub async fn load<F>(bases: &[String], secs: u64, make: F) -> Stats
where
    F: Fn(&reqwest::Client, &str, u32) -> reqwest::RequestBuilder + Send + Sync + Clone + 'static,
{
    load_with(bases, secs, reqwest::Client::builder, make).await
}

/// [`load`] with clients from `builder` (HTTPS ones, say), each kept alive on one connection.
pub async fn load_with<B, F>(bases: &[String], secs: u64, builder: B, make: F) -> Stats
where
    B: Fn() -> reqwest::ClientBuilder + Send + Sync + Clone + 'static,
    F: Fn(&reqwest::Client, &str, u32) -> reqwest::RequestBuilder + Send + Sync + Clone + 'static,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..CONNS {
        let base = bases[i % bases.len()].clone();
        let make = make.clone();
        let builder = builder.clone();
        tasks.push(tokio::spawn(async move {
            let client = builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            let (mut lat, mut failed) = (Vec::new(), 0);
            while Instant::now() < deadline {
                let key = rand::rng().random_range(0..KEYS);
                let t0 = Instant::now();
                let ok = match make(&client, &base, key).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    lat.push(t0.elapsed());
                } else {
                    failed += 1;
                }
            }
            (lat, failed)
        }));
    }
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await.expect("task");
        all.extend(l);
        failed += f;
    }
    Stats::new(all, failed, start.elapsed().as_secs_f64())
}

/// Writes `count` keys `bench/NNNNN` through `put_one`, 64 at a time.
pub async fn preload<F, Fut>(count: u32, put_one: F)
where
    F: Fn(u32) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let mut tasks = Vec::new();
    for c in 0..CONNS as u32 {
        let f = put_one.clone();
        tasks.push(tokio::spawn(async move {
            let mut k = c;
            while k < count {
                while !f(k).await {}
                k += CONNS as u32;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// [`load`] with a minimal HTTP/1.1 client of its own instead of reqwest: `CONNS` kept-alive
/// connections to `addr` (over TLS with `tls`), each sending `GET path(key)` and reading the
/// answer by its `content-length`. It costs the load generator a fraction of reqwest's CPU,
/// so on a shared machine the server, not the client, sets the pace.
pub async fn load_raw<P>(
    addr: std::net::SocketAddr,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    secs: u64,
    path: P,
) -> Stats
where
    P: Fn(u32) -> String + Send + Sync + Clone + 'static,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let (tls, path) = (tls.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            match tls {
                None => raw_loop(tcp, deadline, path).await,
                Some(cfg) => {
                    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                    let stream = tokio_rustls::TlsConnector::from(cfg)
                        .connect(name, tcp)
                        .await?;
                    raw_loop(stream, deadline, path).await
                }
            }
        }));
    }
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        match t.await {
            Ok(Ok((l, f))) => {
                all.extend(l);
                failed += f;
            }
            _ => failed += 1,
        }
    }
    Stats::new(all, failed, start.elapsed().as_secs_f64())
}

/// Requests on one connection until `deadline`: latencies of the 2xx answers, and the count of
/// the others. A malformed answer ends the connection with an error.
async fn raw_loop<S, P>(
    mut s: S,
    deadline: Instant,
    path: P,
) -> anyhow::Result<(Vec<Duration>, usize)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    P: Fn(u32) -> String,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut lat, mut failed) = (Vec::new(), 0);
    let mut buf = Vec::with_capacity(16 * 1024);
    while Instant::now() < deadline {
        let key = rand::rng().random_range(0..KEYS);
        let req = format!("GET {} HTTP/1.1\r\nhost: localhost\r\n\r\n", path(key));
        let t0 = Instant::now();
        s.write_all(req.as_bytes()).await?;
        buf.clear();
        let (head_len, body_len) = loop {
            if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..h])?.to_ascii_lowercase();
                let len = head
                    .split("\r\n")
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .ok_or_else(|| anyhow::anyhow!("answer without content-length"))?
                    .trim()
                    .parse::<usize>()?;
                break (h + 4, len);
            }
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
        };
        while buf.len() < head_len + body_len {
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
        }
        if buf.starts_with(b"HTTP/1.1 2") {
            lat.push(t0.elapsed());
        } else {
            failed += 1;
        }
    }
    Ok((lat, failed))
}

/// Pins every thread of `pid` to the CPU list `cpus` (`taskset -c` syntax), so a server and its
/// load generator each get a core of their own instead of trading both. Returns whether it took.
pub fn pin(pid: u32, cpus: &str) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
