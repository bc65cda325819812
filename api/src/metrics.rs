//! The agent's metrics: `/v1/agent/metrics` in Consul's JSON shape (`Timestamp`, `Gauges`,
//! `Points`, `Counters`, `Samples`) and, with `?format=prometheus`, in Prometheus' text format,
//! both from one `prometheus` registry. Its `gather()` snapshot holds every value and label,
//! so both formats come from the same data and the text format is the crate's own encoder.
//!
//! HTTP requests are counted by the [`track`] middleware as they happen; Raft, gossip, checks,
//! catalog and process figures are read when a scrape asks for them.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::reply::json;
use crate::ApiState;

/// Every metric the agent keeps.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    /// Figures read at scrape time, by name and labels.
    gauges: GaugeVec,
    leader_changes: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "consul_api_http_requests_total",
                "HTTP requests served, by route and status",
            ),
            &["route", "method", "code"],
        )
        .expect("valid metric");
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "consul_api_http",
                "HTTP request latency in seconds, by route",
            ),
            &["route", "method"],
        )
        .expect("valid metric");
        let gauges = GaugeVec::new(
            Opts::new("consul_agent", "Agent figures read at scrape time"),
            &["name", "state"],
        )
        .expect("valid metric");
        let leader_changes = IntCounter::new(
            "consul_raft_state_leader_changes",
            "Changes of the Raft leader this server has seen",
        )
        .expect("valid metric");
        for m in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_seconds.clone()),
            Box::new(gauges.clone()),
            Box::new(leader_changes.clone()),
        ] {
            registry.register(m).expect("distinct metric names");
        }
        Metrics {
            registry,
            started: Instant::now(),
            http_requests,
            http_seconds,
            gauges,
            leader_changes,
        }
    }

    fn set(&self, name: &str, state: &str, v: f64) {
        self.gauges.with_label_values(&[name, state]).set(v);
    }
}

/// Counts a request and its latency under its route pattern (never its raw path, so the label
/// set stays bounded), written `/v1/kv/*key`, `/v1/catalog/service/:service`: braces in label
/// values trip up simple exposition parsers.
pub(crate) async fn track(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(
        || "other".to_string(),
        |p| {
            p.as_str()
                .replace("{*", "*")
                .replace('{', ":")
                .replace('}', "")
        },
    );
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = &st.metrics;
    m.http_seconds
        .with_label_values(&[&route, &method])
        .observe(start.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[&route, &method, resp.status().as_str()])
        .inc();
    resp
}

pub(crate) async fn agent_metrics(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    refresh(&st);
    let families = st.metrics.registry.gather();
    match p.get("format") {
        Some("prometheus") => {
            let enc = TextEncoder::new();
            let mut out = Vec::new();
            enc.encode(&families, &mut out)
                .map_err(|e| ApiError::BadRequest(format!("encode metrics: {e}")))?;
            Ok(([(CONTENT_TYPE, enc.format_type().to_string())], out).into_response())
        }
        Some(f) if !f.is_empty() => Err(ApiError::BadRequest(format!(
            "unknown metrics format {f:?}: expected prometheus, or none for JSON"
        ))),
        _ => Ok(json(&consul_json(&families, &st.metrics), p.pretty())),
    }
}

/// Reads the figures kept elsewhere into the registry.
fn refresh(st: &ApiState) {
    let m = &st.metrics;
    if let Some(r) = st.server.raft_stats() {
        m.set("raft.term", "", r.term as f64);
        m.set("raft.last_index", "", r.last_log_index as f64);
        m.set("raft.commit_index", "", r.commit_index as f64);
        m.set("raft.applied_index", "", r.applied_index as f64);
        for s in ["Leader", "Follower", "Candidate", "Learner"] {
            m.set("raft.state", s, f64::from(u8::from(r.state == s)));
        }
        let seen = m.leader_changes.get();
        m.leader_changes
            .inc_by(r.leader_changes.saturating_sub(seen));
    }
    if let Some(c) = st.server.catalog() {
        if let Ok(nodes) = c.nodes() {
            m.set("catalog.nodes", "", nodes.len() as f64);
        }
    }
    let mut by_state: BTreeMap<&str, f64> = ["alive", "leaving", "left", "failed"]
        .map(|s| (s, 0.0))
        .into();
    for member in st.agent.members() {
        let s = match member.status {
            1 => "alive",
            2 => "leaving",
            3 => "left",
            _ => "failed",
        };
        *by_state.entry(s).or_default() += 1.0;
    }
    for (s, n) in by_state {
        m.set("serf.lan.members", s, n);
    }
    if let Some(local) = &st.local {
        let mut by_status: BTreeMap<String, f64> = ["passing", "warning", "critical"]
            .map(|s| (s.to_string(), 0.0))
            .into();
        for c in local.checks() {
            *by_status.entry(c.status.to_string()).or_default() += 1.0;
        }
        for (s, n) in by_status {
            m.set("agent.checks", &s, n);
        }
    }
    let p = process_stats();
    m.set("process.resident_memory_bytes", "", p.rss_bytes);
    m.set("process.cpu_seconds", "", p.cpu_seconds);
    m.set("process.open_fds", "", p.open_fds);
}

