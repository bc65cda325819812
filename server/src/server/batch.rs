//! Group commit on the leader: every command queued while earlier entries are in flight is
//! packed into the next Raft log entry.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};

use crate::metrics::ServerMetrics;
use crate::model::{Command, CommandResult};
use crate::raft::types::{Batch, CommitHook, Raft};

/// Most commands packed into one log entry.
pub(super) const MAX_BATCH: usize = 1024;
/// Log entries proposed but not yet committed, at most, on a single-server cluster: later
/// writes queue up and form the next, larger batch meanwhile. With more voters the leader
/// keeps one: its own log append already runs beside replication (vendor/openraft), and more
/// in flight gave no more writes per second for more CPU per write.
pub(super) const BATCHES_IN_FLIGHT: usize = 2;
/// Commands queued for the batcher, and for the forwarder, at most.
pub(super) const QUEUE: usize = MAX_BATCH * BATCHES_IN_FLIGHT;

/// What became of one command handed to the batcher.
pub(super) enum Outcome {
    Done(CommandResult),
    NotLeader,
    Failed(String),
}

/// A command for the batcher, and where to send what became of it.
pub(super) type Pending = (Command, tokio::sync::oneshot::Sender<Outcome>);

/// Group commit: packs every queued command into one Raft entry, with a few entries in flight.
pub(super) async fn batch_loop(
    raft: Raft,
    mut rx: tokio::sync::mpsc::Receiver<Pending>,
    metrics: Arc<ServerMetrics>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        // Each entry takes one permit alone, or all of them with followers to wait for.
        let sole_voter = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .nth(1)
            .is_none();
        let need = if sole_voter {
            1
        } else {
            BATCHES_IN_FLIGHT as u32
        };
        let Ok(permit) = permits.clone().acquire_many_owned(need).await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut cmds = vec![first.0];
        let mut waiters = vec![first.1];
        while cmds.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((c, w)) => {
                    cmds.push(c);
                    waiters.push(w);
                }
                Err(_) => break,
            }
        }
        metrics.apply.inc_by(cmds.len() as u64);
        tokio::spawn(propose(
            raft.clone(),
            cmds,
            waiters,
            permit,
            metrics.clone(),
        ));
    }
}

/// Proposes one batch. Its unconditional KV writes are answered, and its in-flight slot
/// freed, as soon as a quorum holds the entry: the entry is then as durable as Raft makes
/// anything, and reads wait for the apply (see `Node::read_index`). Applying a batch thus
/// overlaps the next one's log append, and a round trip does not include an apply.
async fn propose(
    raft: Raft,
    cmds: Vec<Command>,
    waiters: Vec<tokio::sync::oneshot::Sender<Outcome>>,
    permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<ServerMetrics>,
) {
    let started = std::time::Instant::now();
    let early: Vec<bool> = cmds.iter().map(Command::succeeds_unconditionally).collect();
    let mut waiters: Vec<_> = waiters.into_iter().map(Some).collect();
    let mut permit = Some(permit);
    let (hook, committed) = CommitHook::new();
    let write = raft.client_write(Batch {
        cmds,
        on_commit: Some(hook),
    });
    tokio::pin!(write);
    let res = tokio::select! {
        biased;
        res = &mut write => {
            if res.is_ok() {
                metrics.commit_time.observe(started.elapsed().as_secs_f64());
            }
            res
        }
        Ok(index) = committed => {
            metrics.commit_time.observe(started.elapsed().as_secs_f64());
            drop(permit.take());
            for (w, _) in waiters.iter_mut().zip(&early).filter(|(_, &e)| e) {
                if let Some(w) = w.take() {
                    let _ = w.send(Outcome::Done(CommandResult {
                        index,
                        success: true,
                        txn: None,
                    }));
                }
            }
            write.await
        }
    };
    drop(permit);
    match res {
        Ok(resp) => {
            for ((w, r), e) in waiters.into_iter().zip(resp.data.0).zip(early) {
                if e && !r.success {
                    tracing::error!(
                        index = r.index,
                        "a write acknowledged at commit failed to apply"
                    );
                }
                if let Some(w) = w {
                    let _ = w.send(Outcome::Done(r));
                }
            }
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            for w in waiters.into_iter().flatten() {
                let _ = w.send(Outcome::NotLeader);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for w in waiters.into_iter().flatten() {
                let _ = w.send(Outcome::Failed(msg.clone()));
            }
        }
    }
}
