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
