//! What ACLs cost: KV GET and PUT on a 3-server cluster with ACLs on, every request presenting
//! a token of 50 policies of 20 rules each, against the same cluster with ACLs off; then DNS
//! (dnsperf) on one server answering with such a token as its `default`, against ACLs off.
//! Modes run off, on, on, off in the same run, so that drift on a shared machine falls on
//! both alike.
//!
//! ```sh
//! cargo build --profile dist --bin muster    # the benches run target/dist/muster
//! cargo bench -p muster-tests --bench acl                 # everything
//! cargo bench -p muster-tests --bench acl -- kv           # one of: kv dns
//! cargo bench -p muster-tests --bench acl -- --secs 5
//! ```

use std::path::Path;
use std::time::Duration;

use muster_tests::bench::dnsperf::{dnsperf, report as report_dns};
use muster_tests::bench::load::{load, preload, report, CONNS, KEYS};
use muster_tests::bench::{cpu_ticks, start_muster_with};
use muster_tests::{wait_until, Agent};
use serde_json::json;

/// The management token every mode is configured with (ignored with ACLs off).
const MANAGEMENT: &str = "0b6a5b6e-0000-4000-8000-00000000a001";
/// The secret of the 50-policy token: presented by the HTTP load, and DNS's `default`.
const BIG: &str = "0b6a5b6e-0000-4000-8000-00000000b16b";
const POLICIES: usize = 50;
const RULES: usize = 20;

/// The agent config of one mode.
fn config(root: &Path, acl: bool) -> anyhow::Result<String> {
    let path = root.join(format!("acl-{acl}.json"));
    let conf = json!({"acl": {"enabled": acl, "default_policy": "deny",
        "tokens": {"initial_management": MANAGEMENT, "default": BIG}}});
    std::fs::write(&path, conf.to_string())?;
    Ok(path.display().to_string())
}

