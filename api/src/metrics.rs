//! The agent's metrics: `/v1/agent/metrics` in Consul's JSON shape (`Timestamp`, `Gauges`,
//! `Points`, `Counters`, `Samples`) and, with `?format=prometheus`, in Prometheus' text format,
//! both from one `prometheus` registry. Its `gather()` snapshot holds every value and label,
//! so both formats come from the same data and the text format is the crate's own encoder.
//!
//! What is counted as it happens (HTTP requests here, by the [`track`] middleware; DNS
//! queries in `muster-dns`; Raft proposals, commits, writes and snapshots in
//! `muster-server`) is registered once, with its label sets resolved where they are few, so
//! recording costs atomic adds. Raft state, gossip members, checks, catalog and KV sizes and
//! process figures are gauges read when a scrape asks for them.
//!
//! Names are Consul's where Consul has one, under the `telemetry.metrics_prefix` (`consul`)
//! that the registry adds; gauges also carry the hostname after it unless
//! `telemetry.disable_hostname` is set, as go-metrics names them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::core::Collector;
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

/// Consul's answer to `?format=prometheus` while `prometheus_retention_time` is not positive.
pub const PROMETHEUS_DISABLED: &str =
    "Prometheus is not enabled since its retention time is not positive";

/// The `telemetry` settings the metrics honour.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// The first part of every name (Consul's `metrics_prefix`).
    pub prefix: String,
    /// Leave the hostname out of gauge names (Consul's `disable_hostname`).
    pub disable_hostname: bool,
    /// This machine's hostname, which gauge names carry unless `disable_hostname`.
    pub hostname: String,
    /// Consul's `prometheus_retention_time`: zero (the default) refuses the Prometheus format.
    /// Past that only its sign matters: counters are cumulative and gauges are read at each
    /// scrape, so nothing here goes stale to be expired.
    pub prometheus_retention: Duration,
    /// Which metrics are kept (`prefix_filter`, `allowed_prefixes`, `blocked_prefixes`,
    /// `filter_default`), in every answer and every sink.
    pub filter: MetricFilter,
    /// Where metrics are pushed (statsd, statsite, DogStatsD).
    pub sinks: crate::metrics_sink::Sinks,
}

/// Consul's metric filter: the rule with the longest prefix of a dotted name decides (the
/// later of equals), and a name no rule matches is kept unless `filter_default` is false.
#[derive(Debug, Clone)]
pub struct MetricFilter {
    pub keep_unmatched: bool,
    /// Prefixes and whether they are kept, in the order given.
    pub rules: Vec<(String, bool)>,
}

impl Default for MetricFilter {
    fn default() -> Self {
        MetricFilter {
            keep_unmatched: true,
            rules: Vec::new(),
        }
    }
}

impl MetricFilter {
    pub fn allows(&self, name: &str) -> bool {
        self.rules
            .iter()
            .filter(|(p, _)| name.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map_or(self.keep_unmatched, |(_, keep)| *keep)
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            prefix: "consul".into(),
            disable_hostname: false,
            hostname: String::new(),
            prometheus_retention: Duration::ZERO,
            filter: MetricFilter::default(),
            sinks: Default::default(),
        }
    }
}

/// A name part as Prometheus takes it, the way go-metrics flattens one: anything but
/// letters, digits and `_` becomes `_`.
fn flatten(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Every metric the agent keeps.
pub struct Metrics {
    registry: Registry,
    config: MetricsConfig,
    /// The flattened prefix, and the flattened hostname gauges carry (`None`: disabled).
    prefix: String,
    host: Option<String>,
    started: Instant,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    leader_changes: IntCounter,
    /// Gauges read at scrape time, by name, registered on first use.
    gauges: Mutex<HashMap<&'static str, GaugeVec>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(MetricsConfig {
            prometheus_retention: Duration::from_secs(60),
            disable_hostname: true,
            ..MetricsConfig::default()
        })
    }
}

