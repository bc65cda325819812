//! Gossip's counters, as memberlist names them (`memberlist.msg.suspect`,
//! `memberlist.msg.dead`), and the foca runtime that feeds them: foca reports a failed probe
//! only as an "unstable" notification, emitted beside one for every packet sent and received;
//! [`CountingRuntime`] counts the failed probes and drops the per-packet ones before they are
//! copied, so gossip pays nothing for them.

use std::time::Duration;

use foca::{AccumulatingRuntime, Notification, Runtime, Timer};
use prometheus::core::Collector;
use prometheus::IntCounter;

use super::member::MemberId;

/// What gossip counts. Cheap to clone (the counters are shared).
#[derive(Clone)]
pub struct GossipMetrics {
    /// Probes of a member that went unanswered, directly and through others: this agent then
    /// suspects it.
    pub(crate) suspect: IntCounter,
    /// Members declared failed (not those that left).
    pub(crate) dead: IntCounter,
}

impl Default for GossipMetrics {
    fn default() -> Self {
        GossipMetrics {
            suspect: IntCounter::new(
                "memberlist_msg_suspect",
                "Failed probes after which this agent suspects a member",
            )
            .expect("valid counter"),
            dead: IntCounter::new("memberlist_msg_dead", "Members declared failed")
                .expect("valid counter"),
        }
    }
}

impl GossipMetrics {
    /// Every collector, for the agent's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![Box::new(self.suspect.clone()), Box::new(self.dead.clone())]
    }
}

/// foca's accumulating runtime, counting failed probes and dropping per-packet notices.
pub(crate) struct CountingRuntime {
    inner: AccumulatingRuntime<MemberId>,
    metrics: GossipMetrics,
}

impl CountingRuntime {
    pub(crate) fn new(metrics: GossipMetrics) -> Self {
        CountingRuntime {
            inner: AccumulatingRuntime::new(),
            metrics,
        }
    }
}

impl std::ops::Deref for CountingRuntime {
    type Target = AccumulatingRuntime<MemberId>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for CountingRuntime {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl Runtime<MemberId> for CountingRuntime {
    fn notify(&mut self, notification: Notification<'_, MemberId>) {
        match notification {
            Notification::ProbeFailed(..) => self.metrics.suspect.inc(),
            Notification::DataReceived(_) | Notification::DataSent(_) => {}
            n => self.inner.notify(n),
        }
    }

    fn send_to(&mut self, to: MemberId, data: &[u8]) {
        self.inner.send_to(to, data)
    }

    fn submit_after(&mut self, event: Timer<MemberId>, after: Duration) {
        self.inner.submit_after(event, after)
    }
}