/// Policy `i`'s rules: twenty, over keys, services, nodes and sessions, none of which the
/// load touches, except in policy 0, whose first rules grant what the load needs. Every
/// lookup thus searches the merged rules of all fifty.
fn rules(i: usize) -> String {
    let mut out = String::new();
    for j in 0..RULES {
        let rule = match (i, j) {
            (0, 0) => r#"key_prefix "bench/" { policy = "write" }"#.to_string(),
            (0, 1) => r#"service_prefix "" { policy = "read" }"#.to_string(),
            (0, 2) => r#"node_prefix "" { policy = "read" }"#.to_string(),
            (_, j) => match j % 5 {
                0 => format!(r#"key_prefix "app{i}/r{j}/" {{ policy = "write" }}"#),
                1 => format!(r#"service_prefix "svc{i}-{j}" {{ policy = "write" }}"#),
                2 => format!(r#"node_prefix "node{i}-{j}" {{ policy = "read" }}"#),
                3 => format!(r#"key "cfg/{i}/{j}" {{ policy = "deny" }}"#),
                _ => format!(r#"session_prefix "s{i}-{j}" {{ policy = "write" }}"#),
            },
        };
        out.push_str(&rule);
        out.push('\n');
    }
    out
}

/// Writes the fifty policies and the token linking them, once the first leader has made the
/// management token.
async fn make_big_token(base: &str) -> anyhow::Result<()> {
    let c = reqwest::Client::new();
    wait_until("management token", Duration::from_secs(30), || async {
        let r = c
            .get(format!("{base}/v1/acl/token/self"))
            .header("X-Consul-Token", MANAGEMENT)
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await?;
    let mut links = Vec::new();
    for i in 0..POLICIES {
        let name = format!("bench-{i:02}");
        let r = c
            .put(format!("{base}/v1/acl/policy"))
            .header("X-Consul-Token", MANAGEMENT)
            .json(&json!({"Name": name, "Rules": rules(i)}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "policy: {}", r.text().await?);
        links.push(json!({ "Name": name }));
    }
    let r = c
        .put(format!("{base}/v1/acl/token"))
        .header("X-Consul-Token", MANAGEMENT)
        .json(&json!({"SecretID": BIG, "Description": "bench", "Policies": links}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "token: {}", r.text().await?);
    Ok(())
}

/// The server CPU per request of a phase, in microseconds (100 ticks a second).
fn cpu_per(pids: &[u32], t0: u64, ok: usize) -> f64 {
    let now: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    (now - t0) as f64 * 10_000.0 / ok.max(1) as f64
}

/// One mode's KV figures: GET and PUT rates and server CPU per request.
struct Kv {
    get: (f64, f64),
    put: (f64, f64),
}

async fn kv_mode(root: &Path, acl: bool, secs: u64) -> anyhow::Result<Kv> {
    let cfg = config(root, acl)?;
    let agents = start_muster_with(root, 3, &["-config-file", &cfg]).await?;
    let bases: Vec<String> = agents
        .iter()
        .map(|a| format!("http://{}", a.http))
        .collect();
    if acl {
        make_big_token(&bases[0]).await?;
    }
    let first = bases[0].clone();
    preload(KEYS, move |k| {
        let url = format!("{first}/v1/kv/bench/{k:05}");
        async move {
            reqwest::Client::new()
                .put(&url)
                .header("X-Consul-Token", BIG)
                .body(vec![b'v'; 100])
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    let pids: Vec<u32> = agents.iter().filter_map(Agent::pid).collect();
    let ticks = |pids: &[u32]| pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
    let label = if acl { "ACLs on " } else { "ACLs off" };

    let t0 = ticks(&pids);
    let g = load(&bases, secs, |c, base, k| {
        c.get(format!("{base}/v1/kv/bench/{k:05}"))
            .header("X-Consul-Token", BIG)
    })
    .await;
    report(&format!("{label} GET"), &g);
    let get = (g.rate(), cpu_per(&pids, t0, g.ok));

    let t0 = ticks(&pids);
    let p = load(&bases, secs, |c, base, k| {
        c.put(format!("{base}/v1/kv/bench/{k:05}"))
            .header("X-Consul-Token", BIG)
            .body(vec![b'v'; 100])
    })
    .await;
    report(&format!("{label} PUT"), &p);
    let put = (p.rate(), cpu_per(&pids, t0, p.ok));
    println!(
        "  {:<22} server CPU {:.1} µs per GET, {:.1} µs per PUT",
        "", get.1, put.1
    );
    anyhow::ensure!(
        g.failed == 0 && p.failed == 0,
        "{label}: requests failed (a token without the rights it needs?)"
    );
    Ok(Kv { get, put })
}

async fn bench_kv(secs: u64) -> anyhow::Result<()> {
    println!("== KV with ACLs on (a token of {POLICIES} policies x {RULES} rules) and off: 3 servers, {CONNS} connections, {KEYS} keys, {secs} s per phase");
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for acl in [false, true, true, false] {
        let root = tempfile::tempdir()?;
        let kv = kv_mode(root.path(), acl, secs).await?;
        if acl { &mut on } else { &mut off }.push(kv);
    }
    let mean = |v: &[Kv], f: fn(&Kv) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (g_off, g_on) = (mean(&off, |k| k.get.0), mean(&on, |k| k.get.0));
    let (p_off, p_on) = (mean(&off, |k| k.put.0), mean(&on, |k| k.put.0));
    let (gc_off, gc_on) = (mean(&off, |k| k.get.1), mean(&on, |k| k.get.1));
    let (pc_off, pc_on) = (mean(&off, |k| k.put.1), mean(&on, |k| k.put.1));
    println!(
        "  GET on/off: rate {:.2}, CPU per GET {:.2} ({gc_on:.1} / {gc_off:.1} µs)",
        g_on / g_off,
        gc_on / gc_off
    );
    println!(
        "  PUT on/off: rate {:.2}, CPU per PUT {:.2} ({pc_on:.1} / {pc_off:.1} µs)",
        p_on / p_off,
        pc_on / pc_off
    );
    Ok(())
}

/// One server with 100 services x 3 instances; dnsperf over their names.
async fn dns_mode(root: &Path, acl: bool, secs: u64) -> anyhow::Result<f64> {
    let cfg = config(root, acl)?;
    let a = muster_tests::single_server(root, "dns", &["-log-level", "warn", "-config-file", &cfg])
        .await?;
    let base = format!("http://{}", a.http);
    if acl {
        make_big_token(&base).await?;
    }
    let c = reqwest::Client::new();
    let mut queries = String::new();
    for s in 0..100 {
        for i in 0..3 {
            let body = json!({"Node": format!("n{s:03}{i}"), "Address": format!("10.0.{s}.{}", i + 1),
                "Service": {"Service": format!("svc{s:03}"), "Port": 8000 + i}});
            let r = c
                .put(format!("{base}/v1/catalog/register"))
                .header("X-Consul-Token", MANAGEMENT)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "register: {}", r.text().await?);
        }
        queries.push_str(&format!(
            "svc{s:03}.service.consul A\nn{s:03}0.node.consul A\n_svc{s:03}._tcp.service.consul SRV\n"
        ));
    }
    let qfile = root.join("queries.txt");
    std::fs::write(&qfile, queries)?;
    let port = a.dns.ok_or_else(|| anyhow::anyhow!("no DNS port"))?.port();
    let pid = a.pid().unwrap_or(0);
    let t0 = cpu_ticks(pid);
    let run = dnsperf(port, &qfile, secs, None)?;
    report_dns(if acl { "ACLs on" } else { "ACLs off" }, &run);
    println!(
        "  {:<8} server CPU {:.1} µs per query",
        "",
        (cpu_ticks(pid) - t0) as f64 * 10_000.0 / (run.qps * secs as f64).max(1.0)
    );
    anyhow::ensure!(run.errors == 0, "DNS answered with errors (ACLs {acl})");
    Ok(run.qps)
}

async fn bench_dns(secs: u64) -> anyhow::Result<()> {
    println!("== DNS with ACLs on (`default` token of {POLICIES} policies x {RULES} rules) and off: dnsperf -c 20 -T 2 -q 100, {secs} s per run");
    let (mut off, mut on) = (0.0, 0.0);
    for acl in [false, true, true, false] {
        let root = tempfile::tempdir()?;
        let qps = dns_mode(root.path(), acl, secs).await?;
        *if acl { &mut on } else { &mut off } += qps / 2.0;
    }
    println!("  QPS on/off: {:.2} ({on:.0} / {off:.0})", on / off);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = muster_tests::bench::start(8)?;
    let want = |n: &str| cli.wants(&["kv", "dns"], n);
    if want("kv") {
        bench_kv(cli.secs).await?;
    }
    if want("dns") {
        bench_dns(cli.secs).await?;
    }
    Ok(())
}
