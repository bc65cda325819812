//! User events on the gossip layer, never through Raft: Serf's Lamport event clock, the
//! filters Consul's `shouldProcessUserEvent` applies (node name, local service, its tags),
//! deduplication by (LTime, ID) whatever the gossip retransmits, the last 256 matching events
//! for `/v1/event/list` with a wake-up for its blocking queries, and the hand-off to the
//! event handlers.
//!
//! The agent firing an event ingests it itself, then gossip sends the packet
//! ([`KIND_USER_EVENT`]) to every member it knows alive, twice; each member ingests it once
//! and passes a new one on to two random members, for those the sender does not see.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use muster_api::event::{FireRequest, UserEvent};
use tokio::sync::{mpsc, watch};

use super::recent::Recent;
use crate::handlers::Event;

/// Kind byte of a user event on the gossip socket.
pub(crate) const KIND_USER_EVENT: u8 = 0x40;
/// Events kept for `/v1/event/list` (Consul's ring).
const RING: usize = 256;
/// (LTime, ID) pairs remembered to drop a repeated event (Serf's event buffer).
const SEEN: usize = 1024;
/// The largest encoded event sent: one UDP packet with room for the seal, whatever the
/// filters add to the name and payload.
const MAX_PACKET: usize = 1200;
/// Members a member passes a new event on to.
const RELAY: usize = 2;
/// The newest event version this agent understands.
const MAX_VERSION: u32 = 1;

/// This agent's services as the filters see them: (ID, tags).
pub(crate) type ServicesFn = Box<dyn Fn() -> Vec<(String, Vec<String>)> + Send + Sync>;

struct State {
    seen: Recent<(u64, String)>,
    ring: VecDeque<UserEvent>,
}

struct Inner {
    node: String,
    clock: AtomicU64,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    handlers: Mutex<Option<mpsc::UnboundedSender<Event>>>,
    services: RwLock<Option<ServicesFn>>,
}

/// One agent's user events. Cheap to clone.
#[derive(Clone)]
pub(crate) struct UserEvents(Arc<Inner>);

fn compile(what: &str, re: &str) -> Result<Option<regex_lite::Regex>, String> {
    if re.is_empty() {
        return Ok(None);
    }
    regex_lite::Regex::new(re)
        .map(Some)
        .map_err(|e| format!("Invalid {what} filter: {e}"))
}

/// Consul's checks of event filters: each a regex, and a tag only with a service.
pub(crate) fn check_filters(node: &str, service: &str, tag: &str) -> Result<(), String> {
    if !tag.is_empty() && service.is_empty() {
        return Err("Cannot provide tag filter without service filter".into());
    }
    compile("node", node)?;
    compile("service", service)?;
    compile("tag", tag)?;
    Ok(())
}

impl UserEvents {
    pub(crate) fn new(node: &str) -> UserEvents {
        UserEvents(Arc::new(Inner {
            node: node.to_string(),
            clock: AtomicU64::new(0),
            state: Mutex::new(State {
                seen: Recent::new(SEEN),
                ring: VecDeque::new(),
            }),
            changed: watch::channel(0).0,
            handlers: Mutex::default(),
            services: RwLock::default(),
        }))
    }

    /// Where matching events go for the event handlers.
    pub(crate) fn set_handlers(&self, tx: mpsc::UnboundedSender<Event>) {
        *muster_server::sync::lock(&self.0.handlers) = Some(tx);
    }

    /// How the service and tag filters read this agent's services.
    pub(crate) fn set_services(&self, f: ServicesFn) {
        *muster_server::sync::write(&self.0.services) = Some(f);
    }

