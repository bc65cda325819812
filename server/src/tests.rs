//! The redb log store and state machine against openraft's storage test suite.

use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use crate::raft::log_store::LogStore;
use crate::raft::state_machine::StateMachine;
use crate::raft::types::{StorageError, TypeConfig};

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().map_err(crate::raft::types::sto_err)?;
        let open = |name: &str| {
            redb::Database::create(dir.path().join(name))
                .map(std::sync::Arc::new)
                .map_err(crate::raft::types::sto_err)
        };
        let log = LogStore::new(open("raft.redb")?)?;
        let sm = StateMachine::new(open("state.redb")?, dir.path().join("snapshot.bin"))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn redb_stores_pass_openraft_suite() -> Result<(), StorageError> {
    Suite::test_all(RedbBuilder)
}
