//! The leader's ACL duties: on winning an election with ACLs enabled, make sure the
//! `global-management` policy, the anonymous token and the configured `initial_management`
//! token exist (Consul's `initializeACLs`).

use std::time::Duration;

use muster_server::acl::{builtin::establish, AclConfig};
use muster_server::Server;
use tokio_util::sync::CancellationToken;

/// Runs until `cancel`: each time this server leads, establishes the ACL built-ins once.
pub(crate) async fn leader_loop(server: Server, config: AclConfig, cancel: CancellationToken) {
    if !config.enabled {
        return;
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = server.leading() => {}
        }
        match establish(&server, &config).await {
            Ok(()) => {
                // Done for this term: wait until leadership is lost.
                while server.is_leader() {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "ACL initialization failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
