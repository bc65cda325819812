//! Query names: which served domain a name is in and what it asks for ([`Lookup`]), and the
//! names answers point at (`<node>.node.<dc>.<domain>.`, `<hex>.addr.<dc>.<domain>.`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::rr::Name;

use crate::DnsConfig;

/// A served domain: `consul.` or the alt domain.
pub(crate) struct Domain {
    pub(crate) name: Name,
    /// Lower case, with the trailing dot.
    pub(crate) text: String,
}

impl Domain {
    fn new(text: &str) -> Domain {
        let mut text = text.to_ascii_lowercase();
        if !text.ends_with('.') {
            text.push('.');
        }
        let name = Name::from_str(&text).unwrap_or_else(|_| Name::root());
        Domain { name, text }
    }
}

/// What a name asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Node(String),
    Service {
        name: String,
        tag: Option<String>,
    },
    Addr(IpAddr),
    /// A prepared query, by ID or name (`<query>.query[.<dc>].<domain>`).
    Query(String),
    Apex,
    /// A reverse lookup of an address.
    Ptr(IpAddr),
}

/// The served domains (the primary domain, then the alt domain if any) and the datacenter:
/// what query names are parsed against and answer names are built in. A domain is named by
/// its index here.
pub(crate) struct Names {
    domains: Vec<Domain>,
    datacenter: String,
}

impl Names {
    pub(crate) fn new(config: &DnsConfig) -> Names {
        let mut domains = vec![Domain::new(&config.domain)];
        if let Some(alt) = &config.alt_domain {
            domains.push(Domain::new(alt));
        }
        Names {
            domains,
            datacenter: config.datacenter.clone(),
        }
    }

    /// The served domain `d`.
    pub(crate) fn domain(&self, d: usize) -> &Domain {
        &self.domains[d]
    }

    /// How many domains are served (1, or 2 with an alt domain).
    pub(crate) fn count(&self) -> usize {
        self.domains.len()
    }

    /// Splits `name` (lower case, with the trailing dot) into what it asks for and which of
    /// the domains it is in. `None`: not ours; `Some(Err)`: ours, but no such name.
    pub(crate) fn parse(&self, name: &str) -> Option<Result<(Lookup, usize), ()>> {
        if let Some(ip) = name.strip_suffix(".in-addr.arpa.") {
            let octets: Vec<u8> = ip.split('.').rev().filter_map(|o| o.parse().ok()).collect();
            return Some(match octets.as_slice() {
                [a, b, c, d] => Ok((Lookup::Ptr(IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d))), 0)),
                _ => Err(()),
            });
        }
        if let Some(nibbles) = name.strip_suffix(".ip6.arpa.") {
            let hex: String = nibbles.split('.').rev().collect();
            return Some(match (hex.len(), decode_addr(&hex)) {
                (32, Some(ip)) => Ok((Lookup::Ptr(ip), 0)),
                _ => Err(()),
            });
        }
        let (d, rest) = self.domains.iter().enumerate().find_map(|(i, d)| {
            if name == d.text {
                Some((i, None))
            } else {
                Some((i, Some(name.strip_suffix(&d.text)?.strip_suffix('.')?)))
            }
        })?;
        let Some(rest) = rest else {
            return Some(Ok((Lookup::Apex, d)));
        };
        self.parse_labels(rest).map(|r| r.map(|l| (l, d)))
    }

    /// What the labels before the domain ask for.
    fn parse_labels(&self, rest: &str) -> Option<Result<Lookup, ()>> {
        let mut labels: Vec<&str> = rest.split('.').collect();
        // An optional datacenter label after node/service/addr/query.
        let kinds = ["node", "service", "addr", "query"];
        if labels.len() >= 2
            && kinds.contains(&labels[labels.len() - 2])
            && !kinds.contains(&labels[labels.len() - 1])
        {
            let dc = labels.pop()?;
            if !dc.eq_ignore_ascii_case(&self.datacenter) {
                return Some(Err(()));
            }
        }
        // RFC 2782: _svc._tag[.service]
        if labels.first().is_some_and(|l| l.starts_with('_')) {
            if labels.last() == Some(&"service") {
                labels.pop();
            }
            if labels.len() == 2 {
                let name = labels[0].trim_start_matches('_').to_string();
                let tag = labels[1].trim_start_matches('_');
                let tag = (tag != "tcp" && tag != "udp").then(|| tag.to_string());
                return Some(Ok(Lookup::Service { name, tag }));
            }
            return Some(Err(()));
        }
        let kind = labels.pop()?;
        Some(match (kind, labels.as_slice()) {
            ("node", [node]) => Ok(Lookup::Node(node.to_string())),
            ("node", parts) if !parts.is_empty() => Ok(Lookup::Node(parts.join("."))),
            ("service", [svc]) => Ok(Lookup::Service {
                name: svc.to_string(),
                tag: None,
            }),
            ("service", [tag, svc]) => Ok(Lookup::Service {
                name: svc.to_string(),
                tag: Some(tag.to_string()),
            }),
            ("addr", [hex]) => decode_addr(hex).map(Lookup::Addr).ok_or(()),
            // As Consul, a query name may hold dots.
            ("query", parts) if !parts.is_empty() => Ok(Lookup::Query(parts.join("."))),
            _ => Err(()),
        })
    }

    /// `<name>.<what>.<dc>.<domain>.`
    pub(crate) fn target(&self, name: &str, what: &str, d: usize) -> Option<Name> {
        let text = format!("{name}.{what}.{}.{}", self.datacenter, self.domains[d].text);
        Name::from_str(&text).ok()
    }
}

