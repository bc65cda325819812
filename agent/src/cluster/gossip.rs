//! LAN gossip membership: foca (SWIM with suspicion) over UDP on the serf LAN port.
//!
//! foca only knows up and down. Serf's "left" (a graceful leave) is told apart from "failed"
//! by a small control message an agent sends to every member before it leaves; a `Down` seen
//! after it means left, otherwise failed.
//!
//! With a gossip key, every packet on the socket (foca's, the control messages, the
//! coordinate probes, the keyring operations, user events, queries and exec requests) is
//! sealed and opened by `keyring::Crypto`. TCP on the same port carries the direct streams
//! answers come back on (`direct`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foca::{Foca, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use super::coordinate::{Probes, KIND_ACK, KIND_PING};
use super::direct::{Sessions, SyncReq};
use super::exec::{RemoteExec, KIND_EXEC};
use super::gossip_metrics::{CountingRuntime, GossipMetrics};
use super::keyring::{RefusalLog, SharedCrypto, REFUSAL_NOTICE};
use super::keyring_ops::{KeyringOps, Outgoing, KIND_KEYRING_ANS, KIND_KEYRING_REQ};
pub use super::member::{Member, MemberId, Members, Status};
use super::query::{Queries, KIND_QUERY};
use super::tags::INTERNAL_TAGS;
use super::user_events::{UserEvents, KIND_USER_EVENT};
use crate::handlers::{EventMember, MemberEvent, MemberEventKind};
use crate::{Error, Result};
use muster_api::keyring::{KeyringOp, KeyringOutcome};

/// Packets start with a kind byte: foca's SWIM traffic, or Muster's control messages.
const KIND_FOCA: u8 = 0;
const KIND_LEAVE: u8 = 1;

enum Cmd {
    Join(SocketAddr, oneshot::Sender<Result<()>>),
    Leave(oneshot::Sender<()>),
    ForceLeave(String, oneshot::Sender<Result<()>>),
    Keyring(KeyringOp, oneshot::Sender<Option<KeyringOutcome>>),
    /// A packet for every live member (a user event), sent twice as UDP may drop one.
    Broadcast(Vec<u8>),
    /// This agent's member list, encoded for push-pull.
    State(oneshot::Sender<Vec<u8>>),
    /// A member list from push-pull, to apply.
    Sync(Vec<u8>),
}

/// How often an agent exchanges its whole member list with a random member over TCP (Serf's
/// push-pull interval): whatever gossip dropped is mended within this.
const PUSH_PULL_EVERY: Duration = Duration::from_secs(30);
/// The housekeeping pass (join timeouts, keyring operations, reaping).
const TICK: Duration = Duration::from_secs(1);
/// How often a round trip is measured for the network coordinate: every other probe period
/// of Serf's, which is enough for Vivaldi and keeps an idle agent's wake-ups down.
const COORDINATE_PROBE_EVERY: Duration = Duration::from_secs(2);

/// Handle to the gossip task.
#[derive(Clone)]
pub struct Gossip {
    cmd: mpsc::Sender<Cmd>,
    pub members: Members,
    /// Bumped on every membership change.
    pub changed: watch::Receiver<u64>,
    pub local: MemberId,
    /// This node's network coordinate and the probes that move it.
    pub(crate) probes: Probes,
    /// The gossip keyring and its switches.
    pub(crate) crypto: SharedCrypto,
    /// User events fired here or received.
    pub(crate) user_events: UserEvents,
    /// Queries asked here or answered.
    pub(crate) queries: Queries,
    /// Remote exec asked here or run.
    pub(crate) exec: RemoteExec,
    /// Members reaped (failed past `reconnect_timeout`, left past a day) and not back since:
    /// the leader removes them from the catalog.
    pub(crate) reaped: Reaped,
    /// Failed probes and members declared failed, for the agent's metrics.
    pub metrics: GossipMetrics,
}

/// Names of reaped members.
pub(crate) type Reaped = Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>;

/// How long a failed member stays listed before it is reaped (Consul's `reconnect_timeout`,
/// 72 h by default), and a member that left (Serf's tombstone timeout, 24 h).
#[derive(Debug, Clone, Copy)]
pub struct ReapAfter {
    pub failed: Duration,
    pub left: Duration,
}

