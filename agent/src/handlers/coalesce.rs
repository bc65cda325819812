//! Member event coalescing, as Serf's `memberEventCoalescer`: changes arriving together are
//! gathered until gossip has been quiet for `QUIET` (or `MAX` has passed since the first),
//! then delivered as one event per type, each member under its latest change. A member whose
//! latest change is the one it was last delivered with (a flap back within the window) is
//! not delivered again; updates always are.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::event::{Event, EventMember, MemberEvent, MemberEventKind};

/// How long gossip must be quiet before the gathered changes are delivered: long enough for
/// a failure's news to reach everyone (gossiped to 4 every 100 ms), short against detection.
pub(crate) const QUIET: Duration = Duration::from_millis(100);
/// The longest a change waits while others keep arriving.
pub(crate) const MAX: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Coalescer {
    /// Each member's latest change in the current window.
    latest: HashMap<String, (MemberEventKind, EventMember)>,
    /// The change each member was last delivered with.
    delivered: HashMap<String, MemberEventKind>,
}

impl Coalescer {
    pub(crate) fn add(&mut self, e: MemberEvent) {
        self.latest
            .insert(e.member.name.clone(), (e.kind, e.member));
    }

    /// The window's events: one per type, in a fixed type order, members by name.
    pub(crate) fn flush(&mut self) -> Vec<Event> {
        let mut by_kind: BTreeMap<MemberEventKind, Vec<EventMember>> = BTreeMap::new();
        for (name, (kind, member)) in self.latest.drain() {
            let again = self.delivered.get(&name) == Some(&kind);
            if again && kind != MemberEventKind::Update {
                continue;
            }
            self.delivered.insert(name, kind);
            by_kind.entry(kind).or_default().push(member);
        }
        by_kind
            .into_iter()
            .map(|(kind, mut members)| {
                members.sort_by(|a, b| a.name.cmp(&b.name));
                Event::Member { kind, members }
            })
            .collect()
    }
}

/// Reads gossip's member changes and hands the coalesced events to `out`.
pub(crate) async fn run(
    mut changes: mpsc::UnboundedReceiver<MemberEvent>,
    out: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) {
    let mut c = Coalescer::default();
    while let Some(first) = super::next(&mut changes, &cancel).await {
        c.add(first);
        let cap = Instant::now() + MAX;
        let mut quiet = Instant::now() + QUIET;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(quiet.min(cap)) => break,
                e = changes.recv() => match e {
                    Some(e) => {
                        c.add(e);
                        quiet = Instant::now() + QUIET;
                    }
                    None => break,
                },
            }
        }
        for e in c.flush() {
            if out.send(e).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: MemberEventKind, name: &str) -> MemberEvent {
        MemberEvent {
            kind,
            member: EventMember {
                name: name.into(),
                addr: "127.0.0.1".parse().unwrap(),
                tags: BTreeMap::new(),
            },
        }
    }

    fn names(e: &Event) -> (&'static str, Vec<&str>) {
        let Event::Member { members, .. } = e else {
            panic!("not a member event: {e:?}");
        };
        (e.kind(), members.iter().map(|m| m.name.as_str()).collect())
    }

    #[test]
    fn one_event_per_type_latest_change_wins() {
        use MemberEventKind::*;
        let mut c = Coalescer::default();
        for (k, n) in [(Join, "b"), (Join, "a"), (Join, "c"), (Failed, "c")] {
            c.add(change(k, n));
        }
        let out = c.flush();
        let got: Vec<_> = out.iter().map(names).collect();
        assert_eq!(
            got,
            [
                ("member-join", vec!["a", "b"]),
                ("member-failed", vec!["c"])
            ]
        );
        // A flap back to what was delivered is not delivered again; an update always is.
        c.add(change(Failed, "a"));
        c.add(change(Join, "a"));
        c.add(change(Update, "b"));
        assert_eq!(
            c.flush().iter().map(names).collect::<Vec<_>>(),
            [("member-update", vec!["b"])]
        );
        c.add(change(Update, "b"));
        assert_eq!(c.flush().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn changes_together_come_as_one_call() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (out_tx, mut out) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, out_tx, CancellationToken::new()));
        tx.send(change(MemberEventKind::Join, "a")).unwrap();
        tokio::time::sleep(QUIET / 2).await;
        tx.send(change(MemberEventKind::Join, "b")).unwrap();
        let first = out.recv().await.unwrap();
        assert_eq!(names(&first), ("member-join", vec!["a", "b"]));
        tx.send(change(MemberEventKind::Failed, "a")).unwrap();
        let second = out.recv().await.unwrap();
        assert_eq!(names(&second), ("member-failed", vec!["a"]));
    }
}
