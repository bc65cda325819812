use redb::TableDefinition;

/// State-machine metadata: `last_applied` and `membership`, written in the same transaction
/// as the data they describe.
pub(crate) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// KV entries by key (postcard `KvEntry`).
pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Catalog nodes by name.
pub(crate) const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// Services by `node \0 service_id`, so a node's services are one range.
pub(crate) const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("services");
/// Checks by `node \0 check_id`.
pub(crate) const CHECKS: TableDefinition<&str, &[u8]> = TableDefinition::new("checks");
/// Per-table index: the Raft index of the last change (including deletes) to each table.
pub(crate) const INDEXES: TableDefinition<&str, u64> = TableDefinition::new("indexes");

/// The tables a snapshot carries, all keyed by string with byte values.
pub(crate) const DATA_TABLES: [TableDefinition<&str, &[u8]>; 4] = [KV, NODES, SERVICES, CHECKS];

pub(crate) const LAST_APPLIED: &str = "last_applied";
pub(crate) const MEMBERSHIP: &str = "membership";

pub(crate) const IDX_KV: &str = "kv";
pub(crate) const IDX_NODES: &str = "nodes";
pub(crate) const IDX_SERVICES: &str = "services";
pub(crate) const IDX_CHECKS: &str = "checks";

/// Key of a row owned by a node: `node \0 id`.
pub(crate) fn node_key(node: &str, id: &str) -> String {
    format!("{node}\0{id}")
}

/// The key range covering every row owned by `node`.
pub(crate) fn node_range(node: &str) -> (String, String) {
    (format!("{node}\0"), format!("{node}\u{1}"))
}
