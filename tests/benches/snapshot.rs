//! Snapshot benchmark: `muster snapshot save` and `restore` of 1,000,000 KV entries of 100
//! bytes plus 10,000 nodes with 5 services each on a 3-server Muster, beside etcd's
//! `etcdctl snapshot save` and `snapshot restore` of the same KV on a 1-member etcd in the
//! same run: time, file size, and peak RSS (`VmHWM` from `/proc/PID/status`, reset through
//! `/proc/PID/clear_refs` just before, so it is the peak of that step alone). Then the
//! recovery phase: the three servers are killed, `muster recover` makes one of them a
//! cluster of one, and the time from `recover` to that server leading and taking a write
//! is reported (target: under 5 s).
//!
//! ```sh
//! cargo build --profile dist --bin muster    # the benches run target/dist/muster
//! cargo bench -p muster-tests --bench snapshot
//! SNAP_KEYS=100000 SNAP_NODES=1000 cargo bench -p muster-tests --bench snapshot   # smaller
//! SNAP_KEEP=/tmp/big.snap cargo bench -p muster-tests --bench snapshot   # keeps the archive
//! # a quick check against a debug build:
//! MUSTER_BIN=target/debug/muster SNAP_KEYS=20000 SNAP_NODES=200 \
//!     cargo test -p muster-tests --bench snapshot
//! ```
//!
//! A restore of any size goes through Raft in chunks and one commit (see
//! `muster_server::snapshot`).
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use muster_tests::bench::load::preload;
use muster_tests::bench::{etcd_available, rss_kb, start_etcd, start_muster};
use muster_tests::{leader_of, muster_bin, put, wait_for_agreed_leader, wait_until};
use serde_json::json;

