//! `/v1/agent/metrics` on a real agent: Consul's JSON shape, and the Prometheus text format
//! read back by a Prometheus text-format parser, its counters moving with the traffic; and
//! `muster info`, the same agent's figures in `consul info`'s layout, and `muster monitor`,
//! its log lines as they are written.

use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use muster_tests::*;
use prometheus_parse::{Scrape, Value as PromValue};

/// A config file in `dir` with `telemetry`, as `-config-file` arguments.
fn telemetry(dir: &std::path::Path, t: serde_json::Value) -> anyhow::Result<[String; 2]> {
    let f = dir.join("telemetry.json");
    std::fs::write(&f, serde_json::json!({ "telemetry": t }).to_string())?;
    Ok(["-config-file".into(), f.display().to_string()])
}

/// Prometheus on, gauge names without the hostname: what dashboards built for Consul set.
async fn scraped_server(root: &std::path::Path) -> anyhow::Result<Agent> {
    let t = serde_json::json!({"prometheus_retention_time": "60s", "disable_hostname": true});
    let args = telemetry(root, t)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    single_server(root, "s1", &args).await
}

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

/// The value of the counter or gauge `name` whose labels include all of `labels`; for a
/// histogram, its count of observations.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .and_then(|x| match &x.value {
            PromValue::Counter(v) | PromValue::Gauge(v) | PromValue::Untyped(v) => Some(*v),
            PromValue::Histogram(h) => h.iter().map(|b| b.count).reduce(f64::max),
            _ => None,
        })
}

