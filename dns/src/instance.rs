//! [`Instance`]: a healthy service instance as DNS answers with it, built once per catalog
//! read and kept in the read cache; and the weighted pick among instances.

use std::net::IpAddr;

use hickory_proto::rr::Name;
use muster_server::model::{HealthStatus, ServiceHealth};

use crate::name::{encode_addr, Names};

/// A healthy service instance, as DNS answers with it.
pub(crate) struct Instance {
    pub(crate) ip: IpAddr,
    pub(crate) port: u16,
    pub(crate) weight: u16,
    /// The SRV target in each served domain.
    pub(crate) targets: Vec<Name>,
    /// Lower case, for case-insensitive tag lookups.
    pub(crate) tags: Vec<String>,
}

impl Instance {
    /// The instances DNS answers with: those with no check worse than warning (than passing
    /// with `only_passing`), and with an address.
    pub(crate) fn healthy(all: Vec<ServiceHealth>, only_passing: bool, names: &Names) -> Vec<Self> {
        let worst = if only_passing {
            HealthStatus::Passing
        } else {
            HealthStatus::Warning
        };
        all.into_iter()
            .filter(|h| h.checks.iter().all(|c| c.status <= worst))
            .filter_map(|h| Instance::new(h, names))
            .collect()
    }

    /// An instance as DNS answers with it, whatever its health; `None` without an address.
    pub(crate) fn new(h: ServiceHealth, names: &Names) -> Option<Self> {
        let addr = if h.service.address.is_empty() {
            &h.node.address
        } else {
            &h.service.address
        };
        let ip = addr.parse::<IpAddr>().ok()?;
        let warning = h.checks.iter().any(|c| c.status == HealthStatus::Warning);
        let weight = if warning {
            h.service.weight_warning
        } else {
            h.service.weight_passing
        };
        let targets = (0..names.count())
            .map(|d| {
                if h.service.address.is_empty() {
                    names.target(&h.node.name, "node", d)
                } else {
                    names.target(&encode_addr(ip), "addr", d)
                }
            })
            .collect::<Option<Vec<Name>>>()?;
        Some(Instance {
            ip,
            port: h.service.port,
            weight: weight.min(u16::MAX as u32) as u16,
            targets,
            tags: h
                .service
                .tags
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
        })
    }
}

/// One instance, with a chance proportional to its weight (uniform when all weigh 0).
pub(crate) fn weighted_pick<'a>(from: &[&'a Instance]) -> &'a Instance {
    let total: u32 = from.iter().map(|i| u32::from(i.weight)).sum();
    if total == 0 {
        return from[rand::random_range(0..from.len())];
    }
    let mut x = rand::random_range(0..total);
    for i in from {
        if x < u32::from(i.weight) {
            return i;
        }
        x -= u32::from(i.weight);
    }
    from[from.len() - 1]
}
