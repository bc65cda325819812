//! The leader's coordinate batcher, as Consul's `Coordinate.Update` and `batchUpdate`: a
//! coordinate update reaching the leader is answered at once and kept (the latest per node)
//! until the next `coordinate_update_period`, when the pending updates go into the log as a
//! few `CoordinateBatchUpdate` entries (at most 5 of 128 each, Consul's limits; the rest are
//! dropped, and their agents send again). A server that is not the leader forwards the update.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::model::{Command, CommandResult, Coordinate, NodeCoordinate};
use crate::sync::lock;
use crate::Result;

use super::node::{LeaderView, Node};

/// Updates per log entry (Consul's `CoordinateUpdateBatchSize`).
const BATCH_SIZE: usize = 128;
/// Entries per period (Consul's `CoordinateUpdateMaxBatches`).
const MAX_BATCHES: usize = 5;

/// Updates waiting for the next batch, the latest per node.
#[derive(Default)]
pub(super) struct PendingCoordinates(Mutex<BTreeMap<String, Coordinate>>);

impl Node {
    /// [`Node::write`], except that a coordinate update reaching the leader is queued for the
    /// next batch and answered at once.
    pub(super) async fn write_or_queue(
        &self,
        cmd: Command,
        forward: bool,
    ) -> Result<CommandResult> {
        if let Command::CoordinateBatchUpdate(updates) = &cmd {
            if self.leader_view() == LeaderView::Me {
                let mut pending = lock(&self.coordinates.0);
                for u in updates {
                    pending.insert(u.node.clone(), u.coord.clone());
                }
                return Ok(CommandResult {
                    index: *self.applied.borrow(),
                    success: true,
                    txn: None,
                });
            }
        }
        self.write(cmd, forward).await
    }
}

/// On the leader, every `coordinate_update_period`: writes the pending updates.
pub(super) async fn coordinate_batcher(node: Arc<Node>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(node.config.coordinate_update_period);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pending = std::mem::take(&mut *lock(&node.coordinates.0));
        if pending.is_empty() || node.leader_view() != LeaderView::Me {
            continue;
        }
        let mut updates: Vec<NodeCoordinate> = pending
            .into_iter()
            .map(|(node, coord)| NodeCoordinate { node, coord })
            .collect();
        if updates.len() > BATCH_SIZE * MAX_BATCHES {
            tracing::warn!(
                dropped = updates.len() - BATCH_SIZE * MAX_BATCHES,
                "too many coordinate updates pending; dropping the rest"
            );
            updates.truncate(BATCH_SIZE * MAX_BATCHES);
        }
        for chunk in updates.chunks(BATCH_SIZE) {
            let cmd = Command::CoordinateBatchUpdate(chunk.to_vec());
            if let Err(e) = node.write(cmd, false).await {
                tracing::warn!(error = %e, "cannot write coordinate updates");
            }
        }
    }
}
