//! `state.bin` in Muster's own format: every replicated table's rows and the table indexes,
//! written straight from a consistent copy of the state machine's tables.
//!
//! Layout: [`MAGIC`], the format version (u32, little-endian), then records, each a kind
//! byte, a payload length (u32, little-endian) and the payload (postcard): a table's name
//! and row count, then its rows as `(key, value)`; the indexes; and an end record with the
//! totals, so a file cut short on a record boundary is still told from a whole one.

use std::io::{self, Write};

use super::SnapshotError;
use crate::codec::{decode, encode};
use crate::model::RestoreState;
use crate::store::mem::Tables;
use crate::store::tables::DATA_TABLES;

pub(crate) const MAGIC: &[u8; 12] = b"MUSTER-STATE";
/// The format this version writes and the only one it reads.
pub(crate) const VERSION: u32 = 1;

const TABLE: u8 = 1;
const ROW: u8 = 2;
const INDEXES: u8 = 3;
const END: u8 = 4;

fn record(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::other("a snapshot record over 4 GiB"))?;
    w.write_all(&[kind])?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(payload)
}

fn enc<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    encode(v).map_err(io::Error::other)
}

/// Writes `t` as `state.bin` to `w`.
pub(crate) fn write(t: &Tables, w: &mut impl Write) -> io::Result<()> {
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    let mut rows_total = 0u64;
    for def in DATA_TABLES {
        let rows = t.table(def);
        record(w, TABLE, &enc(&(def.name, rows.len() as u64))?)?;
        for (k, v) in rows.iter() {
            record(w, ROW, &enc(&(&**k, &**v))?)?;
        }
        rows_total += rows.len() as u64;
    }
    let idx: Vec<(&str, u64)> = t.indexes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    record(w, INDEXES, &enc(&idx)?)?;
    record(w, END, &enc(&(DATA_TABLES.len() as u64, rows_total))?)
}

/// Whether `b` starts as Muster's `state.bin` (rather than Consul's).
pub(crate) fn is_muster(b: &[u8]) -> bool {
    b.starts_with(MAGIC)
}

/// One table's name, rows and their encoded size, as `inspect` shows them.
pub(crate) type Counts = Vec<(String, u64, u64)>;

/// Reads a whole Muster `state.bin`: the state to restore and the per-table counts.
pub(crate) fn read(b: &[u8]) -> Result<(RestoreState, Counts), SnapshotError> {
    let bad = |why: &str| SnapshotError::Corrupt(format!("state.bin: {why}"));
    let rest = b
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("not a Muster state"))?;
    let (v, mut rest) = rest.split_at_checked(4).ok_or_else(|| bad("cut short"))?;
    let version = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let mut state = RestoreState::default();
    let mut counts: Counts = Vec::new();
    let mut rows_seen = 0u64;
    loop {
        let (head, after) = rest.split_at_checked(5).ok_or_else(|| bad("cut short"))?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let (payload, after) = after
            .split_at_checked(len)
            .ok_or_else(|| bad("cut short"))?;
        rest = after;
        let undecodable =
            |e: crate::codec::CodecError| bad(&format!("a record does not decode: {e}"));
        match head[0] {
            TABLE => {
                let (name, _rows): (String, u64) = decode(payload).map_err(undecodable)?;
                counts.push((name.clone(), 0, 0));
                state.tables.push((name, Vec::new()));
            }
            ROW => {
                let row: (String, Vec<u8>) = decode(payload).map_err(undecodable)?;
                let (Some(t), Some(c)) = (state.tables.last_mut(), counts.last_mut()) else {
                    return Err(bad("a row before any table"));
                };
                c.1 += 1;
                c.2 += payload.len() as u64 + 5;
                t.1.push(row);
                rows_seen += 1;
            }
            INDEXES => state.indexes = decode(payload).map_err(undecodable)?,
            END => {
                let (tables, rows): (u64, u64) = decode(payload).map_err(undecodable)?;
                if tables != state.tables.len() as u64 || rows != rows_seen {
                    return Err(bad("its totals do not match its records"));
                }
                if !rest.is_empty() {
                    return Err(bad("data after its end"));
                }
                return Ok((state, counts));
            }
            k => return Err(bad(&format!("unknown record kind {k}"))),
        }
    }
}
