//! Supervision of the server's own tasks: the Raft core, the log writer and the state
//! checkpointer are watched, and every task the server cannot run without is spawned through
//! [`Essential`], so that the first of them to stop is reported once, as fatal (see
//! [`Server::fatal`](super::Server::fatal)).

use std::sync::Arc;

use openraft::BasicNode;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::raft::types::NodeId;

/// Reports the first reason the server cannot go on; later ones follow from it.
fn report_fatal(tx: &watch::Sender<Option<String>>, why: String) {
    tx.send_if_modified(|slot| {
        if slot.is_some() {
            return false;
        }
        tracing::error!(reason = %why, "the server cannot go on; stopping");
        *slot = Some(why);
        true
    });
}

/// Spawns the server's tasks that must run as long as it does: one that ends or panics
/// before shutdown is reported as fatal.
pub(super) struct Essential {
    pub(super) fatal: Arc<watch::Sender<Option<String>>>,
    pub(super) cancel: CancellationToken,
}

impl Essential {
    pub(super) fn spawn(
        &self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let task = tokio::spawn(task);
        let (fatal, cancel) = (self.fatal.clone(), self.cancel.clone());
        tokio::spawn(async move {
            let res = task.await;
            if cancel.is_cancelled() {
                return;
            }
            let why = match res {
                Err(e) if e.is_panic() => format!("the server's {name} task panicked"),
                _ => format!("the server's {name} task stopped"),
            };
            report_fatal(&fatal, why);
        });
    }
}

/// Watches the Raft core, the log writer and the checkpointer until shutdown, and reports
/// the first of them to stop.
pub(super) async fn watch_core(
    mut metrics: watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    mut log: watch::Receiver<Option<String>>,
    mut checkpoint: watch::Receiver<Option<String>>,
    fatal: Arc<watch::Sender<Option<String>>>,
    cancel: CancellationToken,
) {
    let why = loop {
        let core = match &metrics.borrow().running_state {
            Err(openraft::error::Fatal::Stopped) => Some("the Raft core stopped".to_string()),
            Err(e) => Some(format!("the Raft core stopped: {e}")),
            Ok(()) => None,
        };
        if let Some(why) = log.borrow().clone() {
            break format!("the Raft log writer stopped: {why}");
        }
        if let Some(why) = checkpoint.borrow().clone() {
            break format!("the state checkpointer stopped: {why}");
        }
        if let Some(why) = core {
            break why;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = metrics.changed() => if r.is_err() {
                // The core's task ended without reporting: it panicked.
                if cancel.is_cancelled() {
                    return;
                }
                break "the Raft core panicked".to_string();
            },
            // A closed channel only disables its branch: the core's end is seen above.
            Ok(()) = log.changed() => {}
            Ok(()) = checkpoint.changed() => {}
        }
    };
    if !cancel.is_cancelled() {
        report_fatal(&fatal, why);
    }
}
