//! [`DnsMetrics`]: queries by type and response code, and their latency, as `prometheus`
//! collectors the agent registers in its registry. Names follow Consul's
//! (`dns.domain_query`, `dns.ptr_query`) without the `consul` prefix, which the registry
//! adds. Each label set is resolved once, on its first query (so a scrape lists only the
//! types and codes seen): recording a query is then an index into an array, an atomic load,
//! two atomic adds and a histogram observation, with no lock and no allocation.

use std::sync::OnceLock;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};

/// Query types counted under their own name; the rest count as `other`.
const TYPES: [(RecordType, &str); 10] = [
    (RecordType::A, "A"),
    (RecordType::AAAA, "AAAA"),
    (RecordType::SRV, "SRV"),
    (RecordType::PTR, "PTR"),
    (RecordType::TXT, "TXT"),
    (RecordType::ANY, "ANY"),
    (RecordType::SOA, "SOA"),
    (RecordType::NS, "NS"),
    (RecordType::CNAME, "CNAME"),
    (RecordType::MX, "MX"),
];
/// Response codes counted under their own name; the rest count as `other`.
const CODES: [(ResponseCode, &str); 7] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::FormErr, "FORMERR"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::NotImp, "NOTIMP"),
    (ResponseCode::Refused, "REFUSED"),
    (ResponseCode::BADVERS, "BADVERS"),
];
const N_TYPES: usize = TYPES.len() + 1;
const N_CODES: usize = CODES.len() + 1;

/// Seconds, from 50 µs (a cached answer) to 5 s (a slow recursor).
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// What the DNS server counts.
pub struct DnsMetrics {
    queries: IntCounterVec,
    /// `queries` resolved per (type, code), in `TYPES` then `other` order.
    by_type_code: Vec<OnceLock<IntCounter>>,
    /// Latency of every query but reverse lookups (Consul's `dns.domain_query`).
    domain_query: Histogram,
    /// Latency of PTR queries (Consul's `dns.ptr_query`).
    ptr_query: Histogram,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        let queries = IntCounterVec::new(
            Opts::new(
                "dns_queries_total",
                "DNS queries answered, by query type and response code",
            ),
            &["type", "rcode"],
        )
        .expect("valid counter");
        let by_type_code = (0..N_TYPES * N_CODES).map(|_| OnceLock::new()).collect();
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()))
                .expect("valid histogram")
        };
        DnsMetrics {
            queries,
            by_type_code,
            domain_query: histogram("dns_domain_query", "Seconds to answer a DNS query"),
            ptr_query: histogram("dns_ptr_query", "Seconds to answer a reverse (PTR) query"),
        }
    }
}

impl DnsMetrics {
    /// Every collector, for the agent's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.queries.clone()),
            Box::new(self.domain_query.clone()),
            Box::new(self.ptr_query.clone()),
        ]
    }

    /// Counts one answered query (`qtype` is `None` when the request held no question).
    pub(crate) fn observe(&self, qtype: Option<RecordType>, code: ResponseCode, took: Duration) {
        let t = qtype
            .and_then(|q| TYPES.iter().position(|(t, _)| *t == q))
            .unwrap_or(N_TYPES - 1);
        let c = CODES
            .iter()
            .position(|(c, _)| *c == code)
            .unwrap_or(N_CODES - 1);
        self.by_type_code[t * N_CODES + c]
            .get_or_init(|| {
                let t = TYPES.get(t).map_or("other", |(_, n)| *n);
                let c = CODES.get(c).map_or("other", |(_, n)| *n);
                self.queries.with_label_values(&[t, c])
            })
            .inc();
        let secs = took.as_secs_f64();
        if qtype == Some(RecordType::PTR) {
            self.ptr_query.observe(secs);
        } else {
            self.domain_query.observe(secs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_type_and_code_with_others_pooled() {
        let m = DnsMetrics::default();
        let d = Duration::from_micros(100);
        m.observe(Some(RecordType::A), ResponseCode::NoError, d);
        m.observe(Some(RecordType::A), ResponseCode::NoError, d);
        m.observe(Some(RecordType::PTR), ResponseCode::NXDomain, d);
        m.observe(Some(RecordType::HINFO), ResponseCode::YXDomain, d);
        let get = |t: &str, c: &str| m.queries.with_label_values(&[t, c]).get();
        assert_eq!(get("A", "NOERROR"), 2);
        assert_eq!(get("PTR", "NXDOMAIN"), 1);
        assert_eq!(get("other", "other"), 1);
        assert_eq!(m.ptr_query.get_sample_count(), 1);
        assert_eq!(m.domain_query.get_sample_count(), 3);
    }
}
