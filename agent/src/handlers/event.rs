//! The events handlers run for, and what a handler gets for each: its `SERF_EVENT` name, the
//! extra environment, and its stdin (one line per member for member events, as Serf writes
//! them).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Serf's member event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberEventKind {
    Join,
    Update,
    Leave,
    Failed,
    Reap,
}

impl MemberEventKind {
    /// The `SERF_EVENT` value, which filters also name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MemberEventKind::Join => "member-join",
            MemberEventKind::Update => "member-update",
            MemberEventKind::Leave => "member-leave",
            MemberEventKind::Failed => "member-failed",
            MemberEventKind::Reap => "member-reap",
        }
    }
}

/// A member as a handler sees it: its name, gossip IP and public tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMember {
    pub name: String,
    pub addr: IpAddr,
    pub tags: BTreeMap<String, String>,
}

/// One member's change, as gossip reports it; the coalescer gathers them into [`Event`]s.
#[derive(Debug, Clone)]
pub struct MemberEvent {
    pub kind: MemberEventKind,
    pub member: EventMember,
}

/// Where a query handler's output goes: the first handler to succeed answers, once.
#[derive(Debug, Clone)]
pub(crate) struct Responder(Arc<Mutex<Option<oneshot::Sender<Vec<u8>>>>>);

impl Responder {
    pub(crate) fn new(tx: oneshot::Sender<Vec<u8>>) -> Responder {
        Responder(Arc::new(Mutex::new(Some(tx))))
    }

    /// Answers with `out` unless an earlier handler already has.
    pub(crate) fn respond(&self, out: Vec<u8>) {
        if let Some(tx) = muster_server::sync::lock(&self.0).take() {
            let _ = tx.send(out);
        }
    }
}

impl PartialEq for Responder {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Responder {}

/// What one handler call is about: member changes, user events and queries. Each names its
/// `SERF_EVENT` type, its filter name, its environment and its stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Members that changed the same way within one coalescing window.
    Member {
        kind: MemberEventKind,
        members: Vec<EventMember>,
    },
    /// A user event this agent received (its filters matched here).
    User {
        name: String,
        ltime: u64,
        payload: Vec<u8>,
    },
    /// A query this agent matched: a handler's output (exit 0) is its response.
    Query {
        name: String,
        ltime: u64,
        payload: Vec<u8>,
        responder: Responder,
    },
}

impl Event {
    /// `SERF_EVENT`, and the event type filters match.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Event::Member { kind, .. } => kind.as_str(),
            Event::User { .. } => "user",
            Event::Query { .. } => "query",
        }
    }

    /// The name `user:NAME` and `query:NAME` filters match; member events have none.
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Event::Member { .. } => None,
            Event::User { name, .. } | Event::Query { name, .. } => Some(name),
        }
    }

    /// Environment beyond `SERF_EVENT` and the `SERF_SELF_*`/`SERF_TAG_*` variables.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        match self {
            Event::Member { .. } => Vec::new(),
            Event::User { name, ltime, .. } => vec![
                ("SERF_USER_EVENT".to_string(), name.clone()),
                ("SERF_USER_LTIME".to_string(), ltime.to_string()),
            ],
            Event::Query { name, ltime, .. } => vec![
                ("SERF_QUERY_NAME".to_string(), name.clone()),
                ("SERF_QUERY_LTIME".to_string(), ltime.to_string()),
            ],
        }
    }

    /// Hands a successful handler's output to the query's asker; other events have none.
    pub(crate) fn respond(&self, stdout: &[u8]) {
        if let Event::Query { responder, .. } = self {
            responder.respond(stdout.to_vec());
        }
    }

    /// The handler's stdin: `NAME\tADDR\tROLE\tTAGS\n` per member, tags as `k=v,k=v`, with
    /// tabs and newlines in the name, role and tags written as `\t` and `\n` (Serf's
    /// `memberEventStdin`). A user event's or query's stdin is its payload, with a newline
    /// added when it lacks one (Serf's `streamPayload`).
    pub(crate) fn stdin(&self) -> Vec<u8> {
        match self {
            Event::User { payload, .. } | Event::Query { payload, .. } => {
                let mut out = payload.clone();
                if out.last().is_some_and(|b| *b != b'\n') {
                    out.push(b'\n');
                }
                out
            }
            Event::Member { members, .. } => {
                let mut out = String::new();
                for m in members {
                    let tags: Vec<String> =
                        m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let role = m.tags.get("role").map_or("", String::as_str);
                    out.push_str(&format!(
                        "{}\t{}\t{}\t{}\n",
                        clean(&m.name),
                        m.addr,
                        clean(role),
                        clean(&tags.join(","))
                    ));
                }
                out.into_bytes()
            }
        }
    }
}

/// Serf's `eventClean`: a field keeps to its column and its line.
fn clean(v: &str) -> String {
    v.replace('\t', "\\t").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_lines_are_serfs() {
        let m = |name: &str, role: &str| EventMember {
            name: name.into(),
            addr: "10.0.0.7".parse().unwrap(),
            tags: [("role", role), ("dc", "dc1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let e = Event::Member {
            kind: MemberEventKind::Failed,
            members: vec![m("node1", "consul"), m("we\tird\n", "node")],
        };
        assert_eq!(e.kind(), "member-failed");
        assert_eq!(
            String::from_utf8(e.stdin()).unwrap(),
            "node1\t10.0.0.7\tconsul\tdc=dc1,role=consul\n\
             we\\tird\\n\t10.0.0.7\tnode\tdc=dc1,role=node\n"
        );
    }

    #[test]
    fn a_user_event_is_serfs() {
        let e = Event::User {
            name: "deploy".into(),
            ltime: 9,
            payload: b"v1".to_vec(),
        };
        assert_eq!((e.kind(), e.name()), ("user", Some("deploy")));
        assert_eq!(e.stdin(), b"v1\n");
        assert!(e
            .env()
            .contains(&("SERF_USER_LTIME".to_string(), "9".to_string())));
    }
}
