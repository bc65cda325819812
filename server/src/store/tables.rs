//! The state machine's tables: their slots and names in `state.redb`, the keys of their rows,
//! and the index names blocking queries read.

use redb::TableDefinition;

use super::mem::{TableId, TABLE_COUNT};

const fn table(slot: usize, name: &'static str) -> TableId {
    TableId { slot, name }
}

/// State-machine metadata: `last_applied` and `membership`, written in the same transaction
/// as the data they describe.
pub(crate) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// KV entries by key (postcard `KvEntry`).
pub(crate) const KV: TableId = table(0, "kv");
/// Deleted keys and the index they were deleted at, so a read of a deleted key or of its
/// prefix still reports an index that moved. Removed when the key is written again.
pub(crate) const KV_TOMBS: TableId = table(1, "kv_tombstones");
/// Catalog nodes by name.
pub(crate) const NODES: TableId = table(2, "nodes");
/// Services by `node \0 service_id`, so a node's services are one range.
pub(crate) const SERVICES: TableId = table(3, "services");
/// Index of services by `name \0 node \0 service_id` (empty values): one range per service.
pub(crate) const SERVICE_NAMES: TableId = table(4, "service_names");
/// Checks by `node \0 check_id`.
pub(crate) const CHECKS: TableId = table(5, "checks");
/// Sessions by ID.
pub(crate) const SESSIONS: TableId = table(6, "sessions");
/// The keys each session holds, as `session \0 key` (empty values), so destroying a session
/// visits its own locks rather than the whole KV store. Derived from [`KV`]: rebuilt at start
/// and after a snapshot is installed, never carried in snapshots.
pub(crate) const SESSION_KEYS: TableId = table(8, "session_keys");
/// Per-table and per-service index: the Raft index of the last change (deletes included).
/// Keys: `kv`, `nodes`, `services`, `checks`, `sessions`, `svc:<name>` and `node:<name>`.
pub(crate) const INDEXES: TableDefinition<&str, u64> = TableDefinition::new("indexes");

/// Raft IDs of servers that `muster recover` retired (decimal, empty values): Raft requests
/// from them are refused, since their log and membership are from before the recovery.
pub(crate) const RETIRED: TableId = table(7, "retired_servers");
/// Prepared queries by ID.
pub(crate) const PREPARED_QUERIES: TableId = table(9, "prepared_queries");
/// Network coordinates by node name (postcard `Coordinate`); a node's row goes with the node.
pub(crate) const COORDINATES: TableId = table(10, "coordinates");
/// ACL policies by ID (postcard `AclPolicy`).
pub(crate) const ACL_POLICIES: TableId = table(11, "acl_policies");
/// ACL tokens by AccessorID (postcard `AclToken`).
pub(crate) const ACL_TOKENS: TableId = table(12, "acl_tokens");
/// Index of tokens by SecretID: the AccessorID, as the row's bytes.
pub(crate) const ACL_SECRETS: TableId = table(13, "acl_token_secrets");
/// ACL roles by ID (postcard `AclRole`).
pub(crate) const ACL_ROLES: TableId = table(14, "acl_roles");
/// The ACL system's state: one row, [`ACL_META_ROW`] (postcard `AclMeta`).
pub(crate) const ACL_META: TableId = table(15, "acl_meta");
pub(crate) const ACL_META_ROW: &str = "acl";
/// ACL auth methods by name (postcard `AclAuthMethod`).
pub(crate) const ACL_AUTH_METHODS: TableId = table(16, "acl_auth_methods");
/// ACL binding rules by ID (postcard `AclBindingRule`).
pub(crate) const ACL_BINDING_RULES: TableId = table(17, "acl_binding_rules");
/// The autopilot configuration: one row, [`AUTOPILOT_ROW`] (postcard `AutopilotConfig`),
/// absent until the first leader seeds it from its config file.
pub(crate) const AUTOPILOT: TableId = table(18, "autopilot");
pub(crate) const AUTOPILOT_ROW: &str = "config";
/// Chunks of a restore under way, by `restore_id \0 seq` (20 digits, so they sort in order):
/// each a postcard `RestoreState` of some rows (`Command::SnapshotRestoreChunk`); under the
/// bare `restore_id`, the Raft term it began in (postcard u64). A data
/// table so that a checkpoint, a restart and openraft's snapshots for a follower's catch-up
/// all keep them until the commit; never part of an archive, never restored.
pub(crate) const RESTORE_STAGING: TableId = table(19, "restore_staging");

/// The tables a snapshot carries, all keyed by string with byte values. New tables go last:
/// an older snapshot, with fewer tables, still installs.
pub(crate) const DATA_TABLES: [TableId; 19] = [
    KV,
    KV_TOMBS,
    NODES,
    SERVICES,
    SERVICE_NAMES,
    CHECKS,
    SESSIONS,
    RETIRED,
    PREPARED_QUERIES,
    COORDINATES,
    ACL_POLICIES,
    ACL_TOKENS,
    ACL_SECRETS,
    ACL_ROLES,
    ACL_META,
    ACL_AUTH_METHODS,
    ACL_BINDING_RULES,
    AUTOPILOT,
    RESTORE_STAGING,
];

/// Whether a snapshot archive carries `t`: the cluster's own bookkeeping stays out.
pub(crate) fn archived(t: TableId) -> bool {
    t.slot != RESTORE_STAGING.slot
}

/// The [`RESTORE_STAGING`] key of a restore's chunk.
pub(crate) fn staging_key(id: &str, seq: u64) -> String {
    format!("{id}\0{seq:020}")
}

/// Every table, as checkpointed to `state.redb`: those a snapshot carries, then the derived
/// [`SESSION_KEYS`].
pub(crate) const ALL_TABLES: [TableId; TABLE_COUNT] = {
    let mut all = [SESSION_KEYS; TABLE_COUNT];
    let mut i = 0;
    while i < DATA_TABLES.len() {
        all[i] = DATA_TABLES[i];
        i += 1;
    }
    all
};

/// A table's definition in `state.redb`.
pub(crate) fn file_table(t: TableId) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(t.name)
}

pub(crate) const LAST_APPLIED: &str = "last_applied";
pub(crate) const MEMBERSHIP: &str = "membership";

pub(crate) const IDX_KV: &str = "kv";
pub(crate) const IDX_NODES: &str = "nodes";
pub(crate) const IDX_SERVICES: &str = "services";
pub(crate) const IDX_CHECKS: &str = "checks";
pub(crate) const IDX_SESSIONS: &str = "sessions";
pub(crate) const IDX_PREPARED: &str = "prepared_queries";
pub(crate) const IDX_COORDINATES: &str = "coordinates";
/// Every ACL table shares one index: a change to any of them can change what a token grants.
pub(crate) const IDX_ACL: &str = "acl";
pub(crate) const IDX_AUTOPILOT: &str = "autopilot";

/// Key of a row owned by a node: `node \0 id`.
pub(crate) fn node_key(node: &str, id: &str) -> String {
    format!("{node}\0{id}")
}

/// The key range covering every row owned by `node` (or every row of a service name in
/// [`SERVICE_NAMES`]).
pub(crate) fn node_range(node: &str) -> (String, String) {
    (format!("{node}\0"), format!("{node}\u{1}"))
}

/// The [`INDEXES`] key of one service name.
pub(crate) fn svc_index(name: &str) -> String {
    format!("svc:{name}")
}

/// The [`INDEXES`] key of one node (its record, services and checks).
pub(crate) fn node_index(node: &str) -> String {
    format!("node:{node}")
}
