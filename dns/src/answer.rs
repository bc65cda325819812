//! [`Answer`]: the records of a reply before it is encoded. Builds them from what the catalog
//! read returned (A/AAAA, TXT, SRV with their targets' addresses, PTR, the SOA of negative
//! answers), and cuts them to what a client can take.

use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use muster_server::model::Node;
use rand::seq::SliceRandom;

use crate::instance::{weighted_pick, Instance};
use crate::name::{Domain, Names};
use crate::DnsConfig;

/// What was asked: the name as it came, the type, and the served domain it is in.
pub(crate) struct Question<'a> {
    pub(crate) qname: &'a Name,
    pub(crate) qtype: RecordType,
    /// Index of the domain in [`Names`].
    pub(crate) d: usize,
}

/// The answer, before it is encoded.
pub(crate) struct Answer {
    pub(crate) code: ResponseCode,
    pub(crate) answers: Vec<Record>,
    pub(crate) additionals: Vec<Record>,
    /// Whether to put the SOA in the authority section (negative answers).
    pub(crate) soa: bool,
}

impl Answer {
    pub(crate) fn empty(code: ResponseCode, soa: bool) -> Self {
        Answer {
            code,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa,
        }
    }

    fn nxdomain() -> Self {
        Answer::empty(ResponseCode::NXDomain, true)
    }

    fn records(answers: Vec<Record>) -> Self {
        Answer {
            answers,
            ..Answer::empty(ResponseCode::NoError, false)
        }
    }

    /// The domain itself: its SOA, when asked for.
    pub(crate) fn apex(domain: &Domain, qtype: RecordType) -> Self {
        let mut answer = Answer::records(Vec::new());
        if matches!(qtype, RecordType::SOA | RecordType::ANY) {
            answer.answers.push(soa(domain));
        }
        answer
    }

    /// The address a `.addr.` name encodes.
    pub(crate) fn addr(q: &Question<'_>, ttl: u32, ip: IpAddr) -> Self {
        Answer::records(addr_records(q.qname, ttl, ip, q.qtype))
    }

    /// A reverse lookup: the name of every node at `ip`.
    pub(crate) fn ptr(
        q: &Question<'_>,
        nodes: &[Node],
        ip: IpAddr,
        names: &Names,
        ttl: u32,
    ) -> Self {
        let matching: Vec<&Node> = nodes
            .iter()
            .filter(|n| n.address.parse::<IpAddr>().ok() == Some(ip))
            .collect();
        if matching.is_empty() {
            return Answer::nxdomain();
        }
        let mut answer = Answer::records(Vec::new());
        if matches!(q.qtype, RecordType::PTR | RecordType::ANY) {
            for n in matching {
                if let Some(t) = names.target(&n.name, "node", 0) {
                    let rdata = RData::PTR(PTR(t));
                    answer
                        .answers
                        .push(Record::from_rdata(q.qname.clone(), ttl, rdata));
                }
            }
        }
        answer
    }

    /// A node: its address, and its meta as TXT records.
    pub(crate) fn node(q: &Question<'_>, node: Option<&Node>, ttl: u32) -> Self {
        let Some((n, ip)) = node.and_then(|n| Some((n, n.address.parse::<IpAddr>().ok()?))) else {
            return Answer::nxdomain();
        };
        let mut answer = Answer::records(addr_records(q.qname, ttl, ip, q.qtype));
        if matches!(q.qtype, RecordType::TXT | RecordType::ANY) {
            for (k, v) in &n.meta {
                let txt = RData::TXT(TXT::new(vec![format!("{k}={v}")]));
                answer
                    .answers
                    .push(Record::from_rdata(q.qname.clone(), ttl, txt));
            }
        }
        answer
    }

    /// A service: SRV records (targets' addresses in the additional section) when asked for
    /// SRV, else the addresses of the instances, shuffled or picked by weight.
    pub(crate) fn service(
        q: &Question<'_>,
        name: &str,
        tag: Option<&str>,
        all: &[Instance],
        config: &DnsConfig,
    ) -> Self {
        let picked: Vec<&Instance> = all
            .iter()
            .filter(|i| tag.is_none_or(|t| i.tags.iter().any(|x| x == t)))
            .collect();
        Answer::instances(q, picked, config.ttl_of(name), config, false)
    }

