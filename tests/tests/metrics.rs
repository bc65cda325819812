//! `/v1/agent/metrics` on a real agent: Consul's JSON shape, and the Prometheus text format
//! read back by a Prometheus text-format parser, its counters moving with the traffic; and
//! `muster info`, the same agent's figures in `consul info`'s layout, and `muster monitor`,
//! its log lines as they are written.

use std::time::Duration;

use muster_tests::*;
use prometheus_parse::{Scrape, Value as PromValue};

async fn scrape(a: &Agent) -> anyhow::Result<Scrape> {
    let r = get(&a.url("/v1/agent/metrics?format=prometheus")).await?;
    anyhow::ensure!(r.status == 200, "metrics: {} {}", r.status, r.text());
    let ct = r.header("content-type").unwrap_or_default();
    anyhow::ensure!(ct.starts_with("text/plain"), "content type {ct}");
    let lines = r
        .text()
        .lines()
        .map(|l| Ok(l.to_string()))
        .collect::<Vec<_>>();
    Ok(Scrape::parse(lines.into_iter())?)
}

/// The value of the counter or gauge `name` whose labels include all of `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .and_then(|x| match x.value {
            PromValue::Counter(v) | PromValue::Gauge(v) | PromValue::Untyped(v) => Some(v),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_output_parses_and_counters_follow_traffic() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "s1", &[]).await?;
    let kv_puts = [("route", "/v1/kv/*key"), ("method", "PUT"), ("code", "200")];
    let before = scrape(&a).await?;
    let n0 = value(&before, "consul_api_http_requests_total", &kv_puts).unwrap_or(0.0);
    for i in 0..5 {
        let w = put(&a.url(&format!("/v1/kv/m{i}")), b"v").await?;
        assert_eq!(w.status, 200);
    }
    let after = scrape(&a).await?;
    let n1 = value(&after, "consul_api_http_requests_total", &kv_puts).unwrap_or(0.0);
    assert_eq!(n1 - n0, 5.0, "five KV writes counted");
    // The latency histogram saw them too.
    let hist = after
        .samples
        .iter()
        .find(|x| {
            x.metric == "consul_api_http"
                && x.labels.get("route") == Some("/v1/kv/*key")
                && x.labels.get("method") == Some("PUT")
        })
        .expect("latency histogram for KV writes");
    assert!(
        matches!(&hist.value, PromValue::Histogram(h) if !h.is_empty()),
        "{hist:?}"
    );
    // Raft, gossip and process figures.
    let gauge = |name: &str, state: &str| {
        value(&after, "consul_agent", &[("name", name), ("state", state)])
    };
    assert!(gauge("raft.term", "").unwrap_or(0.0) >= 1.0);
    assert!(gauge("raft.applied_index", "").unwrap_or(0.0) >= 5.0);
    assert_eq!(gauge("raft.state", "Leader"), Some(1.0));
    assert_eq!(gauge("serf.lan.members", "alive"), Some(1.0));
    assert!(gauge("process.resident_memory_bytes", "").unwrap_or(0.0) > 1e6);
    assert!(gauge("process.open_fds", "").unwrap_or(0.0) > 3.0);
    assert!(value(&after, "consul_raft_state_leader_changes", &[]).unwrap_or(0.0) >= 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn json_metrics_have_consuls_shape() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "s1", &[]).await?;
    put(&a.url("/v1/kv/x"), b"1").await?;
    let m = wait_until("metrics with a counter", Duration::from_secs(5), || async {
        let m = get(&a.url("/v1/agent/metrics")).await.ok()?.json();
        (!m["Counters"].as_array()?.is_empty()).then_some(m)
    })
    .await?;
    for k in ["Timestamp", "Gauges", "Points", "Counters", "Samples"] {
        assert!(!m[k].is_null(), "{k} in {m}");
    }
    assert!(
        m["Timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with("+0000 UTC")),
        "{m}"
    );
    let gauges = m["Gauges"].as_array().expect("gauges");
    let term = gauges
        .iter()
        .find(|g| g["Name"] == "consul.raft.term")
        .expect("raft term gauge");
    assert!(term["Value"].as_f64().unwrap_or(0.0) >= 1.0, "{term}");
    let c = &m["Counters"][0];
    for k in [
        "Name", "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev", "Labels",
    ] {
        assert!(!c[k].is_null(), "{k} in {c}");
    }
    let bad = get(&a.url("/v1/agent/metrics?format=xml")).await?;
    assert_eq!(bad.status, 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn info_prints_consuls_sections() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "s1", &[]).await?;
    let out = a.cli(&["info"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for section in [
        "agent:",
        "build:",
        "consul:",
        "raft:",
        "runtime:",
        "serf_lan:",
    ] {
        assert!(text.lines().any(|l| l == section), "{section} in {text}");
    }
    assert!(text.contains("\tstate = Leader\n"), "{text}");
    assert!(text.contains("\tserver = true\n"), "{text}");
    Ok(())
}

/// Runs `muster monitor ARGS` against `a`, reloads the agent until the monitor prints a line
/// holding `want`, and returns that line.
async fn monitor_line(a: &Agent, args: &[&str], want: &str) -> anyhow::Result<String> {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(muster_bin())
        .arg("monitor")
        .args(args)
        .env("MUSTER_HTTP_ADDR", a.http.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let found = wait_until("a monitored log line", Duration::from_secs(15), || async {
        call("PUT", &a.url("/v1/agent/reload"), None, None).await;
        rx.try_iter().find(|l| l.contains(want))
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_streams_the_agents_log_lines() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "s1", &[]).await?;
    let line = monitor_line(&a, &[], "configuration reloaded").await?;
    assert!(line.contains("[INFO]"), "{line}");
    let line = monitor_line(
        &a,
        &["-log-json", "-log-level", "debug"],
        "configuration reloaded",
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    assert_eq!(v["@level"], "info", "{line}");
    assert_eq!(v["@message"], "configuration reloaded", "{line}");
    // A level the agent does not know is refused.
    let bad = get(&a.url("/v1/agent/monitor?loglevel=loud")).await?;
    assert_eq!(bad.status, 400);
    // An open stream does not hold up the agent's shutdown (its HTTP drain would wait 5 s).
    let open = http().get(a.url("/v1/agent/monitor")).send().await?;
    assert_eq!(open.status(), 200);
    let mut a = a;
    let status = a.terminate(Duration::from_secs(4))?;
    assert!(status.success(), "{status:?}");
    drop(open);
    Ok(())
}
