//! Consul's `/v1` HTTP API over Muster's state: routes, parameter parsing, Consul-shaped JSON
//! and the `X-Consul-*` headers. [`router`] does no I/O of its own, so tests can drive it with
//! `oneshot`; the agent serves it on the HTTP port.

mod acl;
mod agent;
mod agent_local;
mod autopilot;
mod body;
mod cache;
mod catalog;
pub mod coordinate;
mod error;
pub mod event;
mod filter;
#[doc(hidden)]
pub mod fuzz;
mod health;
pub mod keyring;
mod kv;
pub mod metrics;
pub mod metrics_sink;
pub mod monitor;
mod operator;
mod params;
mod query;
mod read;
mod reply;
mod requests;
mod router;
pub mod serf;
mod serve;
mod session;
mod snapshot;
mod status;
mod txn;
pub mod types;

use std::sync::Arc;

pub use error::ApiError;
use muster_server::Server;
pub use params::{go_duration, json_duration};
pub use requests::keep_service_extra;
pub use router::router;
pub use serve::{serve, serve_tls, HttpLimits};

/// Largest KV value accepted, as Consul (512 KiB).
pub const MAX_VALUE_SIZE: usize = 512 * 1024;

/// What the agent exposes to the HTTP layer: membership and agent-local operations. Defined
/// here and implemented by the agent, so `api` never depends on `agent`.
pub trait AgentControl: Send + Sync + 'static {
    /// Gossip members as `/v1/agent/members` reports them.
    fn members(&self) -> Vec<types::Member>;
    /// `/v1/agent/members?wan`: the servers, as Consul's WAN pool shows them.
    fn members_wan(&self) -> Vec<types::Member> {
        Vec::new()
    }
    /// `/v1/agent/self`.
    fn self_info(&self) -> serde_json::Value;
    /// Joins the gossip pool through `addr`.
    fn join(&self, addr: String) -> futures::future::BoxFuture<'static, Result<(), String>>;
    /// Leaves the cluster gracefully and shuts the agent down.
    fn leave(&self);
    /// Marks a failed member as left.
    fn force_leave(&self, node: String) -> futures::future::BoxFuture<'static, Result<(), String>>;
    /// This agent's datacenter.
    fn datacenter(&self) -> String;
    /// This agent's node name (the default node of a new session).
    fn node_name(&self) -> String;
    /// This agent's network coordinate, as its gossip probes have placed it.
    fn coordinate(&self) -> Option<muster_server::model::Coordinate> {
        None
    }
    /// Carries a keyring operation to every member and gathers their answers; `None` when
    /// gossip is not encrypted.
    fn keyring(
        &self,
        _op: keyring::KeyringOp,
    ) -> futures::future::BoxFuture<'static, Option<keyring::KeyringOutcome>> {
        Box::pin(async { None })
    }
    /// Fires a user event on the gossip layer (this agent included); the event as sent, or
    /// why it was refused (a filter that is not a regex).
    fn fire_event(
        &self,
        _req: event::FireRequest,
    ) -> futures::future::BoxFuture<'static, Result<event::UserEvent, String>> {
        Box::pin(async { Err("user events are not available".to_string()) })
    }
    /// The last user events this agent received, oldest first, and a receiver that changes
    /// when another arrives (subscribed before the list was read).
    fn events(
        &self,
    ) -> (
        Vec<event::UserEvent>,
        Option<tokio::sync::watch::Receiver<u64>>,
    ) {
        (Vec::new(), None)
    }
    /// Dispatches a Serf query on the gossip layer; its acks and responses arrive on the
    /// receiver, then a summary. Refused (a filter that is not a regex, a request over the
    /// size limit) with the reason.
    fn query(
        &self,
        _req: serf::QueryRequest,
    ) -> futures::future::BoxFuture<
        'static,
        Result<tokio::sync::mpsc::Receiver<serf::QueryEvent>, String>,
    > {
        Box::pin(async { Err("queries are not available".to_string()) })
    }
    /// Starts a remote exec on the members its filters match and `may_run` allows; acks,
    /// output and exit codes arrive on the receiver until the quiet period passes, then a
    /// summary.
    fn exec(
        &self,
        _req: serf::ExecRequest,
        _may_run: serf::NodeCheck,
    ) -> futures::future::BoxFuture<
        'static,
        Result<tokio::sync::mpsc::Receiver<serf::ExecEvent>, String>,
    > {
        Box::pin(async { Err("remote exec is not available".to_string()) })
    }
}

