//! Pushing the agent's metrics to the sinks Consul's `telemetry` block names: statsd
//! (`statsd_address`, UDP), statsite (`statsite_address`, TCP) and DogStatsD
//! (`dogstatsd_addr`, UDP, labels as tags, with `dogstatsd_tags`). Every [`INTERVAL`] the
//! registry is read as a scrape reads it: gauges go as gauges, counters as what they gained
//! since the last push, and latency histograms as their new samples' mean in milliseconds
//! with the sample rate that stands for their count (`|ms|@0.05` is twenty samples).
//! Names are go-metrics': the dotted names of `/v1/agent/metrics`, label values appended for
//! statsd and statsite. A sink that cannot be reached is logged, at most once a minute, and
//! tried again at the next push.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use prometheus::proto::MetricType;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::ApiState;

/// How often the sinks are sent the figures (statsd's own default flush).
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Datagrams stay under a typical MTU, as go-metrics' statsd sink keeps them.
const MAX_DATAGRAM: usize = 1432;

/// The sinks configured (Consul's `telemetry` keys), as `host:port`.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    pub statsd: Option<String>,
    pub statsite: Option<String>,
    pub dogstatsd: Option<String>,
    /// `dogstatsd_tags`: `key:value` tags added to every DogStatsD line.
    pub dogstatsd_tags: Vec<String>,
}

impl Sinks {
    pub fn any(&self) -> bool {
        self.statsd.is_some() || self.statsite.is_some() || self.dogstatsd.is_some()
    }
}

/// One value to push: its dotted name, labels, and what it is.
struct Point {
    name: String,
    labels: Vec<(String, String)>,
    kind: Kind,
}

enum Kind {
    Gauge(f64),
    /// Gained since the last push.
    Count(f64),
    /// New samples: their count and mean, in milliseconds.
    Timing(u64, f64),
}

/// What the last push saw of the cumulative figures, to send differences.
#[derive(Default)]
struct Last {
    counters: HashMap<String, f64>,
    histograms: HashMap<String, (u64, f64)>,
}

/// Reads the registry into points (the filter applied), remembering cumulative figures.
fn points(st: &ApiState, last: &mut Last) -> Vec<Point> {
    super::metrics::refresh(st);
    let m = &st.metrics;
    let mut out = Vec::new();
    // `gather` has dropped what the filter does not keep.
    for f in m.gather() {
        let name = m.dotted(f.name());
        for metric in f.get_metric() {
            let labels: Vec<(String, String)> = metric
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            let id = format!("{name}{labels:?}");
            let kind = match f.get_field_type() {
                MetricType::GAUGE => Kind::Gauge(metric.get_gauge().get_value()),
                MetricType::COUNTER => {
                    let v = metric.get_counter().get_value();
                    let before = last.counters.insert(id, v).unwrap_or(0.0);
                    if v <= before {
                        continue;
                    }
                    Kind::Count(v - before)
                }
                MetricType::HISTOGRAM => {
                    let h = metric.get_histogram();
                    let (n, sum) = (h.get_sample_count(), h.get_sample_sum());
                    let (n0, sum0) = last.histograms.insert(id, (n, sum)).unwrap_or((0, 0.0));
                    if n <= n0 {
                        continue;
                    }
                    let new = n - n0;
                    Kind::Timing(new, (sum - sum0) * 1000.0 / new as f64)
                }
                _ => continue,
            };
            out.push(Point {
                name: name.clone(),
                labels,
                kind,
            });
        }
    }
    out
}

/// A name part as statsd takes it: no `:`, `|`, `@`, `#`, `,` or white space.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ':' | '|' | '@' | '#' | ',' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect()
}

fn value_part(kind: &Kind) -> String {
    match kind {
        Kind::Gauge(v) => format!("{v}|g"),
        Kind::Count(v) => format!("{v}|c"),
        Kind::Timing(1, mean) => format!("{mean}|ms"),
        Kind::Timing(n, mean) => format!("{mean}|ms|@{}", 1.0 / *n as f64),
    }
}

/// A statsd or statsite line: label values appended to the name, as go-metrics does.
fn statsd_line(name: &str, labels: &[(String, String)], kind: &Kind) -> String {
    let mut key = clean(name);
    for (_, v) in labels {
        key.push('.');
        key.push_str(&clean(v));
    }
    format!("{key}:{}\n", value_part(kind))
}