    /// Checks the request (Consul's `validateUserEventParams`), stamps it with the next
    /// Lamport time and a new ID, ingests it here, and returns it with its packet.
    pub(crate) fn fire(&self, req: FireRequest) -> Result<(UserEvent, Vec<u8>), String> {
        if req.name.is_empty() {
            return Err("User event missing name".into());
        }
        check_filters(&req.node_filter, &req.service_filter, &req.tag_filter)?;
        let ev = UserEvent {
            id: muster_server::new_uuid(),
            name: req.name,
            payload: req.payload,
            node_filter: req.node_filter,
            service_filter: req.service_filter,
            tag_filter: req.tag_filter,
            version: MAX_VERSION,
            ltime: self.0.clock.fetch_add(1, Ordering::SeqCst),
        };
        let mut pkt = vec![KIND_USER_EVENT];
        serde_json::to_writer(&mut pkt, &ev).map_err(|e| e.to_string())?;
        if pkt.len() > MAX_PACKET {
            return Err(format!(
                "user event exceeds the limit of {MAX_PACKET} bytes encoded, filters included"
            ));
        }
        self.ingest(ev.clone());
        Ok((ev, pkt))
    }

    /// A member's packet, ingested: whether it was new here (`None`: undecodable).
    pub(crate) fn on_packet(&self, body: &[u8]) -> Option<bool> {
        let ev = serde_json::from_slice::<UserEvent>(body).ok()?;
        Some(self.ingest(ev))
    }

    /// Witnesses the event's time, drops a repeat, applies the filters, keeps it and hands it
    /// to the handlers. Whether it was new (filtered out or not).
    fn ingest(&self, ev: UserEvent) -> bool {
        let now = self
            .0
            .clock
            .fetch_max(ev.ltime.saturating_add(1), Ordering::SeqCst);
        // Older than the seen-set reaches back: it could be a repeat, so it is dropped (Serf's
        // rule for its event buffer).
        if ev.ltime.saturating_add(SEEN as u64) < now {
            return false;
        }
        let key = (ev.ltime, ev.id.clone());
        {
            let mut st = muster_server::sync::lock(&self.0.state);
            if !st.seen.insert(key) {
                return false;
            }
        }
        if !self.should_process(&ev) {
            return true;
        }
        tracing::debug!(name = %ev.name, id = %ev.id, ltime = ev.ltime, "user event received");
        if let Some(tx) = muster_server::sync::lock(&self.0.handlers).as_ref() {
            let _ = tx.send(Event::User {
                name: ev.name.clone(),
                ltime: ev.ltime,
                payload: ev.payload.clone().unwrap_or_default(),
            });
        }
        {
            let mut st = muster_server::sync::lock(&self.0.state);
            st.ring.push_back(ev);
            if st.ring.len() > RING {
                st.ring.pop_front();
            }
        }
        self.0.changed.send_modify(|v| *v += 1);
        true
    }

    /// Consul's `shouldProcessUserEvent`: the node name, and a local service (by ID) with,
    /// when a tag filter is given, a matching tag. A newer version is only warned about.
    fn should_process(&self, ev: &UserEvent) -> bool {
        if ev.version > MAX_VERSION {
            tracing::warn!(
                version = ev.version,
                name = %ev.name,
                "user event version may have unsupported features"
            );
        }
        self.matches(&ev.node_filter, &ev.service_filter, &ev.tag_filter)
    }

    /// Whether this agent matches Consul's event filters: the node name, and a local service
    /// (by ID) with, when a tag filter is given, a matching tag. A filter that is not a regex
    /// matches nothing. Remote exec targets nodes the same way.
    pub(crate) fn matches(&self, node: &str, service: &str, tag: &str) -> bool {
        let (Ok(node), Ok(service), Ok(tag)) = (
            compile("node", node),
            compile("service", service),
            compile("tag", tag),
        ) else {
            return false;
        };
        if node.is_some_and(|re| !re.is_match(&self.0.node)) {
            return false;
        }
        let Some(service) = service else {
            return true;
        };
        let services = match muster_server::sync::read(&self.0.services).as_ref() {
            Some(f) => f(),
            None => Vec::new(),
        };
        services.iter().any(|(id, tags)| {
            service.is_match(id)
                && tag
                    .as_ref()
                    .is_none_or(|t| tags.iter().any(|x| t.is_match(x)))
        })
    }

    /// Where a member passes on an event new to it: a few random live members (`members`)
    /// other than the one it came `from`, so a member the sender does not see still gets it.
    pub(crate) fn relay_targets(members: Vec<SocketAddr>, from: SocketAddr) -> Vec<SocketAddr> {
        use rand::seq::IndexedRandom;
        let others: Vec<SocketAddr> = members.into_iter().filter(|a| *a != from).collect();
        others
            .choose_multiple(&mut rand::rng(), RELAY)
            .copied()
            .collect()
    }

