//! The snapshot archive, in Consul's shape: a gzipped tar of `meta.json` (Raft's snapshot
//! metadata, Consul's field names), `state.bin` and `SHA256SUMS` (the other two files' sums,
//! `sha256sum`'s layout). Consul's `consul snapshot save` checks exactly these, so it works
//! against Muster.
//!
//! Written as a stream: `state.bin`'s size is summed from the rows first (the tar header comes
//! first), then it is encoded straight into the gzip writer, hashed as it goes, and
//! `SHA256SUMS` follows it; the tables are an immutable copy, so both passes see the same
//! rows. Read as a stream too ([`read_with`]): the sums are checked at the end, so what was
//! read is acted on only after.

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

pub(crate) fn hex(d: &[u8]) -> String {
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
    let meta = meta_of(t, super::state::size(t)?);
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
    {
        // Rows are small: batch them before they reach the hash and the compressor.
        let mut buf = io::BufWriter::with_capacity(256 << 10, &mut hashing);
        super::state::write(t, &mut buf)?;
        buf.flush()?;
    }
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

/// Passes reads on from `inner`, hashing and counting them.
struct HashingReader<R> {
    inner: R,
    /// `None` when the archive's bytes were checked another way (see [`read_with`]).
    hash: Option<Context>,
    len: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(b)?;
        if let Some(h) = &mut self.hash {
            h.update(&b[..n]);
        }
        self.len += n as u64;
        Ok(n)
    }
}

/// The SHA-256 of `parts` read one after the other, in hex: the sum a restore's staged
/// archive is checked against.
pub(crate) fn sha256_hex<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Context::new(&SHA256);
    for p in parts {
        h.update(p);
    }
    hex(h.finish().as_ref())
}

/// The most `meta.json` or `SHA256SUMS` may hold: both are a few hundred bytes.
const MAX_SMALL_FILE: u64 = 1 << 20;

/// Reads and checks an archive from `r` as it streams: every file Consul's archive has, no
/// other, and sums that match. `state` reads `state.bin` as it goes by (whatever it leaves
/// unread is still hashed); what it returns counts only once the sums are checked, so a
/// caller acts on it only after this returns. With `hash_state` false, `state.bin` is not
/// hashed: for an archive whose bytes were checked whole against a sum taken when these
/// were (a restore's staged archive, on its commit).
pub(crate) fn read_with<T>(
    r: impl Read,
    hash_state: bool,
    state: impl FnOnce(&mut dyn Read) -> Result<T, SnapshotError>,
) -> Result<(ArchiveMeta, T), SnapshotError> {
    let corrupt = |e: io::Error| SnapshotError::Corrupt(e.to_string());
    let mut tar = tar::Archive::new(GzDecoder::new(io::BufReader::with_capacity(1 << 16, r)));
    let mut state = Some(state);
    let (mut meta, mut out, mut sums) = (None, None, None);
    let mut state_sum = None;
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let name = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        let small = |entry: &mut tar::Entry<'_, _>| {
            let mut body = Vec::new();
            entry
                .take(MAX_SMALL_FILE + 1)
                .read_to_end(&mut body)
                .map_err(corrupt)?;
            if body.len() as u64 > MAX_SMALL_FILE {
                return Err(SnapshotError::Corrupt(format!("{name} is too large")));
            }
            Ok(body)
        };
        match name.as_str() {
            "meta.json" => meta = Some(small(&mut entry)?),
            "SHA256SUMS" => sums = Some(small(&mut entry)?),
            "state.bin" => {
                let Some(read_state) = state.take() else {
                    return Err(SnapshotError::Corrupt("state.bin appears twice".into()));
                };
                let mut h = HashingReader {
                    inner: &mut entry,
                    hash: hash_state.then(|| Context::new(&SHA256)),
                    len: 0,
                };
                out = Some(read_state(&mut h)?);
                io::copy(&mut h, &mut io::sink()).map_err(corrupt)?;
                state_sum = Some((h.hash.map(|h| hex(h.finish().as_ref())), h.len));
            }
            other => {
                return Err(SnapshotError::Corrupt(format!(
                    "unexpected file {other:?} in snapshot"
                )))
            }
        }
    }
    // A gzip stream cut short may still yield whole tar entries: read it to its end.
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(corrupt)?;
    let missing = |f: &str| SnapshotError::Corrupt(format!("file missing for {f:?}"));
    let meta_json = meta.ok_or_else(|| missing("meta.json"))?;
    let (state_sum, state_len) = state_sum.ok_or_else(|| missing("state.bin"))?;
    let out = out.ok_or_else(|| missing("state.bin"))?;
    let sums = String::from_utf8(sums.ok_or_else(|| missing("SHA256SUMS"))?)
        .map_err(|_| SnapshotError::Corrupt("SHA256SUMS is not text".into()))?;
    let meta_sum = hex(ring::digest::digest(&SHA256, &meta_json).as_ref());
    let checked = [
        ("meta.json", Some(&meta_sum)),
        ("state.bin", state_sum.as_ref()),
    ];
    for (file, got) in checked.into_iter().filter_map(|(f, g)| Some((f, g?))) {
        let want = sums
            .lines()
            .find_map(|l| l.strip_suffix(file)?.strip_suffix("  "))
            .ok_or_else(|| SnapshotError::Corrupt(format!("list missing hash for {file:?}")))?;
        if want != got {
            return Err(SnapshotError::Corrupt(format!(
                "hash check failed for {file:?}"
            )));
        }
    }
    let meta: ArchiveMeta = serde_json::from_slice(&meta_json)
        .map_err(|e| SnapshotError::Corrupt(format!("meta.json: {e}")))?;
    if meta.size != state_len {
        return Err(SnapshotError::Corrupt(format!(
            "meta.json gives state.bin {} bytes, the archive holds {state_len}",
            meta.size,
        )));
    }
    Ok((meta, out))
}
