//! [`AutopilotConfig`]: the leader's rules for cleaning up dead servers and promoting new
//! ones, replicated so that every server (and the next leader) applies the same.

use serde::{Deserialize, Serialize};

/// Consul's autopilot configuration, with its create and modify index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutopilotConfig {
    /// Remove failed (and left) servers from the Raft configuration.
    pub cleanup_dead_servers: bool,
    /// A server not heard from for longer than this is unhealthy (milliseconds).
    pub last_contact_threshold_ms: u64,
    /// A server more than this many entries behind the leader is unhealthy.
    pub max_trailing_logs: u64,
    /// Dead-server cleanup never leaves fewer voters than this.
    pub min_quorum: u64,
    /// How long a non-voter must be healthy before it is promoted (milliseconds).
    pub server_stabilization_time_ms: u64,
    /// Enterprise settings Muster keeps, as Consul OSS keeps them, without acting on them.
    pub redundancy_zone_tag: String,
    pub disable_upgrade_migration: bool,
    pub upgrade_version_tag: String,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Default for AutopilotConfig {
    /// Consul's defaults.
    fn default() -> Self {
        AutopilotConfig {
            cleanup_dead_servers: true,
            last_contact_threshold_ms: 200,
            max_trailing_logs: 250,
            min_quorum: 0,
            server_stabilization_time_ms: 10_000,
            redundancy_zone_tag: String::new(),
            disable_upgrade_migration: false,
            upgrade_version_tag: String::new(),
            create_index: 0,
            modify_index: 0,
        }
    }
}
