//! Snapshot benchmark: `muster snapshot save` and `restore` of 1,000,000 KV entries of 100
//! bytes plus 10,000 nodes with 5 services each, beside etcd's `etcdctl snapshot save` and
//! `snapshot restore` of the same KV in the same run: time, file size, and the server's peak
//! RSS during the save (sampled every 10 ms from `/proc`).
//!
//! ```sh
//! cargo build --profile dist --bin muster    # the benches run target/dist/muster
//! cargo bench -p muster-tests --bench snapshot
//! cargo bench -p muster-tests --bench snapshot -- --keys 100000   # a smaller state
//! ```
//!
//! A restore is one Raft entry of at most 32 MiB of state (see `muster_server::snapshot`);
//! a larger one is refused, and the bench reports the refusal with its time.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use muster_tests::bench::load::preload;
use muster_tests::bench::{etcd_available, rss_kb, start_etcd, start_muster};
use muster_tests::muster_bin;
use serde_json::json;

const NODES: u32 = 10_000;
const SERVICES_PER_NODE: u32 = 5;
/// Operations per transaction: Consul's limit (64) for Muster, and under etcd's (128).
const TXN_OPS: u32 = 64;

fn value(k: u32) -> String {
    let v = format!("{k:0100}");
    base64::engine::general_purpose::STANDARD.encode(v.as_bytes())
}