/// Catalog nodes (`SNAP_NODES`), each with [`SERVICES_PER_NODE`] services.
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
async fn fill_muster(base: &str, keys: u32, nodes: u32) {
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
    preload(nodes * SERVICES_PER_NODE, move |i| {
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

/// Resets `pid`'s peak RSS (`VmHWM`) to its current RSS: `5` in `clear_refs`.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// `pid`'s peak RSS in KiB since the last [`reset_peak`].
fn peak_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Runs `cmd`, measuring the peak RSS of `pid` (a server) meanwhile, and of `cmd` itself:
/// (time, ok, output, the server's peak in KiB, the command's peak in KiB).
fn timed(mut cmd: Command, pid: Option<u32>) -> (Duration, bool, String, u64, u64) {
    if let Some(p) = pid {
        reset_peak(p);
    }
    let start = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let (out, own_peak) = match child {
        Ok(c) => {
            let cpid = c.id();
            // The command's own peak, read just before it is reaped.
            let watcher = std::thread::spawn(move || {
                let mut peak = 0;
                while std::fs::metadata(format!("/proc/{cpid}")).is_ok() {
                    peak = peak.max(peak_kb(cpid));
                    std::thread::sleep(Duration::from_millis(5));
                }
                peak
            });
            let out = c.wait_with_output();
            (out, watcher.join().unwrap_or(0))
        }
        Err(e) => (Err(e), 0),
    };
    let took = start.elapsed();
    let server_peak = pid.map_or(0, peak_kb);
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
    (took, ok, text, server_peak, own_peak)
}

fn muster(http: &str, args: &[&str]) -> Command {
    let mut c = Command::new(muster_bin());
    c.args(args).env("MUSTER_HTTP_ADDR", http);
    c
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn mb_kb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The `Size` (of `state.bin`, the data) that `muster snapshot inspect` prints.
fn state_size(file: &str) -> u64 {
    let out = Command::new(muster_bin())
        .args(["snapshot", "inspect", file])
        .output();
    out.ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with("Size"))?
                .to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

struct Figures {
    save: Duration,
    restore: Duration,
}

async fn bench_muster(root: &Path, keys: u32, nodes: u32) -> anyhow::Result<Figures> {
    let file = root.join("muster.snap");
    let f = file.display().to_string();
    let mut servers = start_muster(&root.join("a"), 3).await?;
    let leader = wait_for_agreed_leader(&servers, Duration::from_secs(30))
        .await?
        .unwrap_or(0);
    let (http, pid) = (
        servers[leader].http.to_string(),
        servers[leader].pid().unwrap_or(0),
    );
    let fill = Instant::now();
    fill_muster(&format!("http://{http}"), keys, nodes).await;
    let before = rss_kb(pid);
    println!(
        "  muster   filled in {:.1} s (3 servers); leader RSS {:.0} MB",
        fill.elapsed().as_secs_f64(),
        mb_kb(before)
    );
    let (save, ok, out, peak, cli_peak) =
        timed(muster(&http, &["snapshot", "save", &f]), Some(pid));
    let size = std::fs::metadata(&file).map_or(0, |m| m.len());
    if let Ok(keep) = std::env::var("SNAP_KEEP") {
        // The archive, kept for a closer look at a restore (`muster snapshot restore`).
        std::fs::copy(&file, &keep)?;
    }
    let data = state_size(&f);
    println!(
        "  muster   save    {:>6.2} s  file {:>7.1} MB  data {:.1} MB  leader peak RSS {:.0} MB \
         (before {:.0} MB; peak/data {:.2}, growth/data {:.2})  CLI peak {:.0} MB  {}",
        save.as_secs_f64(),
        mb(size),
        mb(data),
        mb_kb(peak),
        mb_kb(before),
        peak as f64 * 1024.0 / data.max(1) as f64,
        peak.saturating_sub(before) as f64 * 1024.0 / data.max(1) as f64,
        mb_kb(cli_peak),
        if ok { "ok" } else { out.as_str() }
    );

    // Recovery: the whole cluster is lost; `muster recover` on one data dir, then a restart,
    // until that server leads and takes a write.
    for s in &mut servers {
        s.kill9();
    }
    let survivor = &mut servers[leader];
    let start = Instant::now();
    let out = Command::new(muster_bin())
        .args(["recover", "-data-dir"])
        .arg(&survivor.data_dir)
        .output()?;
    let recovered = start.elapsed();
    survivor.restart()?;
    let me = survivor.rpc.clone().unwrap_or_default();
    let s = &*survivor;
    let serving = wait_until("the recovered leader", Duration::from_secs(120), || async {
        if leader_of(s).await? != me {
            return None;
        }
        let r = put(&s.url("/v1/kv/after-recover"), b"x").await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    println!(
        "  muster   recover {:>6.2} s to a serving leader (recover itself {:.2} s){}",
        start.elapsed().as_secs_f64(),
        recovered.as_secs_f64(),
        match (out.status.success(), serving) {
            (true, Ok(())) => String::new(),
            (false, _) => format!("  recover failed: {}", String::from_utf8_lossy(&out.stderr)),
            (_, Err(e)) => format!("  {e}"),
        }
    );
    drop(servers);

    let fresh = start_muster(&root.join("b"), 3).await?;
    let leader = wait_for_agreed_leader(&fresh, Duration::from_secs(30))
        .await?
        .unwrap_or(0);
    let (http, pid) = (
        fresh[leader].http.to_string(),
        fresh[leader].pid().unwrap_or(0),
    );
    let (restore, ok, out, peak, cli_peak) =
        timed(muster(&http, &["snapshot", "restore", &f]), Some(pid));
    println!(
        "  muster   restore {:>6.2} s  leader peak RSS {:.0} MB  CLI peak {:.0} MB  {}",
        restore.as_secs_f64(),
        mb_kb(peak),
        mb_kb(cli_peak),
        if ok { "ok".to_string() } else { out }
    );
    Ok(Figures { save, restore })
}

async fn bench_etcd(root: &Path, keys: u32) -> anyhow::Result<Figures> {
    std::fs::create_dir_all(root.join("etcd"))?;
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
    let pid = etcd.procs[0].as_ref().map(|p| p.0.id());
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .args(["--endpoints", &url, "snapshot", "save"])
        .arg(&file);
    let (save, ok, out, peak, _) = timed(cmd, pid);
    let size = std::fs::metadata(&file).map_or(0, |m| m.len());
    println!(
        "  etcd     save    {:>6.2} s  file {:>7.1} MB  server peak RSS {:.0} MB  {}",
        save.as_secs_f64(),
        mb(size),
        mb_kb(peak),
        if ok { "ok" } else { out.as_str() }
    );
    drop(etcd);
    // etcd 3.4 (Debian's) restores with etcdctl; later versions moved it to etcdutl.
    let tool = if Command::new("etcdutl").arg("version").output().is_ok() {
        "etcdutl"
    } else {
        "etcdctl"
    };
    let mut cmd = Command::new(tool);
    cmd.env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&file)
        .arg("--data-dir")
        .arg(root.join("etcd-restored"));
    let (restore, ok, out, _, own_peak) = timed(cmd, None);
    println!(
        "  etcd     restore {:>6.2} s  {tool} peak RSS {:.0} MB  {}",
        restore.as_secs_f64(),
        mb_kb(own_peak),
        if ok { "ok" } else { out.as_str() }
    );
    Ok(Figures { save, restore })
}

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    muster_tests::bench::start(0)?;
    let keys = env_u32("SNAP_KEYS", 1_000_000);
    let nodes = env_u32("SNAP_NODES", NODES);
    println!(
        "snapshot: {keys} KV of 100 bytes + {nodes} nodes x {SERVICES_PER_NODE} services on 3 \
         Muster servers; etcd (1 member): the KV only"
    );
    let root = tempfile::tempdir()?;
    let m = bench_muster(root.path(), keys, nodes).await?;
    if etcd_available() {
        let e = bench_etcd(root.path(), keys).await?;
        println!(
            "  ratio muster/etcd: save {:.2}x, restore {:.2}x",
            m.save.as_secs_f64() / e.save.as_secs_f64(),
            m.restore.as_secs_f64() / e.restore.as_secs_f64()
        );
    } else {
        println!("  etcd not installed (apt-get install etcd-server etcd-client): no comparison");
    }
    Ok(())
}
