//! [`RestoreState`]: a whole state restored from a snapshot archive, as one Raft entry
//! ([`crate::Command::SnapshotRestore`], small restores of older versions), or some of its
//! rows, as one staged chunk of a larger restore ([`crate::Command::SnapshotRestoreChunk`]).

use serde::{Deserialize, Serialize};

/// One table's rows: key and encoded value.
pub type RestoreRows = Vec<(String, Vec<u8>)>;

/// Every replicated table of a snapshot, by its name in `state.redb`, with the per-table
/// indexes it recorded. Applying it replaces the tables it names and empties the others (the
/// cluster's own retired-server list excepted); every index becomes the restore's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreState {
    pub tables: Vec<(String, RestoreRows)>,
    pub indexes: Vec<(String, u64)>,
}