impl Default for ReapAfter {
    fn default() -> Self {
        ReapAfter {
            failed: Duration::from_secs(72 * 3600),
            left: Duration::from_secs(24 * 3600),
        }
    }
}

type Rt = CountingRuntime;

struct Driver {
    foca: Foca<MemberId, PostcardCodec, rand::rngs::StdRng, foca::NoCustomBroadcast>,
    rt: Rt,
    socket: Arc<UdpSocket>,
    members: Members,
    changed: watch::Sender<u64>,
    /// foca's timers, polled by the driver's own loop: one wake-up when a timer is due,
    /// where a task per timer cost two (its own and the channel's).
    timers: DelayQueue<Timer<MemberId>>,
    /// foca's periodic-gossip timer, held back while foca has no updates to spread: it
    /// fires five times a second and, with nothing to say, only re-arms itself. Re-armed at
    /// once when updates appear, so news goes out sooner than it would have.
    parked_gossip: Option<Timer<MemberId>>,
    /// Names that announced a graceful leave: their next `Down` is "left".
    leaving: HashMap<String, Instant>,
    /// Joins waiting for the first member to come up.
    pending_joins: Vec<(Instant, oneshot::Sender<Result<()>>)>,
    probes: Probes,
    /// Seals and opens packets; `None` keyring means plaintext.
    crypto: SharedCrypto,
    /// Refused or undecodable packets, logged at most every few seconds.
    refusals: RefusalLog,
    /// Keyring operations sent to the members, or received from one.
    keyring_ops: KeyringOps,
    /// Where member changes go for the event handlers; `None` without handlers.
    events: Option<mpsc::UnboundedSender<MemberEvent>>,
    user_events: UserEvents,
    queries: Queries,
    exec: RemoteExec,
    reap_after: ReapAfter,
    reaped: Reaped,
    /// Member lists from push-pull, to apply (the periodic exchanges send theirs here).
    sync_tx: mpsc::Sender<SyncReq>,
    metrics: GossipMetrics,
}