/// `0a000001` ↔ 10.0.0.1, 32 hex digits for IPv6, as Consul's `.addr.` names.
pub(crate) fn encode_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
        IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
    }
}

fn decode_addr(hex: &str) -> Option<IpAddr> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect();
    match bytes?.as_slice() {
        [a, b, c, d] => Some(IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d))),
        b if b.len() == 16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names::new(&DnsConfig {
            alt_domain: Some("Muster".into()),
            ..DnsConfig::default()
        })
    }

    #[test]
    fn parses_consul_names() {
        let h = names();
        let p = |n: &str| h.parse(n).map(|r| r.map(|(l, _)| l));
        assert_eq!(
            h.parse("web01.node.dc1.muster."),
            Some(Ok((Lookup::Node("web01".into()), 1))),
            "the alt domain answers the same names"
        );
        assert_eq!(h.parse("muster."), Some(Ok((Lookup::Apex, 1))));
        assert_eq!(
            p("web01.node.consul."),
            Some(Ok(Lookup::Node("web01".into())))
        );
        assert_eq!(
            p("web01.node.dc1.consul."),
            Some(Ok(Lookup::Node("web01".into())))
        );
        assert_eq!(p("web01.node.dc2.consul."), Some(Err(())));
        assert_eq!(
            p("redis.service.consul."),
            Some(Ok(Lookup::Service {
                name: "redis".into(),
                tag: None
            }))
        );
        assert_eq!(
            p("master.redis.service.dc1.consul."),
            Some(Ok(Lookup::Service {
                name: "redis".into(),
                tag: Some("master".into())
            }))
        );
        assert_eq!(
            p("_redis._tcp.service.consul."),
            Some(Ok(Lookup::Service {
                name: "redis".into(),
                tag: None
            }))
        );
        assert_eq!(
            p("_redis._master.consul."),
            Some(Ok(Lookup::Service {
                name: "redis".into(),
                tag: Some("master".into())
            }))
        );
        assert_eq!(
            p("0a000001.addr.dc1.consul."),
            Some(Ok(Lookup::Addr("10.0.0.1".parse().expect("ip"))))
        );
        assert_eq!(p("consul."), Some(Ok(Lookup::Apex)));
        assert_eq!(
            p("web.query.consul."),
            Some(Ok(Lookup::Query("web".into())))
        );
        assert_eq!(
            p("geo.db.query.dc1.consul."),
            Some(Ok(Lookup::Query("geo.db".into())))
        );
        assert_eq!(p("web.query.dc2.consul."), Some(Err(())));
        assert_eq!(p("query.consul."), Some(Err(())));
        assert_eq!(p("example.com."), None);
        assert_eq!(
            p("4.3.2.10.in-addr.arpa."),
            Some(Ok(Lookup::Ptr("10.2.3.4".parse().expect("ip"))))
        );
        assert_eq!(p("x.y.z.service.consul."), Some(Err(())));
        assert_eq!(
            decode_addr(&encode_addr("fe80::1".parse().expect("ip"))),
            Some("fe80::1".parse().expect("ip"))
        );
    }
}
