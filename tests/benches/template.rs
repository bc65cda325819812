//! What `muster template` costs: the time from a KV PUT to the rendered file being replaced
//! (median and p99), with one template and with 200 (all watching the key, so each PUT
//! replaces 200 files); then the renderer's CPU and RSS with 200 templates over 50 services,
//! at rest and under one service change per second. `wait` is 0 (no quiescence), so the
//! latency is the renderer's own.
//!
//! ```sh
//! cargo build --profile dist --bin muster    # the benches run target/dist/muster
//! cargo bench -p muster-tests --bench template               # everything
//! cargo bench -p muster-tests --bench template -- latency    # one of: latency cpu
//! cargo bench -p muster-tests --bench template -- --secs 30
//! ```

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muster_tests::bench::{cpu_ticks, rss_kb, start};
use muster_tests::{muster_bin, put, single_server, wait_until, Agent};
use serde_json::json;

/// A renderer process, killed on drop.
struct Renderer(Child);

impl Drop for Renderer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn renderer(agent: &Agent, config: &Path) -> anyhow::Result<Renderer> {
    let child = Command::new(muster_bin())
        .args(["template", "-http-addr", &agent.http.to_string()])
        .args([
            "-config",
            &config.display().to_string(),
            "-log-level",
            "warn",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Renderer(child))
}

fn write_config(
    root: &Path,
    name: &str,
    templates: Vec<serde_json::Value>,
) -> anyhow::Result<std::path::PathBuf> {
    let p = root.join(name);
    std::fs::write(&p, json!({ "template": templates }).to_string())?;
    Ok(p)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// PUT → every one of `n` files holds the new value, `rounds` times.
async fn latency(root: &Path, agent: &Agent, n: usize, rounds: usize) -> anyhow::Result<()> {
    let out = root.join(format!("lat{n}"));
    let templates = (0..n)
        .map(|i| {
            json!({"contents": "{{ key \"bench/value\" }}",
                   "destination": out.join(format!("f{i}")).display().to_string()})
        })
        .collect();
    let cfg = write_config(root, &format!("lat{n}.json"), templates)?;
    put(&agent.url("/v1/kv/bench/value"), b"start").await?;
    let _r = renderer(agent, &cfg)?;
    let all_hold = |v: String| {
        let out = out.clone();
        move || {
            let ok = (0..n)
                .all(|i| std::fs::read_to_string(out.join(format!("f{i}"))).is_ok_and(|s| s == v));
            async move { ok.then_some(()) }
        }
    };
    wait_until(
        "first render",
        Duration::from_secs(60),
        all_hold("start".into()),
    )
    .await?;
    let mut took = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let v = format!("v{round}");
        let t0 = Instant::now();
        put(&agent.url("/v1/kv/bench/value"), v.as_bytes()).await?;
        // Polled every millisecond (the shared `wait_until` polls every 50 ms, coarser than
        // what is measured).
        let deadline = t0 + Duration::from_secs(30);
        let check = all_hold(v);
        while check().await.is_none() {
            anyhow::ensure!(Instant::now() < deadline, "render timed out");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        took.push(t0.elapsed());
    }
    took.sort();
    println!(
        "PUT to file replaced, {n} template(s), {rounds} PUTs: median {:.1} ms, p99 {:.1} ms",
        percentile(&took, 0.5).as_secs_f64() * 1000.0,
        percentile(&took, 0.99).as_secs_f64() * 1000.0
    );
    Ok(())
}

/// 200 templates over 50 services: CPU and RSS at rest, then under one change a second.
async fn cpu(root: &Path, agent: &Agent, secs: u64) -> anyhow::Result<()> {
    let register = |s: usize, tag: String| {
        let body = json!({"Node": format!("n{s}"), "Address": format!("10.2.0.{s}"),
                          "Service": {"ID": format!("svc{s}"), "Service": format!("svc{s}"),
                                      "Tags": [tag], "Port": 80}});
        let url = agent.url("/v1/catalog/register");
        async move { muster_tests::call("PUT", &url, None, Some(body)).await }
    };
    for s in 0..50 {
        register(s, "t0".into()).await;
    }
    let out = root.join("cpu");
    let templates = (0..200)
        .map(|i| {
            json!({"contents": format!("{{{{ range service \"svc{}\" }}}}{{{{ .Address }}}} {{{{ .Tags }}}}\n{{{{ end }}}}", i % 50),
                   "destination": out.join(format!("t{i}")).display().to_string()})
        })
        .collect();
    let cfg = write_config(root, "cpu.json", templates)?;
    let r = renderer(agent, &cfg)?;
    let pid = r.0.id();
    wait_until("200 files", Duration::from_secs(60), || {
        let n = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
        async move { (n == 200).then_some(()) }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let idle = (cpu_ticks(pid) - t0) as f64 / secs as f64;
    println!(
        "200 templates / 50 services at rest: {:.2}% of a core, RSS {} KiB",
        idle,
        rss_kb(pid)
    );
    let t0 = cpu_ticks(pid);
    for i in 0..secs {
        register((i % 50) as usize, format!("t{}", i + 1)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let busy = (cpu_ticks(pid) - t0) as f64 / secs as f64;
    println!(
        "200 templates / 50 services, one change a second: {:.2}% of a core, RSS {} KiB",
        busy,
        rss_kb(pid)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = start(20)?;
    let root = tempfile::tempdir()?;
    let agent = single_server(root.path(), "bench", &["-log-level", "warn"]).await?;
    let phases = ["latency", "cpu"];
    if args.wants(&phases, "latency") {
        latency(root.path(), &agent, 1, 200).await?;
        latency(root.path(), &agent, 200, 50).await?;
    }
    if args.wants(&phases, "cpu") {
        cpu(root.path(), &agent, args.secs).await?;
    }
    Ok(())
}