impl Gossip {
    /// Starts gossip on an already-bound socket, and the direct streams on the TCP listener
    /// of the same port; member changes, this agent's own join first, are sent on `events`.
    pub fn start(
        (socket, direct): (UdpSocket, tokio::net::TcpListener),
        local: MemberId,
        crypto: SharedCrypto,
        events: Option<mpsc::UnboundedSender<MemberEvent>>,
        reap_after: ReapAfter,
        cancel: CancellationToken,
    ) -> Gossip {
        let mut config = foca::Config::new_lan(NonZeroU32::MIN.saturating_add(15));
        // Keep down members' identities around long enough that a restarted agent with the
        // same address is told apart by its incarnation.
        config.remove_down_after = Duration::from_secs(60);
        config.max_packet_size = std::num::NonZeroUsize::new(1400).expect("nonzero");
        // Failure seen everywhere within 3 s at 20 members (memberlist's LAN profile, which
        // foca's mirrors, takes 5 s or more): a member is probed every 500 ms, suspected
        // after 250 ms without an answer (direct and through 3 others), and declared down
        // after 1.5 s of suspicion it did not refute. A member alive but starved that long
        // is declared down and rejoins with its next incarnation.
        config.probe_period = Duration::from_millis(500);
        config.probe_rtt = Duration::from_millis(250);
        config.suspect_to_down_after = Duration::from_millis(1500);
        // Each member is probed every period by the one before it on a ring (see
        // vendor/foca/MUSTER.md). Picked at random, a dead member went unprobed for a period
        // or more in about one kill in three at 20 members, and was seen everywhere after
        // 3 s rather than 2.5 s.
        config.probe_ring = true;
        // A member's news (a failure above all) is passed on twice as many times as foca's
        // LAN profile does: an identity with its tags is about 300 bytes, so few fit in a
        // packet, and with 4 sends one member in 20 sometimes heard of a failure seconds late.
        config.max_transmissions = std::num::NonZeroU8::new(8).expect("nonzero");
        // News (a suspicion, then the failure) is gossiped to 4 members every 100 ms (foca's
        // LAN profile: 3 every 200 ms), reaching 20 members in about two rounds. The timer is
        // parked while there is nothing to spread, so an idle agent does not pay for it.
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(100),
            num_members: std::num::NonZeroUsize::new(4).expect("nonzero"),
        });
        let rng = rand::rngs::StdRng::from_os_rng();
        let foca = Foca::new(local.clone(), config, rng, PostcardCodec);
        let members: Members = Arc::default();
        muster_server::sync::write(&members).insert(
            local.name.clone(),
            Member {
                id: local.clone(),
                status: Status::Alive,
                since: Instant::now(),
            },
        );
        let (changed_tx, changed_rx) = watch::channel(0);
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let probes = Probes::new(&local.name);
        let user_events = UserEvents::new(&local.name);
        let sessions = Sessions::default();
        let (sync_tx, sync_rx) = mpsc::channel(16);
        sessions.set_sync(sync_tx.clone());
        super::direct::serve(direct, sessions.clone(), crypto.clone(), cancel.clone());
        let mut public_tags = local.tags.clone();
        public_tags.retain(|k, _| !INTERNAL_TAGS.contains(&k.as_str()));
        let queries = Queries::new(
            &local.name,
            local.addr,
            sessions.clone(),
            crypto.clone(),
            public_tags,
        );
        let exec = RemoteExec::new(
            &local.name,
            local.addr,
            sessions,
            crypto.clone(),
            user_events.clone(),
        );
        let metrics = GossipMetrics::default();
        let driver = Driver {
            foca,
            rt: CountingRuntime::new(metrics.clone()),
            socket: Arc::new(socket),
            members: members.clone(),
            changed: changed_tx,
            timers: DelayQueue::new(),
            parked_gossip: None,
            leaving: HashMap::new(),
            pending_joins: Vec::new(),
            probes: probes.clone(),
            keyring_ops: KeyringOps::new(&local.name, crypto.clone()),
            crypto: crypto.clone(),
            refusals: RefusalLog::default(),
            events,
            user_events: user_events.clone(),
            queries: queries.clone(),
            exec: exec.clone(),
            reap_after,
            reaped: Reaped::default(),
            sync_tx,
            metrics: metrics.clone(),
        };
        let reaped = driver.reaped.clone();
        driver.emit(MemberEventKind::Join, &local);
        tokio::spawn(driver.run(cmd_rx, sync_rx, cancel));
        Gossip {
            cmd: cmd_tx,
            members,
            changed: changed_rx,
            local,
            probes,
            crypto,
            user_events,
            queries,
            exec,
            reaped,
            metrics,
        }
    }

    /// Whether gossip is sealed with a key (Serf's `encrypted` statistic).
    pub fn encrypted(&self) -> bool {
        muster_server::sync::read(&self.crypto).keyring.is_some()
    }

    /// Joins the cluster through `addr` (host:port); waits up to a few seconds for an answer.
    pub async fn join(&self, addr: &str) -> Result<()> {
        let sa = resolve(addr).await?;
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Join(sa, tx))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)??;
        // As Serf's join: the whole member list both ways at once, so this agent knows every
        // member now rather than as gossip brings them.
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::State(tx)).await.is_ok() {
            if let Ok(ours) = rx.await {
                self.exchange(sa, ours).await;
            }
        }
        Ok(())
    }

    /// Push-pull with `addr`; what it answers is applied. A failure only costs speed.
    async fn exchange(&self, addr: SocketAddr, ours: Vec<u8>) {
        match super::direct::push_pull(addr, self.crypto.clone(), ours).await {
            Ok(theirs) => {
                let _ = self.cmd.send(Cmd::Sync(theirs)).await;
            }
            Err(e) => tracing::debug!(error = %e, %addr, "push-pull failed"),
        }
    }

    /// Tells every member this agent is leaving, then leaves the SWIM cluster.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
    }

    /// Marks a failed member as left, here and on every other member.
    pub async fn force_leave(&self, name: &str) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::ForceLeave(name.to_string(), tx))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Applies a keyring operation here and on every live member; `None` without a key.
    pub async fn keyring(&self, op: KeyringOp) -> Option<KeyringOutcome> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Keyring(op, tx)).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Sends a packet (kind byte first) to every live member, twice.
    pub(crate) async fn broadcast(&self, pkt: Vec<u8>) -> Result<()> {
        let sent = self.cmd.send(Cmd::Broadcast(pkt)).await;
        sent.map_err(|_| Error::ShuttingDown)
    }

    pub fn snapshot(&self) -> Vec<Member> {
        let mut v: Vec<Member> = muster_server::sync::read(&self.members)
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.name.cmp(&b.id.name));
        v
    }
}

