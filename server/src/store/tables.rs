use redb::TableDefinition;

/// State-machine metadata: `last_applied` and `membership`, written in the same transaction
/// as the data they describe.
pub(crate) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// KV entries by key (postcard `KvEntry`).
pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Deleted keys and the index they were deleted at, so a read of a deleted key or of its
/// prefix still reports an index that moved. Removed when the key is written again.
pub(crate) const KV_TOMBS: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_tombstones");
/// Catalog nodes by name.
pub(crate) const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// Services by `node \0 service_id`, so a node's services are one range.
pub(crate) const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("services");
/// Index of services by `name \0 node \0 service_id` (empty values): one range per service.
pub(crate) const SERVICE_NAMES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("service_names");
/// Checks by `node \0 check_id`.
pub(crate) const CHECKS: TableDefinition<&str, &[u8]> = TableDefinition::new("checks");
/// Sessions by ID.
pub(crate) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// The keys each session holds, as `session \0 key` (empty values), so destroying a session
/// visits its own locks rather than the whole KV store. Derived from [`KV`]: rebuilt at start
/// and after a snapshot is installed, never carried in snapshots.
pub(crate) const SESSION_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("session_keys");
/// Per-table and per-service index: the Raft index of the last change (deletes included).
/// Keys: `kv`, `nodes`, `services`, `checks`, `sessions`, `svc:<name>` and `node:<name>`.
pub(crate) const INDEXES: TableDefinition<&str, u64> = TableDefinition::new("indexes");

/// Raft IDs of servers that `muster recover` retired (decimal, empty values): Raft requests
/// from them are refused, since their log and membership are from before the recovery.
pub(crate) const RETIRED: TableDefinition<&str, &[u8]> = TableDefinition::new("retired_servers");

/// The tables a snapshot carries, all keyed by string with byte values. New tables go last:
/// an older snapshot, with fewer tables, still installs.
pub(crate) const DATA_TABLES: [TableDefinition<&str, &[u8]>; 8] = [
    KV,
    KV_TOMBS,
    NODES,
    SERVICES,
    SERVICE_NAMES,
    CHECKS,
    SESSIONS,
    RETIRED,
];

pub(crate) const LAST_APPLIED: &str = "last_applied";
pub(crate) const MEMBERSHIP: &str = "membership";

pub(crate) const IDX_KV: &str = "kv";
pub(crate) const IDX_NODES: &str = "nodes";
pub(crate) const IDX_SERVICES: &str = "services";
pub(crate) const IDX_CHECKS: &str = "checks";
pub(crate) const IDX_SESSIONS: &str = "sessions";

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
