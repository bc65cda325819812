//! What an idle cluster costs: 3 servers and 5 client agents with nothing to do (no services,
//! no checks, no requests), their CPU (user + system, from `/proc`) and RSS over a window, per
//! role. Side by side in the same run:
//! - a baseline Muster binary (`MUSTER_BASELINE_BIN`, say an earlier commit's dist build),
//!   running at the same time and measured over the same window, so a change that makes
//!   idling dearer shows as a ratio rather than against yesterday's (or the last minute's)
//!   noise;
//! - Serf (Debian's `serf`): 8 idle agents, gossip only;
//! - etcd (Debian's `etcd-server`): 3 idle members.
//!
//! ```sh
//! cargo build --profile dist --bin muster    # the benches run target/dist/muster
//! MUSTER_BASELINE_BIN=/path/to/old/muster cargo bench -p muster-tests --bench idle [-- --secs 60]
//! ```

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use muster_tests::bench::{cpu_ticks, etcd_available, rss_kb, start_etcd, start_muster, Proc};
use muster_tests::{free_port, wait_until, Agent};

const CLIENTS: usize = 5;
/// Time given to a cluster after it formed, so start-up work (joins, first syncs, the
/// leader's reconcile) is over before the window opens.
const SETTLE: Duration = Duration::from_secs(10);

/// CPU as a percentage of one core, and mean RSS in MB, of `pids` over `secs`.
/// CPU (% of a core) and RSS (MB), each per process, of every group of processes over the
/// same `secs`-second window.
async fn measure_groups(groups: &[&[u32]], secs: u64) -> Vec<(f64, f64)> {
    let ticks = |pids: &[u32]| pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
    let before: Vec<u64> = groups.iter().map(|g| ticks(g)).collect();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let el = t.elapsed().as_secs_f64();
    groups
        .iter()
        .zip(before)
        .map(|(pids, from)| {
            let n = pids.len().max(1) as f64;
            let rss: u64 = pids.iter().map(|&p| rss_kb(p)).sum();
            (
                (ticks(pids) - from) as f64 / el / n,
                rss as f64 / 1024.0 / n,
            )
        })
        .collect()
}

async fn measure(pids: &[u32], secs: u64) -> (f64, f64) {
    measure_groups(&[pids], secs).await[0]
}

fn report(label: &str, n: usize, (cpu, rss): (f64, f64)) {
    println!("  {label:<26} x{n}: CPU {cpu:>6.3} % of a core each   RSS {rss:>5.1} MB each");
}

/// An idle cluster: 3 servers and [`CLIENTS`] clients, kept running while it is held.
struct Cluster {
    label: &'static str,
    servers: Vec<Agent>,
    clients: Vec<Agent>,
}

/// Starts 3 servers and [`CLIENTS`] clients with the binary in `MUSTER_BIN`, and waits until
/// every client sees all 8 members alive.
async fn muster(root: &Path, label: &'static str) -> anyhow::Result<Cluster> {
    let servers = start_muster(root, 3).await?;
    let join = servers[0].serf.to_string();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let name = format!("c{i}");
        let args = ["-retry-join", &join, "-log-level", "warn"];
        clients.push(Agent::start(&name, &root.join(&name), &args)?);
    }
    let all = 3 + CLIENTS;
    for c in &clients {
        wait_until(
            &format!("{label}: {} sees all {all} alive", c.name),
            Duration::from_secs(60),
            || async {
                let r = muster_tests::get(&c.url("/v1/agent/members")).await.ok()?;
                let alive = r
                    .json()
                    .as_array()?
                    .iter()
                    .filter(|m| m["Status"] == 1)
                    .count();
                (alive >= all).then_some(())
            },
        )
        .await?;
    }
    Ok(Cluster {
        label,
        servers,
        clients,
    })
}

