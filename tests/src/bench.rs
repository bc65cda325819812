//! Pieces the benchmarks share: latency summaries and `/proc` readings of a process we
//! started.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

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
