//! The store's own error: what can fail while applying commands to the tables or reading
//! them. The Raft side turns it into openraft's storage error (fatal to the node), the read
//! handle into [`crate::Error::Storage`].

use crate::codec::CodecError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// A row does not decode, or a value does not encode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// One batch's apply code borrowed a table it already holds, as redb's `open_table` on a
    /// table that is open.
    #[error("table {0} is already open in this batch")]
    TableOpen(&'static str),
    /// As [`StoreError::TableOpen`], for the index table.
    #[error("the index table is already open in this batch")]
    IndexesOpen,
    /// A restored snapshot names a table this version does not have.
    #[error("the snapshot has a table this version does not know: {0:?}")]
    Unknown(String),
}

pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<StoreError> for crate::Error {
    fn from(e: StoreError) -> Self {
        crate::Error::Storage(e.to_string())
    }
}
