//! The tags every member carries in gossip (Consul's names) and the `serfHealth` check the
//! leader keeps for each member: shared by the agent that sets them and the reconciler that
//! reads them. Also the versions this agent reports to Consul's clients.

use std::collections::BTreeMap;

/// Gossip tag keys, as Consul's.
pub(crate) const TAG_ROLE: &str = "role";
pub(crate) const TAG_DC: &str = "dc";
pub(crate) const TAG_PORT: &str = "port";
pub(crate) const TAG_BUILD: &str = "build";
pub(crate) const TAG_EXPECT: &str = "expect";
pub(crate) const TAG_ID: &str = "id";
/// Muster's own: the server's Raft node ID, which the reconciler needs to add it as a voter.
/// Gossip carries it; the HTTP API does not show it (Consul's Raft IDs are the node IDs).
pub(crate) const TAG_RAFT_ID: &str = "raft_id";

/// The tags only Muster's own machinery reads, left out of `/v1/agent/members`.
pub(crate) const INTERNAL_TAGS: &[&str] = &[TAG_RAFT_ID];

/// The Consul version whose HTTP API Muster implements. Clients read it for feature detection
/// (`Config.Version` of `/v1/agent/self`, the `build` tag, the `consul` service's `version`),
/// so it is reported there; Muster's own version goes beside it.
pub(crate) const CONSUL_VERSION: &str = "1.10.9";

/// Consul 1.10's protocol versions, as its members report them: the Consul protocol (`vsn`),
/// Raft's, and Serf's gossip and delegate protocols (`Protocol*`, `Delegate*`).
pub(crate) const CONSUL_PROTOCOL: (u8, u8, u8) = (2, 2, 3); // current, min, max
pub(crate) const RAFT_PROTOCOL: u8 = 3;
pub(crate) const SERF_PROTOCOL: (u8, u8, u8) = (2, 1, 5); // current, min, max
pub(crate) const SERF_DELEGATE: (u8, u8, u8) = (4, 2, 5); // current, min, max

/// The check the leader keeps on every member's catalog node; anti-entropy leaves it alone.
pub(crate) const SERF_CHECK: &str = "serfHealth";

/// The `build` tag: Consul's `VERSION:REVISION`, with Muster's version as the revision part
/// (what `consul members` prints is the part before the colon).
pub(crate) fn build_tag() -> String {
    format!("{CONSUL_VERSION}:muster-{}", crate::VERSION)
}

/// The `Meta` of a server's `consul` service, as Consul's leader registers it: the versions
/// clients read to tell what the servers support.
pub(crate) fn consul_service_meta() -> BTreeMap<String, String> {
    let (cur, min, max) = SERF_PROTOCOL;
    [
        ("non_voter", "false".to_string()),
        ("read_replica", "false".to_string()),
        ("raft_version", RAFT_PROTOCOL.to_string()),
        ("serf_protocol_current", cur.to_string()),
        ("serf_protocol_min", min.to_string()),
        ("serf_protocol_max", max.to_string()),
        ("version", CONSUL_VERSION.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// What a server adds to the tags every member carries.
pub(crate) struct ServerTags {
    pub(crate) raft_id: u64,
    pub(crate) rpc_port: u16,
    pub(crate) bootstrap_expect: u32,
}

/// The tags this agent announces, as Consul's `setupSerf` sets them: role (`consul` for a
/// server, `node` for a client), datacenter, segment, node ID, protocol versions, build and
/// ACL mode; a server adds its RPC port, Raft protocol, feature flags, `expect` (with
/// `bootstrap_expect`) and its Raft ID.
pub(crate) fn member_tags(
    is_server: bool,
    datacenter: &str,
    node_id: &str,
    server: Option<ServerTags>,
) -> BTreeMap<String, String> {
    let (vsn, vsn_min, vsn_max) = CONSUL_PROTOCOL;
    let mut tags = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        tags.insert(k.to_string(), v);
    };
    set(TAG_ROLE, if is_server { "consul" } else { "node" }.into());
    set(TAG_DC, datacenter.into());
    set("segment", String::new());
    set(TAG_ID, node_id.into());
    set("vsn", vsn.to_string());
    set("vsn_min", vsn_min.to_string());
    set("vsn_max", vsn_max.to_string());
    set(TAG_BUILD, build_tag());
    // ACLs are not implemented: Consul's "disabled" mode.
    set("acls", "0".into());
    if let Some(s) = server {
        set(TAG_PORT, s.rpc_port.to_string());
        set("raft_vsn", RAFT_PROTOCOL.to_string());
        // Consul 1.10 servers announce federation states and service intentions.
        set("ft_fs", "1".into());
        set("ft_si", "1".into());
        if s.bootstrap_expect > 0 {
            set(TAG_EXPECT, s.bootstrap_expect.to_string());
        }
        set(TAG_RAFT_ID, s.raft_id.to_string());
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_tags_are_consuls() {
        let t = member_tags(
            true,
            "dc1",
            "id-1",
            Some(ServerTags {
                raft_id: 7,
                rpc_port: 8300,
                bootstrap_expect: 0,
            }),
        );
        let keys: Vec<&str> = t.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "acls", "build", "dc", "ft_fs", "ft_si", "id", "port", "raft_id", "raft_vsn",
                "role", "segment", "vsn", "vsn_max", "vsn_min"
            ]
        );
        assert_eq!(t["role"], "consul");
        assert_eq!(t["vsn"], "2");
        assert!(t["build"].starts_with("1.10.9:muster-"), "{}", t["build"]);
        let c = member_tags(false, "dc1", "id-2", None);
        assert_eq!(c["role"], "node");
        assert!(!c.contains_key("port") && !c.contains_key("raft_vsn"));
    }
}