/// Measures every cluster over one window, so a change and its baseline see the same
/// machine (run one after the other, a busy neighbour in one window moved the ratio by
/// 0.1-0.15), and returns each one's (servers, clients) CPU and RSS.
async fn measure_together(clusters: &[Cluster], secs: u64) -> Vec<((f64, f64), (f64, f64))> {
    let pids = |agents: &[Agent]| agents.iter().filter_map(Agent::pid).collect::<Vec<u32>>();
    let groups: Vec<Vec<u32>> = clusters
        .iter()
        .flat_map(|c| [pids(&c.servers), pids(&c.clients)])
        .collect();
    let refs: Vec<&[u32]> = groups.iter().map(Vec::as_slice).collect();
    let figures = measure_groups(&refs, secs).await;
    let mut out = Vec::new();
    for (cluster, pair) in clusters.iter().zip(figures.chunks(2)) {
        let (s, c) = (pair[0], pair[1]);
        report(&format!("{} servers", cluster.label), 3, s);
        report(&format!("{} clients", cluster.label), CLIENTS, c);
        out.push((s, c));
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

async fn serf(root: &Path, n: usize, secs: u64) -> anyhow::Result<()> {
    let mut procs = Vec::new();
    let mut first: Option<String> = None;
    let mut rpcs = Vec::new();
    for i in 0..n {
        let bind = format!("127.0.0.1:{}", free_port()?);
        let rpc = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new("serf");
        cmd.arg("agent")
            .arg(format!("-node=s{i}"))
            .arg(format!("-bind={bind}"))
            .arg(format!("-rpc-addr={rpc}"))
            .arg("-log-level=warn");
        if let Some(f) = &first {
            cmd.arg(format!("-join={f}"));
        }
        let log = std::fs::File::create(root.join(format!("s{i}.out")))?;
        procs.push(Proc(cmd.stdout(Stdio::null()).stderr(log).spawn()?));
        if first.is_none() {
            // Serf tries -join once at start: the first agent must listen before the others.
            let b = bind.clone();
            wait_until("serf listens", Duration::from_secs(10), || async {
                std::net::TcpStream::connect(&b).ok().map(|_| ())
            })
            .await?;
            first = Some(bind);
        }
        rpcs.push(rpc);
    }
    for rpc in &rpcs {
        wait_until("serf: all alive", Duration::from_secs(60), || async {
            let out = Command::new("serf")
                .args(["members", &format!("-rpc-addr={rpc}"), "-status=alive"])
                .output()
                .ok()?;
            (String::from_utf8_lossy(&out.stdout).lines().count() >= n).then_some(())
        })
        .await?;
    }
    tokio::time::sleep(SETTLE).await;
    let pids: Vec<u32> = procs.iter().map(|p| p.0.id()).collect();
    report("serf agents", n, measure(&pids, secs).await);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = muster_tests::bench::start(30)?;
    let secs = cli.secs;
    println!(
        "== Idle: 3 servers + {CLIENTS} clients with nothing to do, {secs} s window after {} s settling",
        SETTLE.as_secs()
    );
    let root = tempfile::tempdir()?;
    let mut clusters = vec![muster(&root.path().join("now"), "muster").await?];
    if let Ok(base) = std::env::var("MUSTER_BASELINE_BIN") {
        let now = std::env::var("MUSTER_BIN")?;
        std::env::set_var("MUSTER_BIN", &base);
        clusters.push(muster(&root.path().join("base"), "baseline").await?);
        std::env::set_var("MUSTER_BIN", now);
    }
    tokio::time::sleep(SETTLE).await;
    let figures = measure_together(&clusters, secs).await;
    drop(clusters);
    if let [(s, c), (bs, bc)] = figures[..] {
        println!(
            "  muster / baseline: servers CPU {} RSS {}; clients CPU {} RSS {}",
            ratio(s.0, bs.0),
            ratio(s.1, bs.1),
            ratio(c.0, bc.0),
            ratio(c.1, bc.1)
        );
    }
    if Command::new("serf").arg("version").output().is_ok() {
        let dir = root.path().join("serf");
        std::fs::create_dir_all(&dir)?;
        serf(&dir, 3 + CLIENTS, secs).await?;
    }
    if etcd_available() {
        let dir = root.path().join("etcd");
        std::fs::create_dir_all(&dir)?;
        let etcd = start_etcd(&dir, 3).await?;
        tokio::time::sleep(SETTLE).await;
        let pids: Vec<u32> = etcd.procs.iter().flatten().map(|p| p.0.id()).collect();
        report("etcd members", 3, measure(&pids, secs).await);
    }
    Ok(())
}
