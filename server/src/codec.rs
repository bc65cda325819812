//! The one binary encoding of Muster's internal values: Raft log entries and votes, the state
//! machine's rows and snapshots. postcard is compact and fast; all our wire and disk types
//! derive plain serde without attributes it cannot handle.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value that does not encode, or bytes that do not decode into the type asked for.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CodecError(#[from] postcard::Error);

/// Encodes an internal value.
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_stdvec(v)?)
}

/// [`encode`], appending to `buf` (given back): a caller encoding many rows reuses one
/// buffer instead of growing a new `Vec` for each.
pub(crate) fn encode_into<T: Serialize>(v: &T, buf: Vec<u8>) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_extend(v, buf)?)
}

/// Decodes what [`encode`] wrote into a value that borrows its strings and bytes from `b`.
pub(crate) fn decode_borrowed<'a, T: serde::Deserialize<'a>>(b: &'a [u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(b)?)
}

/// Decodes what [`encode`] wrote.
pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(b)?)
}
