//! Wake-ups for blocking queries, scoped to what a query reads: one key, one prefix, one
//! service, or one table. A write wakes only the watchers of what it changed, so idle
//! blocking queries cost nothing and a busy key does not wake watchers of other keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::apply::Changes;
use super::tables::*;
use crate::model::Query;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Topic {
    Key(String),
    Prefix(String),
    Service(String),
    Node(String),
    Table(&'static str),
}

impl Topic {
    /// What a query's answer depends on.
    pub(crate) fn of(q: &Query) -> Vec<Topic> {
        match q {
            Query::KvGet { key } => vec![Topic::Key(key.clone())],
            Query::KvList { prefix } | Query::KvKeys { prefix, .. } => {
                vec![Topic::Prefix(prefix.clone())]
            }
            Query::Nodes => vec![Topic::Table(IDX_NODES)],
            Query::Node { .. } => vec![Topic::Table(IDX_NODES), Topic::Table(IDX_SERVICES)],
            Query::NodeChecks { .. } | Query::ChecksInState { .. } => {
                vec![Topic::Table(IDX_CHECKS)]
            }
            Query::Services => vec![Topic::Table(IDX_SERVICES)],
            Query::ServicesOnNodes { .. } | Query::ServiceInstances { .. } => {
                vec![Topic::Table(IDX_SERVICES), Topic::Table(IDX_NODES)]
            }
            Query::ServiceNodes { name }
            | Query::ServiceHealth { name }
            | Query::ServiceChecks { name } => {
                vec![Topic::Service(name.clone())]
            }
            Query::Session { .. } | Query::Sessions | Query::NodeSessions { .. } => {
                vec![Topic::Table(IDX_SESSIONS)]
            }
            Query::PreparedQueries | Query::PreparedQuery { .. } => {
                vec![Topic::Table(IDX_PREPARED)]
            }
            // Not blocking queries in Consul; woken by any change to the queries.
            Query::PreparedQueryExplain { .. } | Query::PreparedQueryExecute(_) => {
                vec![Topic::Table(IDX_PREPARED)]
            }
            Query::Coordinates => vec![Topic::Table(IDX_COORDINATES)],
            Query::AclPolicies
            | Query::AclTokens
            | Query::AclRoles
            | Query::AclResolve { .. }
            | Query::AclMeta
            | Query::AclAuthMethods
            | Query::AclBindingRules => vec![Topic::Table(IDX_ACL)],
            Query::AutopilotConfig => vec![Topic::Table(IDX_AUTOPILOT)],
        }
    }
}

#[derive(Default)]
pub(crate) struct WatchHub {
    topics: Mutex<HashMap<Topic, Arc<Notify>>>,
}

impl WatchHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, Arc<Notify>>> {
        crate::sync::lock(&self.topics)
    }

    pub(crate) fn subscribe(&self, t: Topic) -> Arc<Notify> {
        let mut m = self.lock();
        // Forget topics nobody waits on any more, now and then.
        if m.len() > 4096 {
            m.retain(|_, n| Arc::strong_count(n) > 1);
        }
        m.entry(t).or_default().clone()
    }

    pub(crate) fn publish(&self, ch: &Changes) {
        let m = self.lock();
        if m.is_empty() {
            return;
        }
        let wake = |t: &Topic| {
            if let Some(n) = m.get(t) {
                n.notify_waiters();
            }
        };
        let any_prefix = m.keys().any(|t| matches!(t, Topic::Prefix(_)));
        for k in &ch.kv {
            wake(&Topic::Key(k.clone()));
            if any_prefix {
                for (i, _) in k.char_indices().chain([(k.len(), ' ')]) {
                    wake(&Topic::Prefix(k[..i].to_string()));
                }
            }
        }
        for s in &ch.services {
            wake(&Topic::Service(s.clone()));
        }
        for n in &ch.nodes {
            wake(&Topic::Node(n.clone()));
        }
        for t in &ch.tables {
            wake(&Topic::Table(t));
        }
    }

    /// Wakes everyone (the whole state was replaced by a snapshot).
    pub(crate) fn publish_all(&self) {
        for n in self.lock().values() {
            n.notify_waiters();
        }
    }
}
