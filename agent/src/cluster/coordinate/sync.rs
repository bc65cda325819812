//! The agent's report of its coordinate to the servers, as Consul's `sendCoordinate`: every
//! `sync_coordinate_interval_min`, or longer in a large cluster so that all agents together
//! send about `sync_coordinate_rate_target` updates a second, plus a random stagger. A write
//! that fails (no leader yet) is retried at the next interval; the catalog drops the update
//! of a node it does not hold yet.

use std::time::Duration;

use muster_server::model::{Command, NodeCoordinate};
use muster_server::Server;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::cluster::gossip::Gossip;

/// When and as whom the coordinate is sent.
#[derive(Debug, Clone)]
pub(crate) struct SyncConfig {
    pub(crate) node: String,
    /// `sync_coordinate_interval_min` (Consul: 15 s).
    pub(crate) interval_min: Duration,
    /// `sync_coordinate_rate_target`: updates a second across the cluster (Consul: 64).
    pub(crate) rate_target: f64,
}

/// Consul's `lib.RateScaledInterval`: `members / rate` seconds, but at least `min`.
pub(crate) fn rate_scaled_interval(rate: f64, min: Duration, members: usize) -> Duration {
    if rate <= 0.0 {
        return min;
    }
    Duration::from_secs_f64(members as f64 / rate).max(min)
}

/// Sends this agent's coordinate until `cancel` fires.
pub(crate) async fn sync_loop(
    cfg: SyncConfig,
    gossip: Gossip,
    server: Server,
    cancel: CancellationToken,
) {
    loop {
        let members = muster_server::sync::read(&gossip.members).len();
        let intv = rate_scaled_interval(cfg.rate_target, cfg.interval_min, members);
        let stagger = intv.mul_f64(rand::rng().random::<f64>());
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(intv + stagger) => {}
        }
        let update = NodeCoordinate {
            node: cfg.node.clone(),
            coord: gossip.probes.coordinate(),
        };
        let sent = server
            .write(Command::CoordinateBatchUpdate(vec![update]))
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "coordinate not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_scales_with_the_cluster_past_the_minimum() {
        let min = Duration::from_secs(15);
        assert_eq!(rate_scaled_interval(64.0, min, 3), min);
        assert_eq!(rate_scaled_interval(64.0, min, 960), min);
        assert_eq!(
            rate_scaled_interval(64.0, min, 6400),
            Duration::from_secs(100)
        );
        assert_eq!(rate_scaled_interval(0.0, min, 6400), min);
    }
}
