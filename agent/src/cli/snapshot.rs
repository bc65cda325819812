//! `muster snapshot save|restore|inspect`: archives of the whole replicated state through
//! `/v1/snapshot`, with Consul's output. `inspect` reads the file locally.

use std::io::Write;
use std::path::Path;

use muster_server::snapshot::{inspect_file, Inspection};

use super::client::qs;
use super::error::{Error, Result};
use super::kv::connect;
use super::table::tab_pairs;
use crate::flags::Parsed;

pub(crate) const SNAPSHOT_USAGE: &str = "
Usage: muster snapshot <subcommand> [options] [args]

  This command has subcommands for saving, restoring, and inspecting the state
  of the Muster servers for disaster recovery. These are atomic, point-in-time
  snapshots which include key/value entries, service catalog, prepared queries,
  sessions, and ACLs. The archive has Consul's layout, and a restore also takes
  a snapshot saved by Consul 1.x.

  Create a snapshot:

      $ muster snapshot save backup.snap

  Restore a snapshot:

      $ muster snapshot restore backup.snap

  Inspect a snapshot:

      $ muster snapshot inspect backup.snap
";

pub(crate) const SAVE_USAGE: &str = "
Usage: muster snapshot save [options] FILE

  Retrieves an atomic, point-in-time snapshot of the state of the Muster servers
  which includes key/value entries, service catalog, prepared queries, sessions,
  and ACLs. The file is written whole and checked before it takes its name.

  If ACLs are enabled, a management token must be supplied in order to perform
  snapshot operations.
";

pub(crate) const RESTORE_USAGE: &str = "
Usage: muster snapshot restore [options] FILE

  Restores an atomic, point-in-time snapshot of the state of the Muster servers
  which includes key/value entries, service catalog, prepared queries, sessions,
  and ACLs. The snapshot may have been saved by Muster or by Consul 1.x.

  Restores involve a potentially dangerous low-level Raft operation that is not
  designed to handle server failures during a restore. This command is primarily
  intended to be used when recovering from a disaster, restoring into a fresh
  cluster of Muster servers.

  If ACLs are enabled, a management token must be supplied in order to perform
  snapshot operations.
";

pub(crate) const INSPECT_USAGE: &str = "
Usage: muster snapshot inspect [options] FILE

  Displays information about a snapshot file on disk: its metadata and the
  records it holds per table. For a Consul snapshot, also the record types a
  restore skips.
";

fn file_arg(p: &Parsed) -> Result<&str> {
    match p.positional.as_slice() {
        [f] => Ok(f),
        [] => Err(Error::Usage("Missing FILE argument".into())),
        _ => Err(Error::Usage(format!(
            "Too many arguments (expected 1, got {})",
            p.positional.len()
        ))),
    }
}

