//! Finding the cluster: `-retry-join` until one address answers, and the members known
//! before a restart, kept in the data dir (as Serf's snapshot) and rejoined at start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::gossip::{Gossip, Status};

/// The file in the data dir that holds the addresses of the other live members.
const KNOWN_MEMBERS: &str = "known-members.json";

/// The members saved by `remember_members` before the last stop; none when there is no
/// readable file.
pub(crate) fn known_members(data_dir: &Path) -> Vec<String> {
    std::fs::read(data_dir.join(KNOWN_MEMBERS))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Keeps the addresses of other live members in the data dir for the next start.
pub(crate) async fn remember_members(gossip: Gossip, data_dir: PathBuf, cancel: CancellationToken) {
    let path = data_dir.join(KNOWN_MEMBERS);
    let mut changed = gossip.changed.clone();
    let mut last: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = changed.changed() => if r.is_err() { return },
        }
        let mut addrs: Vec<String> = gossip
            .snapshot()
            .into_iter()
            .filter(|m| m.status == Status::Alive && m.id.name != gossip.local.name)
            .map(|m| m.id.addr.to_string())
            .collect();
        addrs.sort();
        if addrs.is_empty() || addrs == last {
            continue;
        }
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(&addrs).unwrap_or_default();
        if let Err(e) = std::fs::write(&tmp, body).and_then(|_| std::fs::rename(&tmp, &path)) {
            tracing::warn!(error = %e, path = %path.display(), "cannot save known members");
        }
        last = addrs;
    }
}

/// Tries each address in turn, every second, until one join succeeds.
pub(crate) async fn retry_join(gossip: Gossip, addrs: Vec<String>, cancel: CancellationToken) {
    loop {
        for a in &addrs {
            match gossip.join(a).await {
                Ok(()) => {
                    tracing::info!(addr = %a, "joined the cluster");
                    return;
                }
                Err(e) => tracing::warn!(addr = %a, error = %e, "retry-join failed; will retry"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
