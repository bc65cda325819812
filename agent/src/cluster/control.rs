//! What the HTTP API asks of the agent beyond its local services (`AgentControl`): the member
//! list, this agent's own description, join, leave and force-leave.

use futures::future::BoxFuture;
use muster_api::{types, AgentControl};
use tokio_util::sync::CancellationToken;

use super::gossip::Gossip;
use crate::config::Config;
use crate::VERSION;

/// State behind `AgentControl`.
pub(crate) struct Control {
    pub(crate) config: Config,
    pub(crate) gossip: Gossip,
    pub(crate) node_id: String,
    /// Cancelled by `leave`: the agent leaves the cluster and stops.
    pub(crate) cancel: CancellationToken,
}

impl AgentControl for Control {
    fn members(&self) -> Vec<types::Member> {
        self.gossip
            .snapshot()
            .into_iter()
            .map(|m| types::Member {
                name: m.id.name.clone(),
                addr: m.id.addr.ip().to_string(),
                port: m.id.addr.port(),
                tags: m.id.tags.clone(),
                status: m.status.code(),
                protocol_min: 1,
                protocol_max: 5,
                protocol_cur: 2,
                delegate_min: 2,
                delegate_max: 5,
                delegate_cur: 4,
            })
            .collect()
    }

    fn self_info(&self) -> serde_json::Value {
        let me = &self.gossip.local;
        serde_json::json!({
            "Config": {
                "Datacenter": self.config.datacenter,
                "NodeName": self.config.node_name,
                "NodeID": self.node_id,
                "Server": self.config.server,
                "Revision": "",
                "Version": VERSION,
                "PrimaryDatacenter": self.config.datacenter,
            },
            "Member": {
                "Name": me.name,
                "Addr": me.addr.ip().to_string(),
                "Port": me.addr.port(),
                "Tags": me.tags,
                "Status": 1,
            },
            "Meta": {},
        })
    }

    fn join(&self, addr: String) -> BoxFuture<'static, Result<(), String>> {
        let g = self.gossip.clone();
        Box::pin(async move { g.join(&addr).await.map_err(|e| e.to_string()) })
    }

    fn leave(&self) {
        self.cancel.cancel();
    }

    fn force_leave(&self, node: String) -> BoxFuture<'static, Result<(), String>> {
        let g = self.gossip.clone();
        Box::pin(async move { g.force_leave(&node).await.map_err(|e| e.to_string()) })
    }

    fn datacenter(&self) -> String {
        self.config.datacenter.clone()
    }

    fn node_name(&self) -> String {
        self.config.node_name.clone()
    }
}