/// A DogStatsD line: labels (and the configured tags) as tags.
fn dogstatsd_line(name: &str, labels: &[(String, String)], kind: &Kind, tags: &[String]) -> String {
    let mut line = format!("{}:{}", clean(name), value_part(kind));
    let all: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}:{}", clean(k), clean(v)))
        .chain(tags.iter().cloned())
        .collect();
    if !all.is_empty() {
        let _ = write!(line, "|#{}", all.join(","));
    }
    line.push('\n');
    line
}

/// Lines packed into datagrams of at most [`MAX_DATAGRAM`] bytes.
fn datagrams(lines: &[String]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for l in lines {
        match out.last_mut() {
            Some(d) if d.len() + l.len() <= MAX_DATAGRAM => d.extend_from_slice(l.as_bytes()),
            _ => out.push(l.as_bytes().to_vec()),
        }
    }
    out
}

/// Logs a sink's failure at most once a minute.
struct Complaints(HashMap<&'static str, Instant>);

impl Complaints {
    fn failed(&mut self, sink: &'static str, addr: &str, e: &std::io::Error) {
        let now = Instant::now();
        if self
            .0
            .get(sink)
            .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(60))
        {
            return;
        }
        self.0.insert(sink, now);
        tracing::warn!(sink, addr, error = %e, "cannot send metrics");
    }
}

async fn send_udp(addr: &str, packets: &[Vec<u8>]) -> std::io::Result<()> {
    let target = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
    let bind: std::net::SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    for p in packets {
        sock.send_to(p, target).await?;
    }
    Ok(())
}

/// Pushes the metrics to `sinks` every [`INTERVAL`] until `cancel`.
pub async fn run(st: ApiState, sinks: Sinks, cancel: CancellationToken) {
    let mut last = Last::default();
    let mut complaints = Complaints(HashMap::new());
    let mut statsite: Option<tokio::net::TcpStream> = None;
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let points = points(&st, &mut last);
        // statsd and statsite take the same lines.
        let lines: Vec<String> = if sinks.statsd.is_some() || sinks.statsite.is_some() {
            points
                .iter()
                .map(|p| statsd_line(&p.name, &p.labels, &p.kind))
                .collect()
        } else {
            Vec::new()
        };
        if let Some(addr) = &sinks.statsd {
            if let Err(e) = send_udp(addr, &datagrams(&lines)).await {
                complaints.failed("statsd", addr, &e);
            }
        }
        if let Some(addr) = &sinks.dogstatsd {
            let lines: Vec<String> = points
                .iter()
                .map(|p| dogstatsd_line(&p.name, &p.labels, &p.kind, &sinks.dogstatsd_tags))
                .collect();
            if let Err(e) = send_udp(addr, &datagrams(&lines)).await {
                complaints.failed("dogstatsd", addr, &e);
            }
        }
        if let Some(addr) = &sinks.statsite {
            let text = lines.concat();
            // One connection kept open, made again when it fails.
            let sent = async {
                if statsite.is_none() {
                    statsite = Some(tokio::net::TcpStream::connect(addr.as_str()).await?);
                }
                match &mut statsite {
                    Some(s) => s.write_all(text.as_bytes()).await,
                    None => Ok(()),
                }
            };
            if let Err(e) = sent.await {
                statsite = None;
                complaints.failed("statsite", addr, &e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_go_metrics_statsd_and_dogstatsd() {
        let labels = vec![("method".to_string(), "GET".to_string())];
        assert_eq!(
            statsd_line("consul.api.http", &labels, &Kind::Timing(4, 1.5)),
            "consul.api.http.GET:1.5|ms|@0.25\n"
        );
        assert_eq!(
            statsd_line("consul.raft.term", &[], &Kind::Gauge(3.0)),
            "consul.raft.term:3|g\n"
        );
        assert_eq!(
            dogstatsd_line(
                "consul.kv.x",
                &labels,
                &Kind::Count(2.0),
                &["env:prod".to_string()]
            ),
            "consul.kv.x:2|c|#method:GET,env:prod\n"
        );
        let many: Vec<String> = (0..300).map(|i| format!("a.b.c:{i}|g\n")).collect();
        let d = datagrams(&many);
        assert!(d.len() > 1 && d.iter().all(|p| p.len() <= MAX_DATAGRAM));
        assert_eq!(d.concat(), many.concat().into_bytes());
    }
}