/// One UDP query; its response code.
fn dns(addr: SocketAddr, name: &str, qtype: RecordType) -> anyhow::Result<ResponseCode> {
    let mut m = Message::new();
    m.set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(Name::from_str(name)?, qtype));
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.send_to(&m.to_vec()?, addr)?;
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf)?;
    Ok(Message::from_vec(&buf[..n])?.response_code())
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_output_parses_and_counters_follow_traffic() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = scraped_server(root.path()).await?;
    let dns_addr = a.dns.expect("dns");
    let kv_puts = [("route", "/v1/kv/*key"), ("method", "PUT"), ("code", "200")];
    let a_ok = [("type", "A"), ("rcode", "NOERROR")];
    let a_nx = [("type", "A"), ("rcode", "NXDOMAIN")];
    let before = scrape(&a).await?;
    let at =
        |s: &Scrape, name: &str, labels: &[(&str, &str)]| value(s, name, labels).unwrap_or(0.0);
    for i in 0..5 {
        let w = put(&a.url(&format!("/v1/kv/m{i}")), b"value").await?;
        assert_eq!(w.status, 200);
    }
    let r = put(
        &a.url("/v1/catalog/register"),
        br#"{"Node": "web1", "Address": "10.0.0.1", "Service": {"Service": "web"}}"#,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..3 {
        assert_eq!(
            dns(dns_addr, "s1.node.consul.", RecordType::A)?,
            ResponseCode::NoError
        );
    }
    for _ in 0..2 {
        assert_eq!(
            dns(dns_addr, "nope.node.consul.", RecordType::A)?,
            ResponseCode::NXDomain
        );
    }
    dns(dns_addr, "1.0.0.10.in-addr.arpa.", RecordType::PTR)?;
    let after = scrape(&a).await?;
    let moved =
        |name: &str, labels: &[(&str, &str)]| at(&after, name, labels) - at(&before, name, labels);

    // HTTP and DNS, by route or query type and status, with their latencies.
    assert_eq!(
        moved("consul_api_http_requests_total", &kv_puts),
        5.0,
        "five KV writes"
    );
    assert!(
        moved(
            "consul_api_http",
            &[("route", "/v1/kv/*key"), ("method", "PUT")]
        ) >= 5.0
    );
    assert_eq!(moved("consul_dns_queries_total", &a_ok), 3.0);
    assert_eq!(moved("consul_dns_queries_total", &a_nx), 2.0);
    let ptr: f64 = ["NOERROR", "NXDOMAIN"]
        .iter()
        .map(|c| moved("consul_dns_queries_total", &[("type", "PTR"), ("rcode", c)]))
        .sum();
    assert_eq!(ptr, 1.0, "one reverse lookup");
    assert_eq!(moved("consul_dns_domain_query", &[]), 5.0);
    assert_eq!(moved("consul_dns_ptr_query", &[]), 1.0);
    // Raft: proposals, commit and write latency.
    assert!(moved("consul_raft_apply", &[]) >= 6.0);
    assert!(moved("consul_raft_commitTime", &[]) >= 1.0);
    assert_eq!(moved("consul_kvs_apply", &[]), 5.0);
    assert!(moved("consul_raft_write", &[]) >= 6.0);
    // Sizes of the state.
    assert_eq!(at(&after, "consul_state_kv_entries", &[]), 5.0);
    assert!(at(&after, "consul_state_kv_bytes", &[]) >= 5.0 * 7.0);
    assert!(at(&after, "consul_state_nodes", &[]) >= 2.0);
    assert!(at(&after, "consul_state_services", &[]) >= 1.0);
    assert!(at(&after, "consul_state_service_instances", &[]) >= 1.0);
    // Raft state, gossip, process.
    assert!(at(&after, "consul_raft_term", &[]) >= 1.0);
    assert!(at(&after, "consul_raft_applied_index", &[]) >= 6.0);
    assert_eq!(
        value(&after, "consul_raft_state", &[("state", "Leader")]),
        Some(1.0)
    );
    assert_eq!(
        value(&after, "consul_serf_lan_members", &[("state", "alive")]),
        Some(1.0)
    );
    assert!(value(&after, "consul_memberlist_msg_suspect", &[]).is_some());
    assert!(at(&after, "consul_raft_leader_changes", &[]) >= 1.0);
    assert!(at(&after, "consul_process_resident_memory_bytes", &[]) > 1e6);
    assert!(at(&after, "consul_process_open_fds", &[]) > 3.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn json_metrics_have_consuls_shape_and_telemetry_is_honoured() -> anyhow::Result<()> {
    // Consul's defaults: no Prometheus format, gauge names with the hostname.
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
    let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let named = |kind: &str, name: &str| {
        m[kind]
            .as_array()
            .and_then(|l| l.iter().find(|g| g["Name"] == name).cloned())
    };
    let term = named("Gauges", &format!("consul.{host}.raft.term")).expect("raft term gauge");
    assert!(term["Value"].as_f64().unwrap_or(0.0) >= 1.0, "{term}");
    let kv = named("Gauges", &format!("consul.{host}.state.kv_entries")).expect("kv gauge");
    assert_eq!(kv["Value"].as_f64(), Some(1.0), "{kv}");
    let c = named("Counters", "consul.api.http.requests_total").expect("http counter");
    for k in [
        "Name", "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev", "Labels",
    ] {
        assert!(!c[k].is_null(), "{k} in {c}");
    }
    assert!(named("Samples", "consul.kvs.apply").is_some(), "{m}");
    let bad = get(&a.url("/v1/agent/metrics?format=xml")).await?;
    assert_eq!(bad.status, 400);
    let off = get(&a.url("/v1/agent/metrics?format=prometheus")).await?;
    assert_eq!(
        (off.status, off.text().as_str()),
        (
            415,
            "Prometheus is not enabled since its retention time is not positive"
        )
    );

    // `metrics_prefix` names everything; `disable_hostname` leaves the host out.
    let root = tempfile::tempdir()?;
    let t = serde_json::json!({"prometheus_retention_time": "1m", "disable_hostname": true,
                               "metrics_prefix": "muster"});
    let args = telemetry(root.path(), t)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = single_server(root.path(), "s2", &args).await?;
    let m = get(&b.url("/v1/agent/metrics")).await?.json();
    let gauges = m["Gauges"].as_array().expect("gauges");
    assert!(
        gauges.iter().any(|g| g["Name"] == "muster.raft.term"),
        "{m}"
    );
    let s = scrape(&b).await?;
    assert!(value(&s, "muster_raft_term", &[]).is_some_and(|t| t >= 1.0));
    assert!(s.samples.iter().all(|x| x.metric.starts_with("muster_")));
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

/// Datagrams received on `sock` until `done` says the text so far is enough, or `deadline`.
fn receive_until(
    sock: &UdpSocket,
    deadline: Duration,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let end = std::time::Instant::now() + deadline;
    let mut text = String::new();
    let mut buf = [0u8; 65536];
    while !done(&text) {
        let left = end.saturating_duration_since(std::time::Instant::now());
        anyhow::ensure!(
            !left.is_zero(),
            "not enough metrics by the deadline: {text}"
        );
        sock.set_read_timeout(Some(left))?;
        if let Ok(n) = sock.recv(&mut buf) {
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn statsd_and_dogstatsd_sinks_get_the_metrics_the_filter_keeps() -> anyhow::Result<()> {
    let statsd = UdpSocket::bind("127.0.0.1:0")?;
    let dogstatsd = UdpSocket::bind("127.0.0.1:0")?;
    let root = tempfile::tempdir()?;
    let t = serde_json::json!({
        "disable_hostname": true,
        "metrics_prefix": "muster",
        "statsd_address": statsd.local_addr()?.to_string(),
        "dogstatsd_addr": dogstatsd.local_addr()?.to_string(),
        "dogstatsd_tags": ["env:test"],
        "prefix_filter": ["-muster.raft", "+muster.raft.term"],
        "blocked_prefixes": ["muster.process"],
    });
    let args = telemetry(root.path(), t)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = single_server(root.path(), "s1", &args).await?;
    for i in 0..5 {
        put(&a.url(&format!("/v1/kv/k{i}")), b"v").await?;
    }
    // The pushes come every 10 s: the second one carries the writes above.
    let text = receive_until(&statsd, Duration::from_secs(30), |t| {
        t.contains("muster.kvs.apply") && t.contains("muster.api.http.requests_total")
    })?;
    let lines: Vec<&str> = text.lines().collect();
    let term = lines.iter().find(|l| l.starts_with("muster.raft.term:"));
    assert!(term.is_some_and(|l| l.ends_with("|g")), "{text}");
    // The filter: the longest prefix wins; blocked prefixes go.
    assert!(!text.contains("muster.raft.commit_index"), "{text}");
    assert!(!text.contains("muster.process"), "{text}");
    // Counters go as what they gained, with their label values in the name.
    let puts = lines
        .iter()
        .find(|l| l.starts_with("muster.api.http.requests_total.") && l.contains(".PUT."))
        .expect("a PUT counter");
    assert!(puts.ends_with("|c"), "{puts}");
    // Latencies go as the mean of the new samples, with the rate standing for their count.
    let apply = lines
        .iter()
        .find(|l| l.starts_with("muster.kvs.apply:"))
        .expect("kvs.apply");
    assert!(apply.contains("|ms"), "{apply}");

    let dog = receive_until(&dogstatsd, Duration::from_secs(30), |t| {
        t.contains("muster.api.http.requests_total:")
    })?;
    let line = dog
        .lines()
        .find(|l| l.starts_with("muster.api.http.requests_total:"))
        .expect("counter");
    assert!(line.contains("|c|#") && line.contains("method:") && line.ends_with(",env:test"));
    // The same filter holds for the agent's own answer.
    let m = get(&a.url("/v1/agent/metrics")).await?.json();
    let names: Vec<&str> = m["Gauges"]
        .as_array()
        .expect("gauges")
        .iter()
        .filter_map(|g| g["Name"].as_str())
        .collect();
    assert!(names.contains(&"muster.raft.term"), "{names:?}");
    assert!(names.contains(&"muster.state.kv_entries"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("muster.raft.commit")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("muster.process")),
        "{names:?}"
    );
    Ok(())
}