impl Metrics {
    pub fn new(config: MetricsConfig) -> Metrics {
        let prefix = flatten(&config.prefix);
        let host = (!config.disable_hostname && !config.hostname.is_empty())
            .then(|| flatten(&config.hostname));
        let registry =
            Registry::new_custom(Some(prefix.clone()), None).expect("a valid metrics prefix");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "api_http_requests_total",
                "HTTP requests served, by route and status",
            ),
            &["route", "method", "code"],
        )
        .expect("valid metric");
        let http_seconds = HistogramVec::new(
            HistogramOpts::new("api_http", "HTTP request latency in seconds, by route"),
            &["route", "method"],
        )
        .expect("valid metric");
        let leader_changes = IntCounter::new(
            "raft_leader_changes",
            "Changes of the Raft leader this server has seen",
        )
        .expect("valid metric");
        let m = Metrics {
            registry,
            config,
            prefix,
            host,
            started: Instant::now(),
            http_requests: http_requests.clone(),
            http_seconds: http_seconds.clone(),
            leader_changes: leader_changes.clone(),
            gauges: Mutex::default(),
        };
        m.register(vec![
            Box::new(http_requests),
            Box::new(http_seconds),
            Box::new(leader_changes),
        ]);
        m
    }

    /// Registers what another part counts (`Server::metrics`, `DnsHandler::metrics`, gossip).
    /// Each collector is registered once per agent; a second registration is a bug.
    pub fn register(&self, collectors: Vec<Box<dyn Collector>>) {
        for c in collectors {
            self.registry
                .register(c)
                .expect("each metric registered once, under its own name");
        }
    }

    /// Whether `?format=prometheus` is served (`prometheus_retention_time` above zero).
    pub fn prometheus_enabled(&self) -> bool {
        !self.config.prometheus_retention.is_zero()
    }

    /// Sets the scrape-time gauge `name` (Prometheus spelling, without prefix or hostname)
    /// with `labels`. Scrapes only: the first use of a name takes a lock to register it.
    fn set(&self, name: &'static str, labels: &[(&str, &str)], v: f64) {
        let mut gauges = muster_server::sync::lock(&self.gauges);
        let g = gauges.entry(name).or_insert_with(|| {
            let full = match &self.host {
                Some(h) => format!("{h}_{name}"),
                None => name.to_string(),
            };
            let keys: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
            let g = GaugeVec::new(Opts::new(full, gauge_help(name)), &keys).expect("valid gauge");
            if let Err(e) = self.registry.register(Box::new(g.clone())) {
                tracing::warn!(error = %e, name, "metrics: gauge not registered");
            }
            g
        });
        let values: Vec<&str> = labels.iter().map(|(_, v)| *v).collect();
        match g.get_metric_with_label_values(&values) {
            Ok(g) => g.set(v),
            Err(e) => tracing::warn!(error = %e, name, "metrics: gauge labels differ"),
        }
    }

    /// Every metric family, as a scrape reads it, without those the filter drops.
    pub(crate) fn gather(&self) -> Vec<MetricFamily> {
        let mut families = self.registry.gather();
        families.retain(|f| self.config.filter.allows(&self.dotted(f.name())));
        families
    }

    /// The Consul-style dotted name of a gathered family: prefix, hostname for gauges, then
    /// the rest with `_` as `.` but where a Consul name keeps `_` (`kv_entries`).
    pub(crate) fn dotted(&self, family: &str) -> String {
        let rest = family
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('_'))
            .unwrap_or(family);
        let (host, rest) = match &self.host {
            Some(h) => match rest
                .strip_prefix(h.as_str())
                .and_then(|r| r.strip_prefix('_'))
            {
                Some(r) => (Some(h.as_str()), r),
                None => (None, rest),
            },
            None => (None, rest),
        };
        let mut name = rest.replace('_', ".");
        for keep in KEEP_UNDERSCORE {
            name = name.replace(&keep.replace('_', "."), keep);
        }
        match host {
            Some(h) => format!("{}.{h}.{name}", self.config.prefix),
            None => format!("{}.{name}", self.config.prefix),
        }
    }
}

/// Name parts that keep their `_` in the dotted (JSON) names, as Consul spells them.
const KEEP_UNDERSCORE: &[&str] = &[
    "requests_total",
    "queries_total",
    "domain_query",
    "ptr_query",
    "last_index",
    "commit_index",
    "applied_index",
    "leader_changes",
    "kv_entries",
    "kv_bytes",
    "service_instances",
    "resident_memory_bytes",
    "cpu_seconds",
    "open_fds",
];

