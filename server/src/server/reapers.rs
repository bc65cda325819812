//! The leader's housekeeping loops: sessions whose TTL ran out are destroyed, and KV
//! tombstones older than `tombstone_ttl` are dropped. Both run on every server and act only
//! while it leads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::model::Command;
use crate::sync::lock;

use super::node::{LeaderView, Node};

/// The longest the session reaper sleeps. A TTL is at least 10 s and its grace doubles it,
/// so a session ends at most this late; an idle server wakes once a second, not five times.
const SESSION_CHECK_MAX: Duration = Duration::from_secs(1);

/// On the leader: destroys sessions whose TTL (doubled, as Consul's grace) ran out.
pub(super) async fn session_reaper(node: Arc<Node>, cancel: CancellationToken) {
    let mut wait = SESSION_CHECK_MAX;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = SESSION_CHECK_MAX;
        if node.leader_view() != LeaderView::Me {
            lock(&node.session_deadlines).clear();
            continue;
        }
        let Ok(sessions) = node.catalog.sessions() else {
            continue;
        };
        let now = Instant::now();
        let expired: Vec<String> = {
            let mut d = lock(&node.session_deadlines);
            d.retain(|id, _| sessions.iter().any(|s| &s.id == id));
            let expired = sessions
                .iter()
                .filter(|s| s.ttl_ms > 0)
                .filter(|s| {
                    let ttl = Duration::from_millis(s.ttl_ms * 2);
                    *d.entry(s.id.clone()).or_insert(now + ttl) <= now
                })
                .map(|s| s.id.clone())
                .collect();
            // Wake for the earliest deadline if it comes sooner (a renewal only moves one later).
            if let Some(next) = d.values().filter(|&&t| t > now).min() {
                wait = wait.min(*next - now);
            }
            expired
        };
        for id in expired {
            tracing::info!(session = %id, "session TTL expired; invalidating");
            if let Err(e) = node
                .write(Command::SessionDestroy { id: id.clone() }, false)
                .await
            {
                tracing::warn!(session = %id, error = %e, "cannot invalidate expired session");
            } else {
                lock(&node.session_deadlines).remove(&id);
            }
        }
    }
}

/// On the leader: drops KV tombstones older than `tombstone_ttl`, as Consul's tombstone GC.
/// Without it every deleted key (each `muster lock` run leaves one) stays in the state forever.
pub(super) async fn tombstone_reaper(node: Arc<Node>, cancel: CancellationToken) {
    let ttl = node.config.tombstone_ttl;
    // Consul reaps in 30 s steps; short TTLs (tests) get proportionally finer ones.
    let step = (ttl / 30).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(step);
    // (when, applied index then), oldest first: the newest mark older than the TTL bounds
    // which tombstones may go. Kept in memory only; a new leader starts counting afresh.
    let mut marks: VecDeque<(Instant, u64)> = Default::default();
    let mut reaped = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if node.leader_view() != LeaderView::Me {
            marks.clear();
            continue;
        }
        let now = Instant::now();
        marks.push_back((now, *node.applied.borrow()));
        let mut upto = None;
        while let Some(&(at, index)) = marks.front() {
            if now.duration_since(at) < ttl {
                break;
            }
            upto = Some(index);
            marks.pop_front();
        }
        let Some(upto) = upto.filter(|&u| u > reaped) else {
            continue;
        };
        match node.catalog.has_tombstones_upto(upto) {
            Ok(false) => reaped = upto,
            Ok(true) => match node.write(Command::KvReapTombstones { upto }, false).await {
                Ok(_) => {
                    tracing::debug!(upto, "reaped KV tombstones");
                    reaped = upto;
                }
                Err(e) => tracing::warn!(error = %e, "cannot reap KV tombstones"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot read KV tombstones"),
        }
    }
}

/// On a new leader: discards the chunks of a restore left staged in an earlier term (see
/// `crate::snapshot`). Such a restore cannot commit any more (its chunks and commit must share
/// a term); without this its chunks would stay until the next restore.
pub(super) async fn restore_janitor(node: Arc<Node>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut leading = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if node.leader_view() != LeaderView::Me {
            leading = false;
            continue;
        }
        if leading {
            continue;
        }
        let staged = !node
            .catalog
            .tables()
            .table(crate::store::tables::RESTORE_STAGING)
            .is_empty();
        if !staged {
            leading = true;
            continue;
        }
        tracing::info!("discarding the chunks of a restore an earlier leader left unfinished");
        match node
            .write(Command::SnapshotRestoreDiscard { id: None }, false)
            .await
        {
            Ok(_) => leading = true,
            Err(e) => tracing::warn!(error = %e, "cannot discard a stale restore's chunks"),
        }
    }
}
