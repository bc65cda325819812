//! Gossip benchmarks against Serf (Debian's `serf`), in the same run: N agents on loopback
//! (one process each), then
//! - failure detection: an agent is killed with -9; how long until every other agent's
//!   `member-failed` event handler has run with its name; then another, up to `--kills`
//!   (3; at most one in five agents), the worst of them reported with each one;
//! - event reach: one user event; how long until every agent's `user` handler has run;
//! - exec (Muster only: Serf has none): `muster exec 'echo hi'` on every agent; how long until
//!   the caller has printed every agent's exit code.
//!
//! Both sides are timed the same way, by an event handler on every agent that stamps the
//! wall clock into a file per agent, so no polling skews either.
//!
//! ```sh
//! cargo build --profile dist --bin muster    # the benches run target/dist/muster
//! cargo bench -p muster-tests --bench gossip                # N = 3, 20, 50
//! cargo bench -p muster-tests --bench gossip -- --sizes 3,20
//! cargo bench -p muster-tests --bench gossip -- --sizes 20 --kills 4
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use muster_tests::bench::Proc;
use muster_tests::{free_port, muster_bin, wait_until, Agent};

/// How long a phase may take before the bench gives up on it.
const PHASE: Duration = Duration::from_secs(90);

/// Now, as seconds since the epoch (what `date +%s.%N` prints).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A handler script appending `<time> <stdin line>` for every line it is given to `out`.
fn stamp_script(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("stamp.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nout=\"$1\"\nwhile IFS= read -r line || [ -n \"$line\" ]; do\n  \
         echo \"$(date +%s.%N) $SERF_EVENT $line\" >> \"$out\"\ndone\n",
    )?;
    Command::new("chmod").arg("+x").arg(&path).status()?;
    Ok(path)
}

/// The earliest time in `file` of a line with `event` that contains `needle`.
fn first_seen(file: &Path, event: &str, needle: &str) -> Option<f64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(event) && l.contains(needle))
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .reduce(f64::min)
}