    /// Instances, as [`Answer::service`] answers with them; with `keep_order`, in the order
    /// given (a prepared query's, already shuffled or sorted by distance) rather than
    /// shuffled or picked by weight. No instance: NXDOMAIN.
    pub(crate) fn instances(
        q: &Question<'_>,
        mut picked: Vec<&Instance>,
        ttl: u32,
        config: &DnsConfig,
        keep_order: bool,
    ) -> Self {
        if picked.is_empty() {
            return Answer::nxdomain();
        }
        let mut answer = Answer::records(Vec::new());
        if q.qtype == RecordType::SRV {
            if !keep_order {
                picked.shuffle(&mut rand::rng());
            }
            for inst in picked {
                let target = &inst.targets[q.d.min(inst.targets.len() - 1)];
                let srv = SRV::new(1, inst.weight, inst.port, target.clone());
                answer
                    .answers
                    .push(Record::from_rdata(q.qname.clone(), ttl, RData::SRV(srv)));
                let t = if inst.ip.is_ipv4() {
                    RecordType::A
                } else {
                    RecordType::AAAA
                };
                answer
                    .additionals
                    .extend(addr_records(target, ttl, inst.ip, t));
            }
            return answer;
        }
        // Only instances with an address of the asked family can answer.
        picked.retain(|i| match q.qtype {
            RecordType::A => i.ip.is_ipv4(),
            RecordType::AAAA => i.ip.is_ipv6(),
            _ => true,
        });
        if !keep_order {
            if config.weighted_single_answer && !picked.is_empty() {
                picked = vec![weighted_pick(&picked)];
            } else {
                picked.shuffle(&mut rand::rng());
            }
        }
        for inst in picked {
            answer
                .answers
                .extend(addr_records(q.qname, ttl, inst.ip, q.qtype));
        }
        if config.a_record_limit > 0 {
            answer.truncate(config.a_record_limit);
        }
        answer
    }

    /// Keeps the first `n` answers, and the additional records of the SRV targets kept.
    pub(crate) fn truncate(&mut self, n: usize) {
        if self.answers.len() <= n {
            return;
        }
        self.answers.truncate(n);
        let targets: Vec<&Name> = self
            .answers
            .iter()
            .filter_map(|r| match r.data() {
                RData::SRV(s) => Some(s.target()),
                _ => None,
            })
            .collect();
        self.additionals.retain(|r| targets.contains(&r.name()));
    }

    /// Drops answers (already shuffled) until the reply fits `max` bytes; true if any was
    /// dropped. SRV targets' addresses go with their SRV record.
    pub(crate) fn fit_udp(&mut self, query: hickory_proto::op::Query, max: usize) -> bool {
        let size = |a: &Answer| {
            let mut m = hickory_proto::op::Message::new();
            m.add_query(query.clone());
            m.add_answers(a.answers.iter().cloned());
            m.add_additionals(a.additionals.iter().cloned());
            // Room for the SOA, an OPT record, and how the server encodes names (a few bytes
            // more).
            m.to_vec()
                .map_or(usize::MAX, |v| v.len() + if a.soa { 100 } else { 11 } + 32)
        };
        let mut dropped = false;
        while !self.answers.is_empty() && size(self) > max {
            self.truncate(self.answers.len() - 1);
            dropped = true;
        }
        dropped
    }
}

/// The SOA of a served domain, for the apex and the authority section of negative answers.
pub(crate) fn soa(domain: &Domain) -> Record {
    let ns = Name::from_str(&format!("ns.{}", domain.text)).unwrap_or_else(|_| domain.name.clone());
    let mbox = Name::from_str(&format!("hostmaster.{}", domain.text))
        .unwrap_or_else(|_| domain.name.clone());
    let serial = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32);
    // Minimum TTL 0: resolvers must not cache negative answers.
    Record::from_rdata(
        domain.name.clone(),
        0,
        RData::SOA(SOA::new(ns, mbox, serial, 3600, 600, 86400, 0)),
    )
}

/// `ip` as an A or AAAA record of `name`, if that is the type asked for (or ANY).
fn addr_records(name: &Name, ttl: u32, ip: IpAddr, qtype: RecordType) -> Vec<Record> {
    match (ip, qtype) {
        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
            vec![Record::from_rdata(name.clone(), ttl, RData::A(A(v4)))]
        }
        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
            vec![Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(v6)))]
        }
        _ => Vec::new(),
    }
}