/// Why an agent-local operation failed.
#[derive(Debug)]
pub enum LocalError {
    /// 404 with the message.
    NotFound(String),
    /// 400 with the message: invalid definition, refused script check, ...
    Invalid(String),
    /// 500 with the message: the change could not be saved, and was not made.
    Storage(String),
}

/// The agent's own services, checks and maintenance: the truth anti-entropy pushes into the
/// catalog. Implemented by the agent.
pub trait LocalAgent: Send + Sync + 'static {
    fn services(&self) -> Vec<muster_server::model::Service>;
    fn checks(&self) -> Vec<muster_server::model::Check>;
    /// Registers (or replaces) a service from its JSON definition.
    fn register_service(
        &self,
        def: &serde_json::Value,
        replace_checks: bool,
    ) -> Result<(), LocalError>;
    fn deregister_service(&self, id: &str) -> Result<(), LocalError>;
    fn register_check(&self, def: &serde_json::Value) -> Result<(), LocalError>;
    fn deregister_check(&self, id: &str) -> Result<(), LocalError>;
    /// Sets a TTL check's status (pass/warn/fail/update).
    fn update_check(
        &self,
        id: &str,
        status: muster_server::model::HealthStatus,
        output: String,
    ) -> Result<(), LocalError>;
    /// Node (`service: None`) or service maintenance, with an optional expiry.
    fn maintenance(
        &self,
        service: Option<&str>,
        enable: bool,
        reason: String,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), LocalError>;
    /// Re-reads the config files; on error the running configuration stays.
    fn reload(&self) -> Result<(), String>;
}

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub server: Server,
    pub agent: Arc<dyn AgentControl>,
    /// The agent's local state; `None` where there is none (in-process API tests).
    pub local: Option<Arc<dyn LocalAgent>>,
    /// ACL settings and token resolution (ACLs disabled unless [`ApiState::with_acl`]).
    pub acl: Arc<muster_server::acl::Resolver>,
    cache: Arc<cache::ReplyCache>,
    /// The agent's metrics (`/v1/agent/metrics`), fed by the HTTP layer and read at scrape.
    pub metrics: Arc<metrics::Metrics>,
    /// The agent's log lines for `/v1/agent/monitor`; `None`: not published.
    pub logs: Option<monitor::LogSender>,
    /// Fires when the agent stops serving: ends streams that would otherwise run on
    /// (`/v1/agent/monitor`), so a graceful shutdown need not wait them out.
    pub stop: tokio_util::sync::CancellationToken,
}

impl ApiState {
    pub fn new(server: Server, agent: Arc<dyn AgentControl>) -> Self {
        let acl = muster_server::acl::Resolver::new(
            server.clone(),
            muster_server::acl::AclConfig::disabled(),
        );
        ApiState {
            acl: Arc::new(acl),
            server,
            agent,
            local: None,
            cache: Arc::default(),
            metrics: Arc::default(),
            logs: None,
            stop: Default::default(),
        }
    }

    /// Enforces ACLs with these settings.
    pub fn with_acl(mut self, config: muster_server::acl::AclConfig) -> Self {
        self.acl = Arc::new(muster_server::acl::Resolver::new(
            self.server.clone(),
            config,
        ));
        self
    }

    /// ACLs through a resolver shared with others (DNS), so that agent tokens set over HTTP
    /// apply to them too.
    pub fn with_resolver(mut self, resolver: Arc<muster_server::acl::Resolver>) -> Self {
        self.acl = resolver;
        self
    }

    pub fn with_local(mut self, local: Arc<dyn LocalAgent>) -> Self {
        self.local = Some(local);
        self
    }
}