async fn resolve(addr: &str) -> Result<SocketAddr> {
    let with_port = if addr.parse::<SocketAddr>().is_ok()
        || addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok())
    {
        addr.to_string()
    } else {
        format!("{addr}:8301")
    };
    let found = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| Error::Gossip(format!("cannot resolve {addr}: {e}")))?
        .next();
    found.ok_or_else(|| Error::Gossip(format!("cannot resolve {addr}")))
}

impl Driver {
    /// Reports a member change to the event handlers, without Muster's internal tags.
    fn emit(&self, kind: MemberEventKind, id: &MemberId) {
        let Some(tx) = &self.events else { return };
        let mut tags = id.tags.clone();
        tags.retain(|k, _| !INTERNAL_TAGS.contains(&k.as_str()));
        let (name, addr) = (id.name.clone(), id.addr.ip());
        let member = EventMember { name, addr, tags };
        let _ = tx.send(MemberEvent { kind, member });
    }

    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut syncs: mpsc::Receiver<SyncReq>,
        cancel: CancellationToken,
    ) {
        let mut buf = vec![0u8; 65536];
        let mut tick = tokio::time::interval(TICK);
        let mut probe = tokio::time::interval(COORDINATE_PROBE_EVERY);
        let mut push_pull = tokio::time::interval(PUSH_PULL_EVERY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.on_packet(&buf[..n], from),
                    Err(e) => tracing::debug!(error = %e, "gossip recv failed"),
                },
                Some(t) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)) => {
                    if let Err(e) = self.foca.handle_timer(t.into_inner(), &mut self.rt) {
                        tracing::debug!(error = %e, "gossip timer");
                    }
                }
                Some(cmd) = cmds.recv() => self.on_cmd(cmd).await,
                _ = tick.tick() => {
                    self.expire_joins();
                    self.reap();
                    let out = self.keyring_ops.tick();
                    self.send_all(out);
                }
                _ = probe.tick() => self.send_probe(),
                Some((theirs, reply)) = syncs.recv() => {
                    self.apply_state(&theirs);
                    if let Some(reply) = reply {
                        let _ = reply.send(self.state());
                    }
                }
                _ = push_pull.tick() => self.push_pull_random(),
            }
            self.flush().await;
        }
    }

    fn on_packet(&mut self, sealed: &[u8], from: SocketAddr) {
        if sealed == REFUSAL_NOTICE {
            let has_key = muster_server::sync::read(&self.crypto).keyring.is_some();
            self.refusals.told_refused(from, has_key);
            return;
        }
        let opened = muster_server::sync::read(&self.crypto).open(sealed);
        let (pkt, keyed) = match opened {
            Ok(p) => p,
            Err(why) => {
                if self.refusals.refused(from, why) {
                    let _ = self.socket.try_send_to(REFUSAL_NOTICE, from);
                }
                return;
            }
        };
        match pkt.split_first() {
            Some((&KIND_FOCA, rest)) => match self.foca.handle_data(rest, &mut self.rt) {
                Err(e @ (foca::Error::MalformedPacket | foca::Error::Decode(_))) => {
                    self.undecodable(from, &e.to_string())
                }
                Err(e) => tracing::debug!(error = %e, %from, "gossip: bad packet"),
                Ok(()) => {}
            },
            Some((&KIND_LEAVE, rest)) => match std::str::from_utf8(rest) {
                Ok(name) => self.mark_leaving(name),
                Err(_) => self.undecodable(from, "a leave message that is not UTF-8"),
            },
            Some((&KIND_PING, rest)) => {
                if let Some(ack) = self.probes.on_ping(rest) {
                    self.send_now(ack, from);
                }
            }
            Some((&KIND_ACK, rest)) => self.probes.on_ack(rest),
            // Only a member holding a key may change the keyring, even while plaintext is
            // let through (`encrypt_verify_incoming = false`).
            Some((&KIND_KEYRING_REQ, rest)) if keyed => {
                if let Some(ans) = self.keyring_ops.on_request(rest, from) {
                    self.send_now(ans, from);
                }
            }
            Some((&KIND_KEYRING_ANS, rest)) => self.keyring_ops.on_answer(rest),
            Some((&KIND_USER_EVENT, rest)) => {
                let new = self.user_events.on_packet(rest);
                self.relay(new, &pkt, from, "an undecodable user event");
            }
            Some((&KIND_QUERY, rest)) => {
                let new = self.queries.on_packet(rest);
                self.relay(new, &pkt, from, "an undecodable query");
            }
            Some((&KIND_EXEC, rest)) => {
                let new = self.exec.on_packet(rest);
                self.relay(new, &pkt, from, "an undecodable exec request");
            }
            Some((&KIND_KEYRING_REQ, _)) => self.undecodable(from, "an unsealed keyring request"),
            _ => self.undecodable(from, "unknown packet kind"),
        }
    }

    /// Passes a request new here (`Some(true)`) on to a few random members, so one the
    /// sender does not see still gets it; `None` was undecodable.
    fn relay(&mut self, new: Option<bool>, pkt: &[u8], from: SocketAddr, what: &str) {
        match new {
            None => self.undecodable(from, what),
            Some(true) => {
                let live = self.foca.iter_members().map(|m| m.id().addr).collect();
                for to in UserEvents::relay_targets(live, from) {
                    self.send_now(pkt.to_vec(), to);
                }
            }
            Some(false) => {}
        }
    }

    /// A packet that opened (or needed no opening) but is not ours: most likely sealed with
    /// a gossip key while this agent has none, or plaintext let through by
    /// `encrypt_verify_incoming = false`.
    fn undecodable(&mut self, from: SocketAddr, why: &str) {
        let has_key = muster_server::sync::read(&self.crypto).keyring.is_some();
        if self.refusals.undecodable(from, why, has_key) {
            let _ = self.socket.try_send_to(REFUSAL_NOTICE, from);
        }
    }

    /// Seals a packet and sends it without waiting (a full socket buffer drops it, as UDP may).
    fn send_now(&self, pkt: Vec<u8>, to: SocketAddr) {
        let wire = muster_server::sync::read(&self.crypto).seal(pkt);
        let _ = self.socket.try_send_to(&wire, to);
    }

    fn send_all(&self, out: Outgoing) {
        for (pkt, to) in out {
            self.send_now(pkt, to);
        }
    }

    /// Seals a packet and sends it.
    async fn send(&self, pkt: Vec<u8>, to: SocketAddr) -> std::io::Result<usize> {
        let wire = muster_server::sync::read(&self.crypto).seal(pkt);
        self.socket.send_to(&wire, to).await
    }

    /// Pings one random live member for a round trip (see `coordinate::probe`).
    fn send_probe(&mut self) {
        let live: Vec<&MemberId> = self.foca.iter_members().map(|m| m.id()).collect();
        if live.is_empty() {
            return;
        }
        let target = live[rand::random_range(0..live.len())];
        let (pkt, addr) = (self.probes.ping(&target.name), target.addr);
        self.send_now(pkt, addr);
    }

    /// Records a graceful leave: `leaving` until foca reports the member down, then `left`.
    fn mark_leaving(&mut self, name: &str) {
        self.leaving.insert(name.to_string(), Instant::now());
        let mut m = muster_server::sync::write(&self.members);
        if let Some(member) = m.get_mut(name) {
            let next = match member.status {
                Status::Alive => Status::Leaving,
                Status::Failed => Status::Left,
                s => s,
            };
            if next != member.status {
                member.status = next;
                member.since = Instant::now();
                if next == Status::Left {
                    self.emit(MemberEventKind::Leave, &member.id);
                }
                drop(m);
                self.changed.send_modify(|v| *v += 1);
            }
        }
    }

    async fn broadcast_control(&self, kind: u8, body: &[u8]) {
        let targets: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let mut pkt = vec![kind];
        pkt.extend_from_slice(body);
        // UDP may drop one; send twice.
        for _ in 0..2 {
            for t in &targets {
                let _ = self.send(pkt.clone(), *t).await;
            }
        }
    }

    async fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join(addr, reply) => {
                let dst = MemberId {
                    addr,
                    name: String::new(),
                    tags: BTreeMap::new(),
                    incarnation: 0,
                };
                match self.foca.announce(dst, &mut self.rt) {
                    Ok(()) => {
                        if self.foca.iter_members().any(|m| m.id().addr == addr) {
                            let _ = reply.send(Ok(()));
                        } else {
                            self.pending_joins.push((Instant::now(), reply));
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Gossip(e.to_string())));
                    }
                }
            }
            Cmd::Leave(reply) => {
                let name = self.foca.identity().name.clone();
                self.broadcast_control(KIND_LEAVE, name.as_bytes()).await;
                if let Err(e) = self.foca.leave_cluster(&mut self.rt) {
                    tracing::debug!(error = %e, "gossip leave");
                }
                self.flush().await;
                let _ = reply.send(());
            }
            Cmd::Keyring(op, reply) => {
                let members: Vec<(String, SocketAddr)> = self
                    .foca
                    .iter_members()
                    .map(|m| (m.id().name.clone(), m.id().addr))
                    .collect();
                let out = self.keyring_ops.start(op, members, reply);
                self.send_all(out);
            }
            Cmd::State(reply) => {
                let _ = reply.send(self.state());
            }
            Cmd::Sync(theirs) => self.apply_state(&theirs),
            Cmd::Broadcast(pkt) => {
                if let Some((kind, body)) = pkt.split_first() {
                    self.broadcast_control(*kind, body).await;
                }
            }
            Cmd::ForceLeave(name, reply) => {
                let known = muster_server::sync::read(&self.members)
                    .get(&name)
                    .map(|m| m.status);
                match known {
                    None => {
                        let _ = reply.send(Err(Error::Gossip(format!(
                            "No node named {name:?} in the member list"
                        ))));
                    }
                    Some(_) => {
                        self.broadcast_control(KIND_LEAVE, name.as_bytes()).await;
                        self.mark_leaving(&name);
                        let _ = reply.send(Ok(()));
                    }
                }
            }
        }
    }

    /// This agent's member list for push-pull: every member foca knows, in any state, and
    /// this agent itself.
    fn state(&self) -> Vec<u8> {
        let mut all: Vec<foca::Member<MemberId>> =
            self.foca.iter_membership_state().cloned().collect();
        all.push(foca::Member::alive(self.foca.identity().clone()));
        postcard::to_allocvec(&all).unwrap_or_default()
    }

    /// Applies a member list from push-pull (as news to pass on, as Serf merges remote state).
    fn apply_state(&mut self, theirs: &[u8]) {
        match postcard::from_bytes::<Vec<foca::Member<MemberId>>>(theirs) {
            Ok(members) => {
                if let Err(e) = self
                    .foca
                    .apply_many(members.into_iter(), true, &mut self.rt)
                {
                    tracing::debug!(error = %e, "push-pull: applying members");
                }
            }
            Err(e) => tracing::debug!(error = %e, "push-pull: undecodable member list"),
        }
    }

    /// Starts a push-pull with one random live member, in the background.
    fn push_pull_random(&self) {
        use rand::seq::IteratorRandom;
        let Some(addr) = self
            .foca
            .iter_members()
            .map(|m| m.id().addr)
            .choose(&mut rand::rng())
        else {
            return;
        };
        let (ours, crypto, tx) = (self.state(), self.crypto.clone(), self.sync_tx.clone());
        tokio::spawn(async move {
            match super::direct::push_pull(addr, crypto, ours).await {
                Ok(theirs) => {
                    let _ = tx.send((theirs, None)).await;
                }
                Err(e) => tracing::debug!(error = %e, %addr, "push-pull failed"),
            }
        });
    }

    /// Forgets members failed or left for longer than `reap_after` says: `member-reap` for
    /// them, and the leader takes them out of the catalog.
    fn reap(&mut self) {
        let after = self.reap_after;
        let gone: Vec<Member> = {
            let mut m = muster_server::sync::write(&self.members);
            let due: Vec<String> = m
                .values()
                .filter(|x| match x.status {
                    Status::Failed => x.since.elapsed() >= after.failed,
                    Status::Left => x.since.elapsed() >= after.left,
                    _ => false,
                })
                .map(|x| x.id.name.clone())
                .collect();
            due.iter().filter_map(|n| m.remove(n)).collect()
        };
        if gone.is_empty() {
            return;
        }
        let mut reaped = muster_server::sync::lock(&self.reaped);
        for m in &gone {
            tracing::info!(member = %m.id.name, status = m.status.as_str(), "member reaped");
            reaped.insert(m.id.name.clone());
            self.emit(MemberEventKind::Reap, &m.id);
        }
        drop(reaped);
        self.changed.send_modify(|v| *v += 1);
    }

    fn expire_joins(&mut self) {
        let timeout = Duration::from_secs(5);
        let (expired, keep): (Vec<_>, Vec<_>) = self
            .pending_joins
            .drain(..)
            .partition(|(t, _)| t.elapsed() > timeout);
        self.pending_joins = keep;
        for (_, r) in expired {
            let _ = r.send(Err(Error::Gossip(
                "no response from the join address within 5s".into(),
            )));
        }
    }

    async fn flush(&mut self) {
        while let Some((to, data)) = self.rt.to_send() {
            let mut pkt = Vec::with_capacity(data.len() + 1);
            pkt.push(KIND_FOCA);
            pkt.extend_from_slice(&data);
            if let Err(e) = self.send(pkt, to.addr).await {
                tracing::debug!(error = %e, to = %to.addr, "gossip send failed");
            }
        }
        let quiet = self.foca.updates_backlog() == 0;
        while let Some((after, timer)) = self.rt.to_schedule() {
            if quiet && matches!(timer, Timer::PeriodicGossip(_)) {
                self.parked_gossip = Some(timer);
            } else {
                self.timers.insert(timer, after);
            }
        }
        if !quiet {
            if let Some(timer) = self.parked_gossip.take() {
                self.timers.insert(timer, Duration::ZERO);
            }
        }
        let mut changed = false;
        while let Some(n) = self.rt.to_notify() {
            changed |= self.on_notification(n);
        }
        if changed {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    fn on_notification(&mut self, n: OwnedNotification<MemberId>) -> bool {
        let mut m = muster_server::sync::write(&self.members);
        match n {
            OwnedNotification::MemberUp(id) | OwnedNotification::Rename(_, id) => {
                tracing::info!(member = %id.name, addr = %id.addr, "member alive");
                muster_server::sync::lock(&self.reaped).remove(&id.name);
                self.leaving.remove(&id.name);
                match m.get(&id.name) {
                    Some(p) if p.status == Status::Alive => {
                        if p.id.addr != id.addr || p.id.tags != id.tags {
                            self.emit(MemberEventKind::Update, &id);
                        }
                    }
                    _ => self.emit(MemberEventKind::Join, &id),
                }
                m.insert(
                    id.name.clone(),
                    Member {
                        id,
                        status: Status::Alive,
                        since: Instant::now(),
                    },
                );
                if !self.pending_joins.is_empty() {
                    for (_, r) in self.pending_joins.drain(..) {
                        let _ = r.send(Ok(()));
                    }
                }
                true
            }
            OwnedNotification::MemberDown(id) => {
                let status = if self.leaving.contains_key(&id.name) {
                    Status::Left
                } else {
                    Status::Failed
                };
                // The same agent may already be back under a new address or incarnation: a
                // Down only applies to the identity currently recorded under its name.
                if m.get(&id.name)
                    .is_some_and(|cur| cur.id != id && cur.status == Status::Alive)
                {
                    return false;
                }
                tracing::info!(member = %id.name, status = status.as_str(), "member down");
                self.probes.forget(&id.name);
                let kind = match status {
                    Status::Left => MemberEventKind::Leave,
                    _ => {
                        self.metrics.dead.inc();
                        MemberEventKind::Failed
                    }
                };
                if m.get(&id.name)
                    .is_none_or(|p| p.status != status || p.id != id)
                {
                    self.emit(kind, &id);
                }
                m.insert(
                    id.name.clone(),
                    Member {
                        id,
                        status,
                        since: Instant::now(),
                    },
                );
                true
            }
            _ => false,
        }
    }
}
