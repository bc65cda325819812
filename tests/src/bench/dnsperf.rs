//! dnsperf (Debian's package) driven for the benches, one run at a time.

use std::process::Command;
use std::time::Duration;

use super::Stats;

/// What one dnsperf run measured.
pub struct Run {
    pub qps: f64,
    /// Latency percentiles of the answered queries (from `-v`, one line per query).
    pub stats: Stats,
    pub lost: u64,
    /// Answers other than NOERROR and NXDOMAIN.
    pub errors: usize,
}

/// Runs dnsperf (`-c 20 -T 2 -q 100`, at most `rate` QPS if given) against 127.0.0.1:`port`
/// with the queries in `file`, in verbose mode, so that every answer's latency is known.
pub fn dnsperf(
    port: u16,
    file: &std::path::Path,
    secs: u64,
    rate: Option<u32>,
) -> anyhow::Result<Run> {
    let mut cmd = Command::new("dnsperf");
    cmd.args(["-s", "127.0.0.1", "-p", &port.to_string(), "-v", "-d"])
        .arg(file);
    cmd.args(["-c", "20", "-T", "2", "-q", "100", "-l", &secs.to_string()]);
    if let Some(r) = rate {
        cmd.args(["-Q", &r.to_string()]);
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |label: &str| -> f64 {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    // "> NOERROR name type 0.000123"
    let mut latencies = Vec::new();
    let mut errors = 0;
    for line in text.lines().filter_map(|l| l.strip_prefix("> ")) {
        let mut f = line.split_whitespace();
        let code = f.next().unwrap_or("");
        if code != "NOERROR" && code != "NXDOMAIN" {
            errors += 1;
        }
        if let Some(s) = f.last().and_then(|s| s.parse::<f64>().ok()) {
            latencies.push(Duration::from_secs_f64(s));
        }
    }
    Ok(Run {
        qps: num("Queries per second"),
        stats: Stats::new(latencies, errors, secs as f64),
        lost: num("Queries lost") as u64,
        errors,
    })
}

/// One line: QPS, latency percentiles, lost queries and errors.
pub fn report(who: &str, r: &Run) {
    println!(
        "  {who:<8} {:>9.0} QPS  p50 {:.3} ms  p99 {:.3} ms  lost {}  errors {}",
        r.qps, r.stats.p50_ms, r.stats.p99_ms, r.lost, r.errors
    );
}
