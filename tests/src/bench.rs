//! Pieces the benchmarks share: latency summaries and `/proc` readings of a process we
//! started.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::bail;

use crate::{wait_for_agreed_leader, wait_until, Agent};

pub mod dnsperf;
pub mod load;

/// The loopback addresses the 3-server benches bind, one per server.
pub const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

/// A bench's command line: its words (`--bench`, which cargo adds, left out) and `--secs N`.
pub struct Args {
    pub words: Vec<String>,
    pub secs: u64,
}

impl Args {
    /// Whether phase `name` runs: every phase when none of `names` was asked for.
    pub fn wants(&self, names: &[&str], name: &str) -> bool {
        !self.words.iter().any(|w| names.contains(&w.as_str()))
            || self.words.iter().any(|w| w == name)
    }
}

/// Reads the bench's command line (`--secs` defaulting to `default_secs`) and points the
/// harness at the binary to measure ([`use_dist_binary`]).
pub fn start(default_secs: u64) -> anyhow::Result<Args> {
    use_dist_binary()?;
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let secs = words
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| words.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_secs);
    Ok(Args { words, secs })
}

/// Points the harness at the binary the README's figures come from: `MUSTER_BIN` if set,
/// else the `dist` build (fat LTO), which must exist. The quick `release` build would
/// measure a different binary than the one packaged.
pub fn use_dist_binary() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("MUSTER_BIN") {
        println!("binary: {p} (MUSTER_BIN)");
        return Ok(p.into());
    }
    // The bench executable is target/release/deps/NAME; the dist build is target/dist/muster.
    let exe = std::env::current_exe()?;
    let Some(target) = exe.ancestors().nth(3) else {
        bail!("cannot find the target directory from {}", exe.display());
    };
    let bin = target.join("dist").join("muster");
    if !bin.exists() {
        bail!(
            "{} does not exist: build it first with `cargo build --profile dist --bin muster` \
             (or set MUSTER_BIN)",
            bin.display()
        );
    }
    println!("binary: {} (dist profile)", bin.display());
    std::env::set_var("MUSTER_BIN", &bin);
    Ok(bin)
}

/// The outcome of a load phase.
pub struct Stats {
    pub ok: usize,
    pub failed: usize,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Stats {
    /// Summarizes the latencies of successful requests over a phase of `secs`.
    pub fn new(mut latencies: Vec<Duration>, failed: usize, secs: f64) -> Stats {
        latencies.sort();
        let pct = |p: f64| {
            let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
            latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Stats {
            ok: latencies.len(),
            failed,
            secs,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
        }
    }

    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

/// User plus system CPU time of `pid`, in clock ticks (100 per second on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Starts `n` (1-3) servers on [`IPS`], joined, and waits until they agree on a leader.
pub async fn start_muster(root: &Path, n: usize) -> anyhow::Result<Vec<Agent>> {
    start_muster_with(root, n, &[]).await
}

/// [`start_muster`], each server also given `extra` arguments.
pub async fn start_muster_with(
    root: &Path,
    n: usize,
    extra: &[&str],
) -> anyhow::Result<Vec<Agent>> {
    let mut agents: Vec<Agent> = Vec::new();
    for (i, ip) in IPS.iter().enumerate().take(n) {
        let name = format!("s{}", i + 1);
        let expect = n.to_string();
        let mut args = vec![
            "-server",
            "-bootstrap-expect",
            &expect,
            "-bind",
            ip,
            "-client",
            ip,
            "-log-level",
            "warn",
        ];
        let join = agents.first().map(|a| a.serf.to_string());
        if let Some(j) = &join {
            args.extend(["-retry-join", j]);
        }
        args.extend_from_slice(extra);
        agents.push(Agent::start(&name, &root.join(&name), &args)?);
    }
    wait_for_agreed_leader(&agents, Duration::from_secs(30)).await?;
    Ok(agents)
}

/// A child process killed (by its PID) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An etcd cluster on [`IPS`]; a member is stopped by taking its `Proc`.
pub struct Etcd {
    pub procs: Vec<Option<Proc>>,
    pub urls: Vec<String>,
}

/// Whether Debian's `etcd-server` is installed; without it the benches measure Muster alone.
pub fn etcd_available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `n` etcd members on [`IPS`] and waits until each takes a write.
pub async fn start_etcd(root: &Path, n: usize) -> anyhow::Result<Etcd> {
    let (client_port, peer_port) = (23790, 23800);
    let cluster: Vec<String> = IPS
        .iter()
        .take(n)
        .enumerate()
        .map(|(i, ip)| format!("e{}=http://{ip}:{peer_port}", i + 1))
        .collect();
    let mut procs = Vec::new();
    let mut urls = Vec::new();
    for (i, ip) in IPS.iter().enumerate().take(n) {
        let name = format!("e{}", i + 1);
        let url = format!("http://{ip}:{client_port}");
        let log = std::fs::File::create(root.join(format!("{name}.log")))?;
        let child = Command::new("etcd")
            .args(["--name", &name, "--data-dir"])
            .arg(root.join(&name))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &format!("http://{ip}:{peer_port}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{ip}:{peer_port}"),
            ])
            .args([
                "--initial-cluster",
                &cluster.join(","),
                "--initial-cluster-state",
                "new",
            ])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        procs.push(Some(Proc(child)));
        urls.push(url);
    }
    let client = reqwest::Client::new();
    for u in &urls {
        wait_until("etcd ready", Duration::from_secs(30), || async {
            let r = client
                .post(format!("{u}/v3/kv/put"))
                .json(&serde_json::json!({"key": "cmVhZHk=", "value": "MQ=="}))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await?;
    }
    Ok(Etcd { procs, urls })
}

impl Etcd {
    /// Index of the current leader, from `/v3/maintenance/status`.
    pub async fn leader(&self) -> Option<usize> {
        let client = reqwest::Client::new();
        for (i, u) in self.urls.iter().enumerate() {
            if self.procs[i].is_none() {
                continue;
            }
            let Ok(r) = client
                .post(format!("{u}/v3/maintenance/status"))
                .json(&serde_json::json!({}))
                .send()
                .await
            else {
                continue;
            };
            let Ok(v) = r.json::<serde_json::Value>().await else {
                continue;
            };
            if v["leader"].is_string() && v["leader"] == v["header"]["member_id"] {
                return Some(i);
            }
        }
        None
    }
}
