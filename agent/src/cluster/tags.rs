//! The tags every member carries in gossip (Consul's names) and the `serfHealth` check the
//! leader keeps for each member: shared by the agent that sets them and the reconciler that
//! reads them.

use std::collections::BTreeMap;

/// Gossip tag keys, as Consul's.
pub(crate) const TAG_ROLE: &str = "role";
pub(crate) const TAG_DC: &str = "dc";
pub(crate) const TAG_PORT: &str = "port";
pub(crate) const TAG_BUILD: &str = "build";
pub(crate) const TAG_RAFT_ID: &str = "raft_id";
pub(crate) const TAG_EXPECT: &str = "expect";
pub(crate) const TAG_ID: &str = "id";

/// The check the leader keeps on every member's catalog node; anti-entropy leaves it alone.
pub(crate) const SERF_CHECK: &str = "serfHealth";

/// What a server adds to the tags every member carries.
pub(crate) struct ServerTags {
    pub(crate) raft_id: u64,
    pub(crate) rpc_port: u16,
    pub(crate) bootstrap_expect: u32,
}

/// The tags this agent announces: its role (`consul` for a server), datacenter, build and
/// node ID, and once a server's Raft node runs, its Raft ID, RPC port and `bootstrap_expect`.
pub(crate) fn member_tags(
    is_server: bool,
    datacenter: &str,
    node_id: &str,
    server: Option<ServerTags>,
) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    tags.insert(
        TAG_ROLE.into(),
        if is_server { "consul" } else { "node" }.to_string(),
    );
    tags.insert(TAG_DC.into(), datacenter.to_string());
    tags.insert(TAG_BUILD.into(), crate::VERSION.to_string());
    tags.insert(TAG_ID.into(), node_id.to_string());
    if let Some(s) = server {
        tags.insert(TAG_RAFT_ID.into(), s.raft_id.to_string());
        tags.insert(TAG_PORT.into(), s.rpc_port.to_string());
        if s.bootstrap_expect > 0 {
            tags.insert(TAG_EXPECT.into(), s.bootstrap_expect.to_string());
        }
    }
    tags
}
