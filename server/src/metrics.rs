//! [`ServerMetrics`]: the timings and counters the server keeps as it works (Raft proposals,
//! commits, writes, snapshots), as `prometheus` collectors the agent registers in its
//! registry. Names follow Consul's (`raft.commitTime`, `kvs.apply`), without the `consul`
//! prefix, which the registry adds. Recording is an atomic add or a histogram observation:
//! no lock on any write path.

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter};

use crate::model::Command;

/// Histogram buckets in seconds, from 100 µs to 10 s: a local commit takes well under a
/// millisecond, a snapshot of a large state seconds.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Raft and write figures of this server (a client agent keeps only the write timings).
pub struct ServerMetrics {
    /// Commands proposed to Raft as leader (Consul's `raft.apply`).
    pub(crate) apply: IntCounter,
    /// Proposal to commit of one log entry, on the leader (`raft.commitTime`).
    pub(crate) commit_time: Histogram,
    /// Any write, from the call to its result (its commit or apply, forwarding included).
    pub(crate) write: Histogram,
    /// KV writes, likewise (`kvs.apply`).
    pub(crate) kvs_apply: Histogram,
    /// Transactions, likewise (`txn.apply`).
    pub(crate) txn_apply: Histogram,
    /// Building a Raft snapshot of the state (`raft.snapshot.create`).
    pub(crate) snapshot_create: Histogram,
    /// Writing it to disk (`raft.snapshot.persist`).
    pub(crate) snapshot_persist: Histogram,
}

fn histogram(name: &str, help: &str) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()))
        .expect("valid histogram")
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            apply: IntCounter::new("raft_apply", "Commands proposed to Raft as leader")
                .expect("valid counter"),
            commit_time: histogram(
                "raft_commitTime",
                "Seconds from proposing a Raft log entry to its commit, on the leader",
            ),
            write: histogram(
                "raft_write",
                "Seconds from a write's call to its result, forwarding included",
            ),
            kvs_apply: histogram("kvs_apply", "Seconds to complete a KV write"),
            txn_apply: histogram("txn_apply", "Seconds to complete a transaction"),
            snapshot_create: histogram(
                "raft_snapshot_create",
                "Seconds to build a Raft snapshot of the state",
            ),
            snapshot_persist: histogram(
                "raft_snapshot_persist",
                "Seconds to write a Raft snapshot to disk",
            ),
        }
    }
}

impl ServerMetrics {
    /// Every collector, for the agent's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.apply.clone()),
            Box::new(self.commit_time.clone()),
            Box::new(self.write.clone()),
            Box::new(self.kvs_apply.clone()),
            Box::new(self.txn_apply.clone()),
            Box::new(self.snapshot_create.clone()),
            Box::new(self.snapshot_persist.clone()),
        ]
    }

    /// Records a write of `kind` that took `secs`.
    pub(crate) fn observe_write(&self, kind: WriteKind, secs: f64) {
        self.write.observe(secs);
        match kind {
            WriteKind::Kv => self.kvs_apply.observe(secs),
            WriteKind::Txn => self.txn_apply.observe(secs),
            WriteKind::Other => {}
        }
    }
}

/// The kinds of write timed apart.
#[derive(Clone, Copy)]
pub(crate) enum WriteKind {
    Kv,
    Txn,
    Other,
}

impl WriteKind {
    pub(crate) fn of(cmd: &Command) -> WriteKind {
        match cmd {
            Command::KvSet { .. } | Command::KvDelete { .. } | Command::KvDeleteTree { .. } => {
                WriteKind::Kv
            }
            Command::Txn(_) | Command::LegacyTxn(_) => WriteKind::Txn,
            _ => WriteKind::Other,
        }
    }
}
