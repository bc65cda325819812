//! The snapshot archive, in Consul's shape: a gzipped tar of `meta.json` (Raft's snapshot
//! metadata, Consul's field names), `state.bin` and `SHA256SUMS` (the other two files' sums,
//! `sha256sum`'s layout). Consul's `consul snapshot save` checks exactly these, so it works
//! against Muster.
//!
//! Written as a stream: `state.bin` is encoded once to learn its size (the tar header comes
//! first) and again straight into the gzip writer, hashing as it goes; the tables are an
//! immutable copy, so both passes see the same rows.

use std::io::{self, Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use super::SnapshotError;
use crate::store::mem::Tables;

/// Consul's `meta.json` (hashicorp/raft's `SnapshotMeta`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ArchiveMeta {
    pub version: u64,
    #[serde(rename = "ID")]
    pub id: String,
    pub index: u64,
    pub term: u64,
    #[serde(default)]
    pub peers: String,
    #[serde(default)]
    pub configuration: serde_json::Value,
    #[serde(default)]
    pub configuration_index: u64,
    pub size: u64,
}

/// An archive read and checked: its metadata and `state.bin`.
pub(crate) struct Archive {
    pub(crate) meta: ArchiveMeta,
    pub(crate) state: Vec<u8>,
}

struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Passes writes on to `inner`, hashing and counting them.
struct Hashing<W> {
    inner: W,
    hash: Context,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn header(name: &str, size: u64, mtime: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(mtime);
    h.set_cksum();
    Ok(h)
}

/// The metadata `t` is archived with.
pub(crate) fn meta_of(t: &Tables, size: u64) -> ArchiveMeta {
    let (index, term) = t
        .last_applied
        .map_or((0, 0), |l| (l.index, l.leader_id.term));
    let m = t.membership.membership();
    let servers: Vec<serde_json::Value> = m
        .nodes()
        .map(|(id, n)| {
            serde_json::json!({
                "Suffrage": if m.voter_ids().any(|v| v == *id) { 0 } else { 1 },
                "ID": id.to_string(),
                "Address": n.addr,
            })
        })
        .collect();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    ArchiveMeta {
        version: 1,
        id: format!("{term}-{index}-{millis}"),
        index,
        term,
        peers: String::new(),
        configuration: serde_json::json!({ "Servers": servers }),
        configuration_index: t.membership.log_id().map_or(0, |l| l.index),
        size,
    }
}

/// Writes `t` as a whole archive to `out`.
pub(crate) fn write(t: &Tables, out: impl Write) -> io::Result<ArchiveMeta> {
    let mut counter = Counter(0);
    super::state::write(t, &mut counter)?;
    let meta = meta_of(t, counter.0);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::fast()));
    let mut meta_json = serde_json::to_vec(&meta).map_err(io::Error::other)?;
    meta_json.push(b'\n');
    tar.append(
        &header("meta.json", meta_json.len() as u64, mtime)?,
        &meta_json[..],
    )?;
    let meta_sum = hex(ring::digest::digest(&SHA256, &meta_json).as_ref());

    let w = tar.get_mut();
    w.write_all(header("state.bin", meta.size, mtime)?.as_bytes())?;
    let mut hashing = Hashing {
        inner: &mut *w,
        hash: Context::new(&SHA256),
        len: 0,
    };
    super::state::write(t, &mut hashing)?;
    if hashing.len != meta.size {
        return Err(io::Error::other("the state changed while it was archived"));
    }
    let state_sum = hex(hashing.hash.finish().as_ref());
    let pad = (512 - (meta.size % 512) as usize) % 512;
    w.write_all(&vec![0u8; pad])?;

    let sums = format!("{meta_sum}  meta.json\n{state_sum}  state.bin\n");
    tar.append(
        &header("SHA256SUMS", sums.len() as u64, mtime)?,
        sums.as_bytes(),
    )?;
    tar.into_inner()?.finish()?.flush()?;
    Ok(meta)
}

/// Reads and checks an archive: every file Consul's archive has, no other, and sums that match.
pub(crate) fn read(bytes: &[u8]) -> Result<Archive, SnapshotError> {
    let corrupt = |e: io::Error| SnapshotError::Corrupt(e.to_string());
    let mut tar = tar::Archive::new(GzDecoder::new(bytes));
    let (mut meta, mut state, mut sums) = (None, None, None);
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let name = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        let mut body = Vec::new();
        entry.read_to_end(&mut body).map_err(corrupt)?;
        match name.as_str() {
            "meta.json" => meta = Some(body),
            "state.bin" => state = Some(body),
            "SHA256SUMS" => sums = Some(body),
            other => {
                return Err(SnapshotError::Corrupt(format!(
                    "unexpected file {other:?} in snapshot"
                )))
            }
        }
    }
    // A gzip stream cut short may still yield whole tar entries: read it to its end.
    let mut rest = Vec::new();
    tar.into_inner().read_to_end(&mut rest).map_err(corrupt)?;
    let missing = |f: &str| SnapshotError::Corrupt(format!("file missing for {f:?}"));
    let meta_json = meta.ok_or_else(|| missing("meta.json"))?;
    let state = state.ok_or_else(|| missing("state.bin"))?;
    let sums = String::from_utf8(sums.ok_or_else(|| missing("SHA256SUMS"))?)
        .map_err(|_| SnapshotError::Corrupt("SHA256SUMS is not text".into()))?;
    for (file, body) in [("meta.json", &meta_json), ("state.bin", &state)] {
        let want = sums
            .lines()
            .find_map(|l| l.strip_suffix(file)?.strip_suffix("  "))
            .ok_or_else(|| SnapshotError::Corrupt(format!("list missing hash for {file:?}")))?;
        if want != hex(ring::digest::digest(&SHA256, body).as_ref()) {
            return Err(SnapshotError::Corrupt(format!(
                "hash check failed for {file:?}"
            )));
        }
    }
    let meta: ArchiveMeta = serde_json::from_slice(&meta_json)
        .map_err(|e| SnapshotError::Corrupt(format!("meta.json: {e}")))?;
    if meta.size != state.len() as u64 {
        return Err(SnapshotError::Corrupt(format!(
            "meta.json gives state.bin {} bytes, the archive holds {}",
            meta.size,
            state.len()
        )));
    }
    Ok(Archive { meta, state })
}