#[derive(Default)]
struct ProcessStats {
    rss_bytes: f64,
    cpu_seconds: f64,
    open_fds: f64,
}

/// RSS, CPU time and open files of this process, from `/proc` (zeros where it is missing).
fn process_stats() -> ProcessStats {
    // Linux's page size and clock tick on every platform Muster runs on.
    const PAGE: f64 = 4096.0;
    const TICKS: f64 = 100.0;
    let mut p = ProcessStats::default();
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let pages: f64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        p.rss_bytes = pages * PAGE;
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces): utime and stime are the
        // 14th and 15th fields of the line, the 12th and 13th after it.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        p.cpu_seconds = (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / TICKS;
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        p.open_fds = dir.count() as f64;
    }
    p
}

/// The registry's snapshot in Consul's JSON shape. Gauges are named as Consul names them
/// (`consul.raft.term`); a histogram becomes a sample in milliseconds, with its mean as the
/// minimum and maximum too, as buckets keep no extremes.
fn consul_json(families: &[MetricFamily], m: &Metrics) -> Value {
    let mut gauges = Vec::new();
    let mut counters = Vec::new();
    let mut samples = Vec::new();
    let secs = m.started.elapsed().as_secs_f64().max(1.0);
    for f in families {
        for metric in f.get_metric() {
            let mut labels: BTreeMap<String, String> = metric
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            let name = if f.name() == "consul_agent" {
                let n = labels.remove("name").unwrap_or_default();
                if labels.get("state").is_some_and(String::is_empty) {
                    labels.remove("state");
                }
                format!("consul.{n}")
            } else {
                f.name().replacen('_', ".", 2)
            };
            match f.get_field_type() {
                MetricType::GAUGE => gauges.push(json!({
                    "Name": name,
                    "Value": metric.get_gauge().get_value(),
                    "Labels": labels,
                })),
                MetricType::COUNTER => {
                    let v = metric.get_counter().get_value();
                    counters.push(json!({
                        "Name": name, "Count": v as u64, "Rate": v / secs, "Sum": v,
                        "Min": 1, "Max": 1, "Mean": 1, "Stddev": 0, "Labels": labels,
                    }))
                }
                MetricType::HISTOGRAM => {
                    let h = metric.get_histogram();
                    let count = h.get_sample_count();
                    let sum_ms = h.get_sample_sum() * 1000.0;
                    let mean = if count == 0 {
                        0.0
                    } else {
                        sum_ms / count as f64
                    };
                    samples.push(json!({
                        "Name": name, "Count": count, "Rate": sum_ms / secs, "Sum": sum_ms,
                        "Min": mean, "Max": mean, "Mean": mean, "Stddev": 0, "Labels": labels,
                    }))
                }
                _ => {}
            }
        }
    }
    let now = time_now();
    json!({
        "Timestamp": now,
        "Gauges": gauges,
        "Points": [],
        "Counters": counters,
        "Samples": samples,
    })
}

/// Now as Consul's metrics timestamp (`2006-01-02 15:04:05 +0000 UTC`).
fn time_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rfc = muster_server::acl::builtin::rfc3339(secs * 1000);
    format!(
        "{} +0000 UTC",
        rfc.trim_end_matches('Z').replacen('T', " ", 1)
    )
}