/// Writes `keys` KV entries (`bench/NNNNNNN`, 100 bytes) through `/v1/txn`, then the nodes
/// and their services through `/v1/catalog/register`.
async fn fill_muster(base: &str, keys: u32) {
    let client = reqwest::Client::new();
    let (c, b) = (client.clone(), base.to_string());
    preload(keys.div_ceil(TXN_OPS), move |batch| {
        let (c, b) = (c.clone(), b.clone());
        async move {
            let ops: Vec<_> = (batch * TXN_OPS..((batch + 1) * TXN_OPS).min(keys))
                .map(|k| json!({"KV": {"Verb": "set", "Key": format!("bench/{k:07}"), "Value": value(k)}}))
                .collect();
            let r = c.put(format!("{b}/v1/txn")).json(&ops).send().await;
            r.is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    let (c, b) = (client, base.to_string());
    preload(NODES * SERVICES_PER_NODE, move |i| {
        let (c, b) = (c.clone(), b.clone());
        async move {
            let (node, svc) = (i / SERVICES_PER_NODE, i % SERVICES_PER_NODE);
            let reg = json!({
                "Node": format!("node-{node:05}"),
                "Address": format!("10.{}.{}.{}", node >> 16, (node >> 8) & 255, node & 255),
                "Service": {"ID": format!("svc-{svc}"), "Service": format!("svc-{svc}"), "Port": 8000 + svc}
            });
            let r = c.put(format!("{b}/v1/catalog/register")).json(&reg).send().await;
            r.is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
}

/// Runs `muster ARGS` against `http`, sampling `pid`'s RSS meanwhile: (time, ok, output,
/// peak RSS in KB).
fn timed_cli(http: &str, args: &[&str], pid: u32) -> (Duration, bool, String, u64) {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_kb(pid)));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let start = Instant::now();
    let out = Command::new(muster_bin())
        .args(args)
        .env("MUSTER_HTTP_ADDR", http)
        .output();
    let took = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (ok, text) = match out {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ),
        Err(e) => (false, e.to_string()),
    };
    (took, ok, text, peak.load(Ordering::Relaxed))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

async fn bench_muster(root: &Path, keys: u32) -> anyhow::Result<(Duration, Duration)> {
    let file = root.join("muster.snap");
    let servers = start_muster(&root.join("a"), 1).await?;
    let (http, pid) = (servers[0].http.to_string(), servers[0].pid().unwrap_or(0));
    let fill = Instant::now();
    fill_muster(&format!("http://{http}"), keys).await;
    let before = rss_kb(pid);
    println!(
        "  muster   filled in {:.1} s; RSS {:.0} MB",
        fill.elapsed().as_secs_f64(),
        before as f64 / 1024.0
    );
    let f = file.display().to_string();
    let (save, ok, out, peak) = timed_cli(&http, &["snapshot", "save", &f], pid);
    let size = std::fs::metadata(&file).map_or(0, |m| m.len());
    println!(
        "  muster   save    {:>6.2} s  file {:>7.1} MB  peak RSS {:.0} MB (before {:.0} MB)  {}",
        save.as_secs_f64(),
        mb(size),
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
        if ok { "ok" } else { out.as_str() }
    );
    drop(servers);
    let fresh = start_muster(&root.join("b"), 1).await?;
    let (http, pid) = (fresh[0].http.to_string(), fresh[0].pid().unwrap_or(0));
    let (restore, ok, out, peak) = timed_cli(&http, &["snapshot", "restore", &f], pid);
    println!(
        "  muster   restore {:>6.2} s  peak RSS {:.0} MB  {}",
        restore.as_secs_f64(),
        peak as f64 / 1024.0,
        if ok { "ok".to_string() } else { out }
    );
    Ok((save, restore))
}

async fn bench_etcd(root: &Path, keys: u32) -> anyhow::Result<(Duration, Duration)> {
    let etcd = start_etcd(&root.join("etcd"), 1).await?;
    let url = etcd.urls[0].clone();
    let client = reqwest::Client::new();
    let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (c, u) = (client, url.clone());
    preload(keys.div_ceil(TXN_OPS), move |batch| {
        let (c, u) = (c.clone(), u.clone());
        async move {
            let ops: Vec<_> = (batch * TXN_OPS..((batch + 1) * TXN_OPS).min(keys))
                .map(|k| json!({"requestPut": {"key": enc(&format!("bench/{k:07}")), "value": value(k)}}))
                .collect();
            let r = c
                .post(format!("{u}/v3/kv/txn"))
                .json(&json!({"success": ops}))
                .send()
                .await;
            r.is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    let file = root.join("etcd.db");
    let start = Instant::now();
    let save = Command::new("etcdctl")
        .args(["--endpoints", &url, "snapshot", "save"])
        .arg(&file)
        .output()?;
    let save_t = start.elapsed();
    let size = std::fs::metadata(&file).map_or(0, |m| m.len());
    println!(
        "  etcd     save    {:>6.2} s  file {:>7.1} MB  {}",
        save_t.as_secs_f64(),
        mb(size),
        if save.status.success() {
            "ok"
        } else {
            "failed"
        }
    );
    drop(etcd);
    let start = Instant::now();
    let restore = Command::new("etcdctl")
        .args(["snapshot", "restore"])
        .arg(&file)
        .arg("--data-dir")
        .arg(root.join("etcd-restored"))
        .output()?;
    let restore_t = start.elapsed();
    println!(
        "  etcd     restore {:>6.2} s  {}",
        restore_t.as_secs_f64(),
        if restore.status.success() {
            "ok".to_string()
        } else {
            String::from_utf8_lossy(&restore.stderr).trim().to_string()
        }
    );
    Ok((save_t, restore_t))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = muster_tests::bench::start(0)?;
    let keys = cli
        .words
        .iter()
        .position(|a| a == "--keys")
        .and_then(|i| cli.words.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "snapshot: {keys} KV of 100 bytes + {NODES} nodes x {SERVICES_PER_NODE} services (etcd: the KV only)"
    );
    let root = tempfile::tempdir()?;
    let (ms, mr) = bench_muster(root.path(), keys).await?;
    if etcd_available() {
        let (es, er) = bench_etcd(root.path(), keys).await?;
        println!(
            "  ratio muster/etcd: save {:.2}x, restore {:.2}x",
            ms.as_secs_f64() / es.as_secs_f64(),
            mr.as_secs_f64() / er.as_secs_f64()
        );
    } else {
        println!("  etcd not installed (apt-get install etcd-server): no comparison");
    }
    Ok(())
}