/// Waits until every file has a line for `event` with `needle`; the latest first sighting
/// minus `t0`, and the median, in milliseconds.
async fn reach(
    files: &[PathBuf],
    event: &str,
    needle: &str,
    t0: f64,
) -> anyhow::Result<(f64, f64)> {
    let seen = wait_until(&format!("{event} {needle} everywhere"), PHASE, || async {
        let all: Option<Vec<f64>> = files.iter().map(|f| first_seen(f, event, needle)).collect();
        all
    })
    .await?;
    let mut ms: Vec<f64> = seen.iter().map(|t| (t - t0) * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    Ok((ms[ms.len() - 1], ms[ms.len() / 2]))
}

/// One side's cluster of N agents: its processes, each agent's stamp file, and how to fire a
/// user event (payload `go`: handlers get the payload on stdin) and ask one agent how many
/// members it sees alive.
trait Cluster {
    fn files(&self) -> &[PathBuf];
    fn kill(&mut self, i: usize);
    fn name(&self, i: usize) -> String;
    fn fire(&self, name: &str) -> anyhow::Result<()>;
    fn alive_seen(&self, i: usize) -> impl std::future::Future<Output = usize>;
    /// Milliseconds from starting `exec 'echo hi'` on every agent to the last exit code
    /// printed; `None` where there is no exec.
    fn exec_all(&self) -> anyhow::Result<Option<f64>> {
        Ok(None)
    }
}

struct Muster {
    agents: Vec<Agent>,
    files: Vec<PathBuf>,
}

impl Muster {
    async fn start(root: &Path, n: usize, script: &Path) -> anyhow::Result<Muster> {
        let (mut agents, mut files) = (Vec::new(), Vec::new());
        std::fs::create_dir_all(root)?;
        let cfg = root.join("exec.json");
        std::fs::write(&cfg, r#"{"disable_remote_exec": false}"#)?;
        for i in 0..n {
            let name = format!("m{i:02}");
            let file = root.join(format!("{name}.log"));
            let handler = format!("{} {}", script.display(), file.display());
            let mut args = vec![
                "-dns-port".to_string(),
                "-1".into(),
                "-log-level".into(),
                "warn".into(),
                "-event-handler".into(),
                format!("member-failed,user={handler}"),
                "-config-file".into(),
                cfg.display().to_string(),
            ];
            if let Some(first) = agents.first() {
                let first: &Agent = first;
                args.extend(["-retry-join".to_string(), first.serf.to_string()]);
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            agents.push(Agent::start(&name, &root.join(&name), &refs)?);
            files.push(file);
        }
        Ok(Muster { agents, files })
    }
}

impl Cluster for Muster {
    fn files(&self) -> &[PathBuf] {
        &self.files
    }
    fn kill(&mut self, i: usize) {
        self.agents[i].kill9();
    }
    fn name(&self, i: usize) -> String {
        self.agents[i].name.clone()
    }
    fn fire(&self, name: &str) -> anyhow::Result<()> {
        let out = self.agents[0].cli(&["event", "-name", name, "go"]);
        anyhow::ensure!(out.status.success(), "muster event failed: {out:?}");
        Ok(())
    }
    fn exec_all(&self) -> anyhow::Result<Option<f64>> {
        use std::io::BufRead;
        let n = self.agents.len();
        let t = Instant::now();
        let mut child = Command::new(muster_bin())
            .args(["exec", "-wait", "1s", "echo hi"])
            .env("MUSTER_HTTP_ADDR", self.agents[0].http.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut done = 0;
        let mut took = None;
        for line in std::io::BufReader::new(out).lines() {
            if line?.ends_with("finished with exit code 0") {
                done += 1;
                if done == n {
                    took = Some(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        let _ = child.wait();
        anyhow::ensure!(took.is_some(), "exec: {done} of {n} agents finished");
        Ok(took)
    }
    async fn alive_seen(&self, i: usize) -> usize {
        let Ok(r) = muster_tests::get(&self.agents[i].url("/v1/agent/members")).await else {
            return 0;
        };
        r.json()
            .as_array()
            .map_or(0, |l| l.iter().filter(|m| m["Status"] == 1).count())
    }
}

struct Serf {
    procs: Vec<Option<Proc>>,
    rpc: Vec<String>,
    files: Vec<PathBuf>,
}

impl Serf {
    fn start(root: &Path, n: usize, script: &Path) -> anyhow::Result<Serf> {
        let (mut procs, mut rpc, mut files, mut first) = (Vec::new(), Vec::new(), Vec::new(), None);
        for i in 0..n {
            let name = format!("s{i:02}");
            let file = root.join(format!("{name}.log"));
            let bind = format!("127.0.0.1:{}", free_port()?);
            let rpc_addr = format!("127.0.0.1:{}", free_port()?);
            let handler = format!("{} {}", script.display(), file.display());
            let mut cmd = Command::new("serf");
            cmd.arg("agent")
                .arg(format!("-node={name}"))
                .arg(format!("-bind={bind}"))
                .arg(format!("-rpc-addr={rpc_addr}"))
                .arg(format!("-event-handler=member-failed,user={handler}"))
                .arg("-log-level=warn");
            if let Some(f) = &first {
                cmd.arg(format!("-join={f}"));
            }
            let log = std::fs::File::create(root.join(format!("{name}.out")))?;
            let child = cmd.stdout(Stdio::null()).stderr(log).spawn()?;
            procs.push(Some(Proc(child)));
            first.get_or_insert(bind);
            rpc.push(rpc_addr);
            files.push(file);
            // Serf's -join is tried once at start: let the first agent listen before others join.
            if i == 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        Ok(Serf { procs, rpc, files })
    }
}

impl Cluster for Serf {
    fn files(&self) -> &[PathBuf] {
        &self.files
    }
    fn kill(&mut self, i: usize) {
        // Proc's drop kills (SIGKILL) and reaps it.
        self.procs[i] = None;
    }
    fn name(&self, i: usize) -> String {
        format!("s{i:02}")
    }
    fn fire(&self, name: &str) -> anyhow::Result<()> {
        let st = Command::new("serf")
            .args(["event", &format!("-rpc-addr={}", self.rpc[0]), name, "go"])
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(st.success(), "serf event failed");
        Ok(())
    }
    async fn alive_seen(&self, i: usize) -> usize {
        let out = Command::new("serf")
            .args([
                "members",
                &format!("-rpc-addr={}", self.rpc[i]),
                "-status=alive",
            ])
            .output();
        out.map_or(0, |o| String::from_utf8_lossy(&o.stdout).lines().count())
    }
}

/// Forms the cluster, then times an event's reach and a failure's detection.
async fn run(side: &str, mut c: impl Cluster, n: usize, kills: usize) -> anyhow::Result<()> {
    let t = Instant::now();
    for i in 0..n {
        wait_until(
            &format!("{side}: agent {i} sees all {n}"),
            PHASE,
            || async { (c.alive_seen(i).await >= n).then_some(()) },
        )
        .await?;
    }
    let formed = t.elapsed();
    let t0 = now();
    c.fire("bench")?;
    let (ev_max, ev_med) = reach(c.files(), "user", "", t0).await?;
    let exec = match c.exec_all()? {
        Some(ms) => format!("exec on all: {ms:>5.0} ms"),
        None => "exec on all:     -   ".to_string(),
    };
    // Agents killed one after the other (each once the one before is failed everywhere),
    // so one lucky or unlucky probe order does not make the figure.
    let mut everywhere = Vec::new();
    let mut fail_med = 0.0;
    for k in 0..kills.clamp(1, (n / 4).max(1)) {
        let victim = n - 1 - k;
        let name = c.name(victim);
        let files: Vec<PathBuf> = c.files()[..victim].to_vec();
        let t0 = now();
        c.kill(victim);
        let (max, med) = reach(&files, "member-failed", &name, t0).await?;
        everywhere.push(max);
        fail_med = med;
    }
    let each: Vec<String> = everywhere.iter().map(|ms| format!("{ms:.0}")).collect();
    everywhere.sort_by(f64::total_cmp);
    let worst = everywhere.last().copied().unwrap_or(0.0);
    println!(
        "  {side:<7} N={n:<3} formed in {:>5.1} s   user event: all {ev_max:>6.0} ms (median {ev_med:>5.0})   \
         {exec}   kill -9: failed everywhere {worst:>6.0} ms (last one's median {fail_med:>5.0}; \
         each kill: {} ms)",
        formed.as_secs_f64(),
        each.join(", ")
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = muster_tests::bench::start(10)?;
    let sizes: Vec<usize> = cli
        .words
        .iter()
        .position(|w| w == "--sizes")
        .and_then(|i| cli.words.get(i + 1))
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![3, 20, 50]);
    let kills: usize = cli
        .words
        .iter()
        .position(|w| w == "--kills")
        .and_then(|i| cli.words.get(i + 1))
        .and_then(|k| k.parse().ok())
        .unwrap_or(3);
    let serf = Command::new("serf").arg("version").output().is_ok();
    println!(
        "== Gossip: N agents on 127.0.0.1, one process each; muster ({}) and serf side by side",
        muster_bin().display()
    );
    for n in sizes {
        let root = tempfile::tempdir()?;
        let script = stamp_script(root.path())?;
        let m = Muster::start(&root.path().join("muster"), n, &script).await?;
        run("muster", m, n, kills).await?;
        if serf {
            let dir = root.path().join("serf");
            std::fs::create_dir_all(&dir)?;
            run("serf", Serf::start(&dir, n, &script)?, n, kills).await?;
        }
    }
    Ok(())
}