    /// The events kept, oldest first, and a receiver subscribed before they were read.
    pub(crate) fn list(&self) -> (Vec<UserEvent>, watch::Receiver<u64>) {
        let rx = self.0.changed.subscribe();
        let events = muster_server::sync::lock(&self.0.state)
            .ring
            .iter()
            .cloned()
            .collect();
        (events, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, node: &str, service: &str, tag: &str) -> FireRequest {
        FireRequest {
            name: name.into(),
            node_filter: node.into(),
            service_filter: service.into(),
            tag_filter: tag.into(),
            payload: Some(b"p".to_vec()),
        }
    }

    #[tokio::test]
    async fn an_event_is_ingested_once_and_filtered() {
        let a = UserEvents::new("node-a");
        let b = UserEvents::new("node-b");
        let (tx, mut rx) = mpsc::unbounded_channel();
        b.set_handlers(tx);
        b.set_services(Box::new(|| vec![("web1".into(), vec!["v2".into()])]));
        let (ev, pkt) = a.fire(req("deploy", "", "", "")).unwrap();
        assert_eq!(a.list().0, vec![ev.clone()]);
        // Retransmissions are dropped.
        assert_eq!(b.on_packet(&pkt[1..]), Some(true));
        assert_eq!(b.on_packet(&pkt[1..]), Some(false));
        assert_eq!(b.on_packet(b"junk"), None);
        assert_eq!(b.list().0.len(), 1);
        assert!(matches!(rx.try_recv(), Ok(Event::User { ltime: 0, .. })));
        assert!(rx.try_recv().is_err());
        // b witnessed time 0: its next event is later.
        let (ev2, _) = b.fire(req("x", "", "", "")).unwrap();
        assert_eq!(ev2.ltime, 1);
        let _ = rx.try_recv();
        // Filters: node, service, service with tag.
        for (r, want) in [
            (req("n", "^node-a$", "", ""), false),
            (req("n", "b", "", ""), true),
            (req("s", "", "^web1$", ""), true),
            (req("s", "", "^web$", ""), false),
            (req("s", "", "db", ""), false),
            (req("t", "", "web", "v1"), false),
            (req("t", "", "web", "v2"), true),
        ] {
            let (_, pkt) = a.fire(r).unwrap();
            b.on_packet(&pkt[1..]);
            assert_eq!(rx.try_recv().is_ok(), want);
        }
    }

    #[test]
    fn an_event_older_than_the_seen_set_is_dropped() {
        let a = UserEvents::new("a");
        let (old, _) = a.fire(req("old", "", "", "")).unwrap();
        let b = UserEvents::new("b");
        let new = UserEvent {
            ltime: 5000,
            ..old.clone()
        };
        b.on_packet(&serde_json::to_vec(&new).unwrap());
        b.on_packet(&serde_json::to_vec(&old).unwrap());
        assert_eq!(b.list().0, vec![new]);
    }

    #[test]
    fn a_new_event_is_passed_on_to_two_others_than_its_sender() {
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let from = addr(1);
        for _ in 0..20 {
            let to = UserEvents::relay_targets((1..=5).map(addr).collect(), from);
            assert_eq!(to.len(), 2);
            assert!(!to.contains(&from) && to[0] != to[1]);
        }
        assert_eq!(UserEvents::relay_targets(vec![from], from), vec![]);
    }

    #[test]
    fn bad_requests_are_refused() {
        let a = UserEvents::new("a");
        assert!(a.fire(req("", "", "", "")).is_err());
        assert!(a.fire(req("n", "", "", "v1")).is_err());
        let e = a.fire(req("n", "(", "", "")).unwrap_err();
        assert!(e.starts_with("Invalid node filter"), "{e}");
        let e = a.fire(req("n", &"x".repeat(2000), "", "")).unwrap_err();
        assert!(e.contains("1200 bytes"), "{e}");
        assert!(a.list().0.is_empty());
    }
}