fn gauge_help(name: &str) -> String {
    let what = match name {
        "raft_term" => "The current Raft term",
        "raft_last_index" => "The last index in this server's Raft log",
        "raft_commit_index" => "The last committed Raft index this server knows",
        "raft_applied_index" => "The last Raft index applied to this server's state",
        "raft_state" => "1 for this server's Raft state, 0 for the others",
        "state_nodes" => "Nodes in the catalog",
        "state_services" => "Distinct service names in the catalog",
        "state_service_instances" => "Service instances in the catalog",
        "state_kv_entries" => "Keys in the KV store",
        "state_kv_bytes" => "Bytes of keys and values in the KV store",
        "serf_lan_members" => "Gossip members, by state",
        "agent_checks" => "This agent's checks, by status",
        "process_resident_memory_bytes" => "Resident memory of the agent process",
        "process_cpu_seconds" => "CPU seconds the agent process has used",
        "process_open_fds" => "Open file descriptors of the agent process",
        _ => "Agent figure read at scrape time",
    };
    what.to_string()
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
    match p.get("format") {
        Some("prometheus") => {
            if !st.metrics.prometheus_enabled() {
                // Consul's status and text, so scrapers report the same misconfiguration.
                return Ok((
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    [(CONTENT_TYPE, "text/plain")],
                    PROMETHEUS_DISABLED,
                )
                    .into_response());
            }
            refresh(&st);
            let families = st.metrics.gather();
            let enc = TextEncoder::new();
            let mut out = Vec::new();
            enc.encode(&families, &mut out)
                .map_err(|e| ApiError::BadRequest(format!("encode metrics: {e}")))?;
            Ok(([(CONTENT_TYPE, enc.format_type().to_string())], out).into_response())
        }
        Some(f) if !f.is_empty() => Err(ApiError::BadRequest(format!(
            "unknown metrics format {f:?}: expected prometheus, or none for JSON"
        ))),
        _ => {
            refresh(&st);
            let families = st.metrics.gather();
            Ok(json(&consul_json(&families, &st.metrics), p.pretty()))
        }
    }
}

/// Reads the figures kept elsewhere into the registry.
pub(crate) fn refresh(st: &ApiState) {
    let m = &st.metrics;
    if let Some(r) = st.server.raft_stats() {
        m.set("raft_term", &[], r.term as f64);
        m.set("raft_last_index", &[], r.last_log_index as f64);
        m.set("raft_commit_index", &[], r.commit_index as f64);
        m.set("raft_applied_index", &[], r.applied_index as f64);
        for s in ["Leader", "Follower", "Candidate", "Learner"] {
            m.set(
                "raft_state",
                &[("state", s)],
                f64::from(u8::from(r.state == s)),
            );
        }
        let seen = m.leader_changes.get();
        m.leader_changes
            .inc_by(r.leader_changes.saturating_sub(seen));
    }
    if let Some(c) = st.server.catalog() {
        let u = c.usage();
        m.set("state_nodes", &[], u.nodes as f64);
        m.set("state_services", &[], u.services as f64);
        m.set("state_service_instances", &[], u.service_instances as f64);
        m.set("state_kv_entries", &[], u.kv_entries as f64);
        m.set("state_kv_bytes", &[], u.kv_bytes as f64);
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
        m.set("serf_lan_members", &[("state", s)], n);
    }
    if let Some(local) = &st.local {
        let mut by_status: BTreeMap<String, f64> = ["passing", "warning", "critical"]
            .map(|s| (s.to_string(), 0.0))
            .into();
        for c in local.checks() {
            *by_status.entry(c.status.to_string()).or_default() += 1.0;
        }
        for (s, n) in by_status {
            m.set("agent_checks", &[("status", &s)], n);
        }
    }
    let p = process_stats();
    m.set("process_resident_memory_bytes", &[], p.rss_bytes);
    m.set("process_cpu_seconds", &[], p.cpu_seconds);
    m.set("process_open_fds", &[], p.open_fds);
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

/// The registry's snapshot in Consul's JSON shape, names dotted as Consul's
/// (`consul.raft.commitTime`, `consul.<host>.state.kv_entries`); a histogram becomes a sample in milliseconds, with its mean as the
/// minimum and maximum too, as buckets keep no extremes.
fn consul_json(families: &[MetricFamily], m: &Metrics) -> Value {
    let mut gauges = Vec::new();
    let mut counters = Vec::new();
    let mut samples = Vec::new();
    let secs = m.started.elapsed().as_secs_f64().max(1.0);
    for f in families {
        for metric in f.get_metric() {
            let labels: BTreeMap<String, String> = metric
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            let name = m.dotted(f.name());
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
