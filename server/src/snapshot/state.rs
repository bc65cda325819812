//! `state.bin` in Muster's own format: every replicated table's rows and the table indexes,
//! written straight from a consistent copy of the state machine's tables and read as a
//! stream, a row at a time.
//!
//! Layout: [`MAGIC`], the format version (u32, little-endian), then records, each a kind
//! byte, a payload length (u32, little-endian) and the payload (postcard): a table's name
//! and row count, then its rows as `(key, value)`; the indexes; and an end record with the
//! totals, so a file cut short on a record boundary is still told from a whole one.

use std::io::{self, Read, Write};

use super::SnapshotError;
use crate::codec::{decode, decode_borrowed, encode};
use crate::store::mem::Tables;
use crate::store::tables::{archived, DATA_TABLES};

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

/// postcard's length prefix: a LEB128 varint.
fn varint(mut n: usize, out: &mut [u8; 10]) -> &[u8] {
    let mut i = 0;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out[i] = b;
            return &out[..=i];
        }
        out[i] = b | 0x80;
        i += 1;
    }
}

fn varint_len(n: usize) -> usize {
    varint(n, &mut [0; 10]).len()
}

/// A row's payload size: postcard's `(&str, &[u8])`, written by [`row`] without a copy.
fn row_len(k: &str, v: &[u8]) -> usize {
    varint_len(k.len()) + k.len() + varint_len(v.len()) + v.len()
}

fn row(w: &mut impl Write, k: &str, v: &[u8]) -> io::Result<()> {
    let len = u32::try_from(row_len(k, v))
        .map_err(|_| io::Error::other("a snapshot record over 4 GiB"))?;
    w.write_all(&[ROW])?;
    w.write_all(&len.to_le_bytes())?;
    let mut b = [0; 10];
    w.write_all(varint(k.len(), &mut b))?;
    w.write_all(k.as_bytes())?;
    w.write_all(varint(v.len(), &mut b))?;
    w.write_all(v)
}

fn tables(t: &Tables) -> impl Iterator<Item = (&'static str, &crate::store::mem::Rows)> {
    DATA_TABLES
        .into_iter()
        .filter(|d| archived(*d))
        .map(|d| (d.name, t.table(d)))
}

fn head_records(t: &Tables) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let idx: Vec<(&str, u64)> = t.indexes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let rows: u64 = tables(t).map(|(_, r)| r.len() as u64).sum();
    Ok((enc(&idx)?, enc(&(tables(t).count() as u64, rows))?))
}

/// The size of `t`'s `state.bin`, without writing it.
pub(crate) fn size(t: &Tables) -> io::Result<u64> {
    let mut n = (MAGIC.len() + 4) as u64;
    for (name, rows) in tables(t) {
        n += 5 + enc(&(name, rows.len() as u64))?.len() as u64;
        n += rows
            .iter()
            .map(|(k, v)| 5 + row_len(k, v) as u64)
            .sum::<u64>();
    }
    let (idx, end) = head_records(t)?;
    Ok(n + 10 + idx.len() as u64 + end.len() as u64)
}

/// Writes `t` as `state.bin` to `w`.
pub(crate) fn write(t: &Tables, w: &mut impl Write) -> io::Result<()> {
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    for (name, rows) in tables(t) {
        record(w, TABLE, &enc(&(name, rows.len() as u64))?)?;
        for (k, v) in rows.iter() {
            row(w, k, v)?;
        }
    }
    let (idx, end) = head_records(t)?;
    record(w, INDEXES, &idx)?;
    record(w, END, &end)
}

/// One table's name, rows and their encoded size, as `inspect` shows them.
pub(crate) type Counts = Vec<(String, u64, u64)>;

/// What a scan of `state.bin` found besides its rows.
pub(crate) struct Scanned {
    pub(crate) counts: Counts,
    pub(crate) indexes: Vec<(String, u64)>,
}

/// Reads as much as `buf` holds, fewer bytes only at the end of `r`.
/// Records up to this size are read into a buffer sized for them at once; a larger length,
/// possibly damaged, is read as far as the file goes.
const SMALL_RECORD: u64 = 64 << 10;

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a Muster `state.bin` from `r` (past its [`MAGIC`], which the caller has read),
/// handing each row to `each` as `(table, key, value)`.
pub(crate) fn scan(
    r: &mut impl Read,
    mut each: impl FnMut(&str, &str, &[u8]) -> Result<(), SnapshotError>,
) -> Result<Scanned, SnapshotError> {
    let bad = |why: &str| SnapshotError::Corrupt(format!("state.bin: {why}"));
    let io_bad = |e: io::Error| bad(&e.to_string());
    let mut v = [0; 4];
    if read_full(r, &mut v).map_err(io_bad)? < 4 {
        return Err(bad("cut short"));
    }
    let version = u32::from_le_bytes(v);
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let mut counts: Counts = Vec::new();
    let mut indexes = Vec::new();
    let mut table = String::new();
    let mut rows_seen = 0u64;
    let mut payload = Vec::new();
    loop {
        let mut head = [0; 5];
        if read_full(r, &mut head).map_err(io_bad)? < 5 {
            return Err(bad("cut short"));
        }
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as u64;
        payload.clear();
        if len <= SMALL_RECORD {
            // Most records are rows of a few hundred bytes: read them in one go.
            payload.resize(len as usize, 0);
            if read_full(r, &mut payload).map_err(io_bad)? as u64 != len {
                return Err(bad("cut short"));
            }
        } else if r.take(len).read_to_end(&mut payload).map_err(io_bad)? as u64 != len {
            // Read through `take`: a damaged length never allocates more than the file holds.
            return Err(bad("cut short"));
        }
        let undecodable =
            |e: crate::codec::CodecError| bad(&format!("a record does not decode: {e}"));
        match head[0] {
            TABLE => {
                let (name, _rows): (String, u64) = decode(&payload).map_err(undecodable)?;
                counts.push((name.clone(), 0, 0));
                table = name;
            }
            ROW => {
                let (k, v): (&str, &[u8]) = decode_borrowed(&payload).map_err(undecodable)?;
                let Some(c) = counts.last_mut() else {
                    return Err(bad("a row before any table"));
                };
                c.1 += 1;
                c.2 += payload.len() as u64 + 5;
                rows_seen += 1;
                each(&table, k, v)?;
            }
            INDEXES => indexes = decode(&payload).map_err(undecodable)?,
            END => {
                let (tables, rows): (u64, u64) = decode(&payload).map_err(undecodable)?;
                if tables != counts.len() as u64 || rows != rows_seen {
                    return Err(bad("its totals do not match its records"));
                }
                if read_full(r, &mut [0; 1]).map_err(io_bad)? != 0 {
                    return Err(bad("data after its end"));
                }
                return Ok(Scanned { counts, indexes });
            }
            k => return Err(bad(&format!("unknown record kind {k}"))),
        }
    }
}
