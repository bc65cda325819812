//! Local-agent benchmark: one agent with 1,000 services, each with a 10 s script check
//! (`/bin/true`) and a TTL check; TTL checks updated 10 times a second in total. Reports the
//! agent's CPU and RSS, and catalog staleness: the time from a check update to
//! `/v1/health/checks/<service>` showing it. Before that, with those 1,000 services in place:
//! HTTP registrations, one at a time (the PUT's latency, and the time until the catalog
//! lists the service) and 200 at once from 20 clients.
//!
//! ```sh
//! cargo build --profile dist --bin muster    # the benches run target/dist/muster
//! cargo bench -p muster-tests --bench agent [-- --secs 30]
//! ```

use std::time::{Duration, Instant};

use muster_tests::bench::{cpu_ticks, rss_kb};
use muster_tests::{get, put, wait_until, Agent};
use rand::Rng;

const SERVICES: usize = 1000;

fn rss_mb(pid: u32) -> f64 {
    rss_kb(pid) as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The p-th fraction of sorted durations, in ms.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    ms(sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)])
}

/// The `X-Consul-Index` of `path` now.
async fn index_of(a: &Agent, path: &str) -> anyhow::Result<u64> {
    Ok(get(&a.url(path))
        .await?
        .header("x-consul-index")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Follows `path` the way consumers watch it, with blocking queries from `index`, until an
/// answer satisfies `seen` (true) or 10 s have passed since `since` (false).
async fn watch_until(
    client: &reqwest::Client,
    a: &Agent,
    path: &str,
    mut index: u64,
    since: Instant,
    seen: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<bool> {
    while since.elapsed() < Duration::from_secs(10) {
        let r = client
            .get(a.url(&format!("{path}?index={index}&wait=10s")))
            .send()
            .await?;
        index = r
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(index);
        if seen(&r.json().await?) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// HTTP registrations on an agent that already holds the 1,000 services: what a deploy
/// tool registering one more instance sees, and a burst from many at once.
async fn registrations(a: &Agent) -> anyhow::Result<()> {
    const ONE_BY_ONE: usize = 200;
    let register = a.url("/v1/agent/service/register");
    let (mut acked, mut listed) = (Vec::new(), Vec::new());
    let client = reqwest::Client::new();
    for i in 0..ONE_BY_ONE {
        let name = format!("reg{i:03}");
        let path = format!("/v1/catalog/service/{name}");
        let index = index_of(a, &path).await?;
        let def = serde_json::json!({"Name": name, "Port": 20000 + i, "Check": {"TTL": "1h"}});
        let sent = Instant::now();
        let r = put(&register, def.to_string().as_bytes()).await?;
        anyhow::ensure!(
            r.status == 200,
            "register {name}: {} {}",
            r.status,
            r.text()
        );
        acked.push(sent.elapsed());
        let listed_now = |v: &serde_json::Value| v.as_array().is_some_and(|l| !l.is_empty());
        let seen = watch_until(&client, a, &path, index, sent, listed_now).await?;
        anyhow::ensure!(seen, "{name} not listed in 10 s");
        listed.push(sent.elapsed());
    }
    acked.sort();
    listed.sort();
    println!(
        "  {ONE_BY_ONE} registrations one at a time: acknowledged p50 {:.1} ms, p99 {:.1} ms; \
         in the catalog p50 {:.1} ms, p99 {:.1} ms",
        pct(&acked, 0.5),
        pct(&acked, 0.99),
        pct(&listed, 0.5),
        pct(&listed, 0.99)
    );
    let sent = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..20 {
        let register = register.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..10 {
                let def = serde_json::json!({"Name": "burst", "ID": format!("burst{c:02}-{k}"),
                                             "Port": 30000 + c * 10 + k});
                let r = put(&register, def.to_string().as_bytes()).await?;
                anyhow::ensure!(r.status == 200, "burst register: {}", r.status);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let all_acked = sent.elapsed();
    wait_until("burst in the catalog", Duration::from_secs(30), || async {
        let v = get(&a.url("/v1/catalog/service/burst")).await.ok()?.json();
        (v.as_array()?.len() == 200).then_some(())
    })
    .await?;
    println!(
        "  200 registrations from 20 clients at once: all acknowledged in {:.0} ms, all in the \
         catalog in {:.0} ms",
        ms(all_acked),
        ms(sent.elapsed())
    );
    let sent = Instant::now();
    for i in 0..ONE_BY_ONE {
        put(
            &a.url(&format!("/v1/agent/service/deregister/reg{i:03}")),
            b"",
        )
        .await?;
    }
    for c in 0..20 {
        for k in 0..10 {
            put(
                &a.url(&format!("/v1/agent/service/deregister/burst{c:02}-{k}")),
                b"",
            )
            .await?;
        }
    }
    let all_acked = sent.elapsed();
    // Until the catalog is back as it was, so that what follows is measured on its own.
    wait_until(
        "deregistrations in the catalog",
        Duration::from_secs(30),
        || async {
            let v = get(&a.url("/v1/catalog/services")).await.ok()?.json();
            (v.as_object()?.len() == SERVICES + 1).then_some(())
        },
    )
    .await?;
    println!(
        "  {} deregistrations one at a time: all acknowledged in {:.0} ms, gone from the \
         catalog in {:.0} ms",
        ONE_BY_ONE + 200,
        ms(all_acked),
        ms(sent.elapsed())
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = muster_tests::bench::start(30)?;
    let secs = cli.secs;
    println!("== Agent: {SERVICES} services x (10 s script check + TTL check), 10 TTL updates/s, {secs} s");
    let root = tempfile::tempdir()?;
    let cfg = root.path().join("cfg");
    std::fs::create_dir_all(&cfg)?;
    let services: Vec<serde_json::Value> = (0..SERVICES)
        .map(|i| {
            serde_json::json!({"name": format!("svc{i:04}"), "port": 10000 + i, "checks": [
                {"id": format!("script{i:04}"), "args": ["/bin/true"], "interval": "10s"},
                {"id": format!("ttl{i:04}"), "ttl": "1h", "status": "passing"}]})
        })
        .collect();
    std::fs::write(
        cfg.join("services.json"),
        serde_json::to_vec(&serde_json::json!({"services": services}))?,
    )?;
    std::fs::write(
        cfg.join("agent.json"),
        br#"{"enable_local_script_checks": true}"#,
    )?;
    let a = Agent::start(
        "bench",
        &root.path().join("data"),
        &[
            "-server",
            "-bootstrap-expect",
            "1",
            "-log-level",
            "warn",
            "-config-dir",
            &cfg.display().to_string(),
        ],
    )?;
    let pid = a.pid().expect("pid");
    wait_until(
        "every check in the catalog",
        Duration::from_secs(120),
        || async {
            let v = get(&a.url("/v1/health/node/bench")).await.ok()?.json();
            (v.as_array()?.len() > 2 * SERVICES).then_some(())
        },
    )
    .await?;
    // Let the first round of script checks (spread over 10 s) settle.
    tokio::time::sleep(Duration::from_secs(11)).await;

    registrations(&a).await?;

    let client = reqwest::Client::new();
    let mut staleness = Vec::new();
    let t0 = cpu_ticks(pid);
    let w0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut status_of = std::collections::HashMap::new();
    while w0.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let i = rand::rng().random_range(0..SERVICES);
        let passing = !status_of.get(&i).copied().unwrap_or(true);
        status_of.insert(i, passing);
        let (verb, want) = if passing {
            ("pass", "passing")
        } else {
            ("fail", "critical")
        };
        // Watch the way consumers do: a blocking query from the current index.
        let path = format!("/v1/health/checks/svc{i:04}");
        let index = index_of(&a, &path).await?;
        let sent = Instant::now();
        put(&a.url(&format!("/v1/agent/check/{verb}/ttl{i:04}")), b"").await?;
        let id = format!("ttl{i:04}");
        let shows = |v: &serde_json::Value| {
            v.as_array()
                .into_iter()
                .flatten()
                .any(|c| c["CheckID"] == id.as_str() && c["Status"] == want)
        };
        let seen = watch_until(&client, &a, &path, index, sent, shows).await?;
        if seen {
            staleness.push(sent.elapsed());
        }
        if !seen {
            let agent = get(&a.url("/v1/agent/checks")).await?.json();
            let cat = get(&a.url(&path)).await?;
            eprintln!("  not visible within 10 s: ttl{i:04} {verb}; agent has {}, catalog {} (index {:?})",
                agent[format!("ttl{i:04}")]["Status"], cat.text(), cat.header("x-consul-index"));
            if std::env::var_os("MUSTER_BENCH_DEBUG").is_some() {
                let logs = a.logs();
                let lines: Vec<&str> = logs
                    .lines()
                    .filter(|l| l.contains("anti-entropy") || l.contains("WARN"))
                    .collect();
                for l in &lines[lines.len().saturating_sub(25)..] {
                    eprintln!("    {l}");
                }
            }
        }
    }
    let cpu = (cpu_ticks(pid) - t0) as f64 / 100.0 / w0.elapsed().as_secs_f64();
    staleness.sort();
    println!(
        "  agent CPU {:.1}% of one core, RSS {:.1} MB",
        cpu * 100.0,
        rss_mb(pid)
    );
    println!(
        "  catalog staleness over {} updates: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        staleness.len(),
        pct(&staleness, 0.5),
        pct(&staleness, 0.99),
        pct(&staleness, 1.0)
    );
    Ok(())
}