/// `snapshot save FILE`: streamed into `FILE.part`, checked (read back as a stream), synced,
/// then renamed: `FILE` is whole or absent, and the archive is never held in memory.
pub(crate) async fn save(p: &Parsed) -> Result<i32> {
    let file = file_arg(p)?;
    let c = connect(p)?;
    let part = format!("{file}.part");
    let saved = save_to(&c, p, &part).await;
    let checked = saved.and_then(|()| {
        inspect_file(Path::new(&part))
            .map_err(|e| Error::Refused(format!("Error verifying snapshot file: {e}")))
    });
    let renamed = checked.and_then(|i| {
        std::fs::rename(&part, file)
            .map_err(|e| Error::Refused(format!("Error writing snapshot file: {e}")))?;
        Ok(i)
    });
    match renamed {
        Ok(i) => {
            println!("Saved and verified snapshot to index {}", i.meta.index);
            Ok(0)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// Streams the agent's archive into `part`, synced.
async fn save_to(c: &super::client::Client, p: &Parsed, part: &str) -> Result<()> {
    let unwritable =
        |e: std::io::Error| Error::Refused(format!("Error writing snapshot file: {e}"));
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(part).map_err(unwritable)?,
    );
    c.stream_raw(
        reqwest::Method::GET,
        &format!("/v1/snapshot{}", qs(p, &[])),
        Vec::new(),
        |chunk| out.write_all(chunk).map_err(unwritable),
    )
    .await
    .map_err(|e| e.context("Error saving snapshot"))?;
    let f = out.into_inner().map_err(|e| unwritable(e.into_error()))?;
    f.sync_all().map_err(unwritable)
}

/// `snapshot restore FILE`: checked here first (as a stream), then sent to the agent, which
/// streams it to disk and checks it again before anything is proposed.
pub(crate) async fn restore(p: &Parsed) -> Result<i32> {
    let file = file_arg(p)?;
    inspect_file(Path::new(file))
        .map_err(|e| Error::Refused(format!("Error verifying snapshot file: {e}")))?;
    let body = std::fs::read(file)
        .map_err(|e| Error::Refused(format!("Error opening snapshot file: {e}")))?;
    let c = connect(p)?;
    let reply = c
        .call(reqwest::Method::PUT, "/v1/snapshot", Some(body))
        .await
        .map_err(|e| e.context("Error restoring snapshot"))?;
    let skipped: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
    if let Some(m) = skipped.get("Skipped").and_then(|s| s.as_object()) {
        for (kind, n) in m {
            println!("Skipped {n} {kind} record(s): Muster does not import them");
        }
    }
    println!("Restored snapshot");
    Ok(0)
}

/// A size as Consul's `ByteSize`: one decimal, `.0` dropped, B/KB/MB/GB/TB.
pub(crate) fn byte_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TB"),
        (1 << 30, "GB"),
        (1 << 20, "MB"),
        (1 << 10, "KB"),
    ];
    if bytes == 0 {
        return "0".into();
    }
    let (value, unit) = UNITS
        .iter()
        .find(|(u, _)| bytes >= *u)
        .map_or((bytes as f64, "B"), |(u, n)| (bytes as f64 / *u as f64, *n));
    let s = format!("{value:.1}");
    format!("{}{unit}", s.strip_suffix(".0").unwrap_or(&s))
}

/// The lines `inspect` prints: Consul's metadata block, then a row per table (largest first)
/// and the total; then, for a Consul snapshot, what a restore skips.
pub(crate) fn inspect_lines(i: &Inspection) -> Vec<String> {
    let m = &i.meta;
    let mut out = tab_pairs(&[
        (" ID".into(), m.id.clone()),
        (" Size".into(), m.size.to_string()),
        (" Index".into(), m.index.to_string()),
        (" Term".into(), m.term.to_string()),
        (" Version".into(), m.version.to_string()),
    ]);
    out.push(String::new());
    let mut tables: Vec<_> = i.tables.iter().filter(|t| t.count > 0).collect();
    tables.sort_by(|a, b| b.size.cmp(&a.size).then(a.name.cmp(&b.name)));
    let mut rows: Vec<[String; 3]> = vec![
        [" Type".into(), "Count".into(), "Size".into()],
        [" ----".into(), "----".into(), "----".into()],
    ];
    for t in &tables {
        rows.push([
            format!(" {}", t.name),
            t.count.to_string(),
            byte_size(t.size),
        ]);
    }
    rows.push([" ----".into(), "----".into(), "----".into()]);
    let total: u64 = i.tables.iter().map(|t| t.size).sum();
    rows.push([" Total".into(), String::new(), byte_size(total)]);
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0) + 6;
    let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0) + 6;
    for r in rows {
        out.push(format!("{:w0$}{:w1$}{}", r[0], r[1], r[2]));
    }
    if !i.skipped.is_empty() {
        out.push(String::new());
        out.push(format!(" Skipped by a restore ({} snapshot)", i.format));
        let pairs: Vec<(String, String)> = i
            .skipped
            .iter()
            .map(|(k, n)| (format!(" {k}"), n.to_string()))
            .collect();
        out.extend(tab_pairs(&pairs));
    }
    out
}

/// `snapshot inspect FILE`: read and checked locally, as a stream.
pub(crate) async fn inspect(p: &Parsed) -> Result<i32> {
    let file = file_arg(p)?;
    let i = inspect_file(Path::new(file))
        .map_err(|e| Error::Refused(format!("Error verifying snapshot file: {e}")))?;
    for line in inspect_lines(&i) {
        println!("{line}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::byte_size;

    #[test]
    fn sizes_read_as_consuls() {
        assert_eq!(byte_size(580), "580B");
        assert_eq!(byte_size(5632), "5.5KB");
        assert_eq!(byte_size(1024), "1KB");
        assert_eq!(byte_size(0), "0");
    }
}
