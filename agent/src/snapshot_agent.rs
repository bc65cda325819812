//! Scheduled snapshots (`snapshot_agent`): every `interval`, the leader among the servers
//! writes an archive of the whole state into `path` and keeps the newest `retain` of them.
//! Followers write nothing, so a cluster makes one file per interval.
//!
//! A file lands whole or not at all: written to a `.tmp` name, synced, renamed, and the
//! directory synced. Names sort by time (`muster-<unix ms, 16 digits>-<index>.snap`), so
//! rotation removes the first ones.

use std::io::Write;
use std::path::{Path, PathBuf};

use muster_server::model::Consistency;
use muster_server::Server;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SnapshotAgentConfig};

const PREFIX: &str = "muster-";
const SUFFIX: &str = ".snap";

/// Starts the schedule on a server with a `snapshot_agent` block.
pub(crate) fn start(
    config: &Config,
    server: &Server,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let (Some(c), true) = (config.snapshot_agent.clone(), server.is_server()) else {
        return;
    };
    tasks.spawn(run(c, server.clone(), cancel.clone()));
}

async fn run(c: SnapshotAgentConfig, server: Server, cancel: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + c.interval, c.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !server.is_leader() {
            continue;
        }
        match save(&c, &server).await {
            Ok(path) => tracing::info!(file = %path.display(), "scheduled snapshot saved"),
            Err(e) => {
                tracing::error!(error = %e, dir = %c.path.display(), "scheduled snapshot failed")
            }
        }
    }
}

/// Takes one snapshot into `c.path`, then removes the oldest past `c.retain`.
async fn save(c: &SnapshotAgentConfig, server: &Server) -> anyhow::Result<PathBuf> {
    let (snap, _) = server.snapshot(Consistency::Stale).await?;
    let dir = c.path.clone();
    let retain = c.retain;
    let path = tokio::task::spawn_blocking(move || -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&dir)?;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = format!("{PREFIX}{millis:016}-{}{SUFFIX}", snap.index());
        let path = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp"));
        let written = (|| -> std::io::Result<()> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            snap.write_archive(&mut f)?;
            f.flush()?;
            f.get_ref().sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        rotate(&dir, retain)?;
        Ok(path)
    })
    .await??;
    Ok(path)
}

/// Removes all but the newest `retain` snapshots in `dir` (0 keeps them all).
fn rotate(dir: &Path, retain: usize) -> std::io::Result<()> {
    if retain == 0 {
        return Ok(());
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(retain);
    for n in &names[..excess] {
        std::fs::remove_file(dir.join(n))?;
    }
    Ok(())
}
