//! LAN gossip membership: foca (SWIM with suspicion) over UDP on the serf LAN port.
//!
//! foca only knows up and down. Serf's "left" (a graceful leave) is told apart from "failed"
//! by a small control message an agent sends to every member before it leaves; a `Down` seen
//! after it means left, otherwise failed.
//!
//! With a gossip key, every packet on the socket (foca's, the control messages, the
//! coordinate probes, the keyring operations) is sealed and opened by `keyring::Crypto`;
//! gossip has no TCP side.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::coordinate::{Probes, KIND_ACK, KIND_PING};
use super::keyring::{RefusalLog, SharedCrypto, REFUSAL_NOTICE};
use super::keyring_ops::{KeyringOps, Outgoing, KIND_KEYRING_ANS, KIND_KEYRING_REQ};
use crate::{Error, Result};
use muster_api::keyring::{KeyringOp, KeyringOutcome};

/// A member's identity on the wire: its address, name and Serf-style tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberId {
    pub addr: SocketAddr,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    /// Bumped when the same agent rejoins after being declared down.
    pub incarnation: u32,
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(MemberId {
            incarnation: self.incarnation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}

/// Serf's member states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Alive,
    Leaving,
    Left,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Leaving => "leaving",
            Status::Left => "left",
            Status::Failed => "failed",
        }
    }

    /// Serf's numeric code in `/v1/agent/members`.
    pub fn code(self) -> u8 {
        match self {
            Status::Alive => 1,
            Status::Leaving => 2,
            Status::Left => 3,
            Status::Failed => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: MemberId,
    pub status: Status,
    pub since: Instant,
}

/// Membership as this agent sees it, keyed by node name. Includes itself.
pub type Members = Arc<RwLock<HashMap<String, Member>>>;

/// Packets start with a kind byte: foca's SWIM traffic, or Muster's control messages.
const KIND_FOCA: u8 = 0;
const KIND_LEAVE: u8 = 1;

enum Cmd {
    Join(SocketAddr, oneshot::Sender<Result<()>>),
    Leave(oneshot::Sender<()>),
    ForceLeave(String, oneshot::Sender<Result<()>>),
    Keyring(KeyringOp, oneshot::Sender<Option<KeyringOutcome>>),
}

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
}

type Rt = AccumulatingRuntime<MemberId>;

struct Driver {
    foca: Foca<MemberId, PostcardCodec, rand::rngs::StdRng, foca::NoCustomBroadcast>,
    rt: Rt,
    socket: Arc<UdpSocket>,
    members: Members,
    changed: watch::Sender<u64>,
    timers: mpsc::UnboundedSender<Timer<MemberId>>,
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
}

impl Gossip {
    /// Starts gossip on an already-bound socket.
    pub fn start(
        socket: UdpSocket,
        local: MemberId,
        crypto: SharedCrypto,
        cancel: CancellationToken,
    ) -> Gossip {
        let mut config = foca::Config::new_lan(NonZeroU32::MIN.saturating_add(15));
        // Keep down members' identities around long enough that a restarted agent with the
        // same address is told apart by its incarnation.
        config.remove_down_after = Duration::from_secs(60);
        config.max_packet_size = std::num::NonZeroUsize::new(1400).expect("nonzero");
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
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let probes = Probes::new(&local.name);
        let driver = Driver {
            foca,
            rt: AccumulatingRuntime::new(),
            socket: Arc::new(socket),
            members: members.clone(),
            changed: changed_tx,
            timers: timer_tx,
            leaving: HashMap::new(),
            pending_joins: Vec::new(),
            probes: probes.clone(),
            keyring_ops: KeyringOps::new(&local.name, crypto.clone()),
            crypto: crypto.clone(),
            refusals: RefusalLog::default(),
        };
        tokio::spawn(driver.run(cmd_rx, timer_rx, cancel));
        Gossip {
            cmd: cmd_tx,
            members,
            changed: changed_rx,
            local,
            probes,
            crypto,
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
        rx.await.map_err(|_| Error::ShuttingDown)?
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
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut timers: mpsc::UnboundedReceiver<Timer<MemberId>>,
        cancel: CancellationToken,
    ) {
        let mut buf = vec![0u8; 65536];
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut probe = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.on_packet(&buf[..n], from),
                    Err(e) => tracing::debug!(error = %e, "gossip recv failed"),
                },
                Some(t) = timers.recv() => {
                    if let Err(e) = self.foca.handle_timer(t, &mut self.rt) {
                        tracing::debug!(error = %e, "gossip timer");
                    }
                }
                Some(cmd) = cmds.recv() => self.on_cmd(cmd).await,
                _ = tick.tick() => {
                    self.expire_joins();
                    let out = self.keyring_ops.tick();
                    self.send_all(out);
                }
                _ = probe.tick() => self.send_probe(),
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
            Some((&KIND_KEYRING_REQ, _)) => self.undecodable(from, "an unsealed keyring request"),
            _ => self.undecodable(from, "unknown packet kind"),
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
        while let Some((after, timer)) = self.rt.to_schedule() {
            let tx = self.timers.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(timer);
            });
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
                self.leaving.remove(&id.name);
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
