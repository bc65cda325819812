//! What the agent registers about its own node besides its address: `node_meta` (from the
//! files and `-node-meta key:value`), checked by Consul's rules, and the tagged addresses
//! Consul fills in (`lan`, `wan`, and their `_ipv4`/`_ipv6` forms).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use super::Config;
use crate::{Error, Result};

/// Consul's limits on node metadata.
const MAX_PAIRS: usize = 64;
const MAX_KEY_LEN: usize = 128;
const MAX_VALUE_LEN: usize = 512;
/// Keys Consul keeps for itself.
const RESERVED_PREFIX: &str = "consul-";
/// The node-meta key Consul adds to every node: the agent's network segment.
const SEGMENT_KEY: &str = "consul-network-segment";

/// `-node-meta key:value` (a pair without `:` is a key with an empty value, as Consul's).
pub(super) fn parse_flag_pair(raw: &str) -> (String, String) {
    match raw.split_once(':') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (raw.to_string(), String::new()),
    }
}

/// A `node_meta` object from a config file: string values only.
pub(super) fn parse_file_meta(v: &Value) -> Option<BTreeMap<String, String>> {
    v.as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Consul's rules for node metadata: at most 64 pairs, keys of `[A-Za-z0-9_-]` up to 128
/// characters and not starting with `consul-`, values up to 512 characters.
pub(super) fn validate_meta(meta: &BTreeMap<String, String>) -> Result<()> {
    if meta.len() > MAX_PAIRS {
        return Err(Error::Config(format!(
            "node_meta: at most {MAX_PAIRS} key/value pairs are allowed, got {}",
            meta.len()
        )));
    }
    for (k, v) in meta {
        let ok_chars = k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if k.is_empty() || !ok_chars {
            return Err(Error::Config(format!(
                "node_meta: key {k:?} is invalid: keys can only contain alphanumeric, - or _ \
                 characters"
            )));
        }
        if k.len() > MAX_KEY_LEN {
            return Err(Error::Config(format!(
                "node_meta: key {k:?} is longer than {MAX_KEY_LEN} characters"
            )));
        }
        if k.starts_with(RESERVED_PREFIX) {
            return Err(Error::Config(format!(
                "node_meta: key {k:?} is reserved: the prefix {RESERVED_PREFIX:?} is Consul's"
            )));
        }
        if v.len() > MAX_VALUE_LEN {
            return Err(Error::Config(format!(
                "node_meta: the value of {k:?} is longer than {MAX_VALUE_LEN} characters"
            )));
        }
    }
    Ok(())
}

impl Config {
    /// The node's metadata as the catalog shows it: `node_meta` plus the network segment
    /// (always empty: Muster has one segment), as Consul's agent registers it.
    pub fn node_meta_registered(&self) -> BTreeMap<String, String> {
        let mut m = self.node_meta.clone();
        m.insert(SEGMENT_KEY.into(), String::new());
        m
    }

    /// The node's tagged addresses, as Consul's agent fills them: `lan` is the advertised
    /// address and `wan` the WAN one (the same unless `advertise_addr_wan` is set), each also
    /// under `lan_ipv4`/`wan_ipv4` or `lan_ipv6`/`wan_ipv6`.
    pub fn node_tagged_addresses(&self) -> BTreeMap<String, String> {
        let lan = self.advertise_ip();
        let wan = self.advertise_addr_wan.unwrap_or(lan);
        let mut t = BTreeMap::new();
        for (name, ip) in [("lan", lan), ("wan", wan)] {
            t.insert(name.to_string(), ip.to_string());
            let family = match ip {
                IpAddr::V4(_) => "ipv4",
                IpAddr::V6(_) => "ipv6",
            };
            t.insert(format!("{name}_{family}"), ip.to_string());
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_follows_consuls_rules() {
        let ok: BTreeMap<String, String> = [("rack".to_string(), "r1".to_string())].into();
        assert!(validate_meta(&ok).is_ok());
        for bad in ["consul-x", "has space", "", &"k".repeat(129)] {
            let m: BTreeMap<String, String> = [(bad.to_string(), "v".to_string())].into();
            assert!(validate_meta(&m).is_err(), "{bad:?} must be refused");
        }
        let long: BTreeMap<String, String> = [("k".to_string(), "v".repeat(513))].into();
        assert!(validate_meta(&long).is_err());
        assert_eq!(parse_flag_pair("rack:r1"), ("rack".into(), "r1".into()));
        assert_eq!(parse_flag_pair("a:b:c"), ("a".into(), "b:c".into()));
        assert_eq!(parse_flag_pair("flag"), ("flag".into(), String::new()));
    }

    #[test]
    fn tagged_addresses_as_consul_fills_them() {
        let c = Config {
            advertise_addr: Some(IpAddr::from([10, 0, 0, 5])),
            ..Config::default()
        };
        let t = c.node_tagged_addresses();
        assert_eq!(t["lan"], "10.0.0.5");
        assert_eq!(t["lan_ipv4"], "10.0.0.5");
        assert_eq!(t["wan"], "10.0.0.5");
        assert_eq!(t["wan_ipv4"], "10.0.0.5");
        let c = Config {
            advertise_addr_wan: Some("2001:db8::1".parse().expect("ip")),
            ..c
        };
        let t = c.node_tagged_addresses();
        assert_eq!(t["wan"], "2001:db8::1");
        assert_eq!(t["wan_ipv6"], "2001:db8::1");
        assert!(!t.contains_key("wan_ipv4"));
        assert_eq!(c.node_meta_registered()[SEGMENT_KEY], "");
    }
}
