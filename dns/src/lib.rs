//! Muster's DNS interface: a hickory `RequestHandler` answering `.consul` names from the catalog
//! in-process, as Consul does:
//! - `<node>.node[.<dc>].<domain>`: A/AAAA of the node (TXT from its meta);
//! - `[<tag>.]<service>.service[.<dc>].<domain>`: A/AAAA of each healthy instance, SRV when
//!   asked, with the target's address in the additional section;
//! - `_<service>._<tag>[.service][.<dc>].<domain>` (RFC 2782; `_tcp`/`_udp` mean any tag);
//! - `<hex>.addr[.<dc>].<domain>`: the address encoded in the name (SRV targets of services
//!   with their own address);
//! - `<query>.query[.<dc>].<domain>`: the instances a prepared query selects, A/AAAA or SRV.
//!
//! Every name also answers under `alt_domain` when one is set, with SRV targets in the domain
//! that was asked. Instances with any critical check (node checks such as `serfHealth` and
//! maintenance included) are left out, and answers are shuffled on every query. Reads are
//! stale reads (`allow_stale`, bounded by `max_stale`), so DNS keeps answering while Raft
//! elects a leader; a client agent keeps the answers it got for `max_stale` and falls back on
//! them while no server answers. No healthy instance or unknown name: NXDOMAIN; a name with no
//! record of the asked type: NOERROR, empty; both with the SOA (minimum TTL 0) in the
//! authority section. A catalog that cannot be read: SERVFAIL.

mod acl;
mod answer;
mod config;
#[doc(hidden)]
pub mod fuzz;
mod handler;
mod instance;
mod metrics;
mod name;
mod prepared;
mod read;
mod recursor;
mod tcp;

pub use config::DnsConfig;
pub use handler::{serve, DnsHandler};
pub use metrics::DnsMetrics;
