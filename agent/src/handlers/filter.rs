//! Serf's `[FILTER=]SCRIPT` handler specifications: parsing them (from `-event-handler` and
//! the `event_handlers` key) and telling which events a handler runs for.

use std::fmt;

/// The event types a filter may name (Serf's), besides `*`.
const EVENT_TYPES: &[&str] = &[
    "member-join",
    "member-leave",
    "member-failed",
    "member-update",
    "member-reap",
    "user",
    "query",
];

/// One event type a handler runs for; `user` and `query` may name one event or query.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    event: String,
    name: Option<String>,
}

/// A handler: the shell command to run and the events it runs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventScript {
    filters: Vec<Filter>,
    /// Run as `/bin/sh -c SCRIPT`.
    pub script: String,
}

impl EventScript {
    /// Parses Serf's `[FILTER=]SCRIPT`: `FILTER` is a comma-separated list of event types
    /// (`member-join`, …, `user`, `user:NAME`, `query`, `query:NAME`, `*`); no filter means
    /// every event. As in Serf, the first `=` ends the filter, so a script that itself holds
    /// an `=` needs one (`*=…`).
    pub fn parse(spec: &str) -> Result<EventScript, String> {
        let (filter, script) = match spec.split_once('=') {
            Some((f, s)) => (f.trim(), s.trim()),
            None => ("*", spec.trim()),
        };
        if script.is_empty() {
            return Err(format!("event handler {spec:?} has no script"));
        }
        let filters = filter
            .split(',')
            .map(|f| parse_filter(f.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EventScript {
            filters,
            script: script.to_string(),
        })
    }

    /// Whether the handler runs for an event of type `event` (`member-join`, `user`, …)
    /// named `name` (a user event's or query's name; `None` for member events).
    pub(crate) fn matches(&self, event: &str, name: Option<&str>) -> bool {
        self.filters.iter().any(|f| {
            f.event == "*" || (f.event == event && (f.name.is_none() || f.name.as_deref() == name))
        })
    }
}

impl fmt::Display for EventScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.script)
    }
}

fn parse_filter(f: &str) -> Result<Filter, String> {
    let (event, name) = match f.split_once(':') {
        Some((e @ ("user" | "query"), n)) if !n.is_empty() => (e, Some(n.to_string())),
        Some((e @ ("user" | "query"), _)) => (e, None),
        _ => (f, None),
    };
    if event != "*" && !EVENT_TYPES.contains(&event) {
        return Err(format!(
            "invalid event filter {f:?}: expected {}, user:NAME or query:NAME",
            EVENT_TYPES.join(", ")
        ));
    }
    Ok(Filter {
        event: event.to_string(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_filter_runs_for_everything() {
        let s = EventScript::parse("handler.sh").unwrap();
        assert_eq!(s.script, "handler.sh");
        assert!(s.matches("member-join", None));
        assert!(s.matches("user", Some("deploy")));
        assert!(EventScript::parse("*=a.sh x=1")
            .unwrap()
            .matches("query", Some("q")));
    }

    #[test]
    fn filters_are_comma_separated_and_named() {
        let s = EventScript::parse("member-join,member-failed=/bin/h arg").unwrap();
        assert_eq!(s.script, "/bin/h arg");
        assert!(s.matches("member-join", None));
        assert!(s.matches("member-failed", None));
        assert!(!s.matches("member-leave", None));
        assert!(!s.matches("user", Some("deploy")));

        let u = EventScript::parse("user:deploy,query=h").unwrap();
        assert!(u.matches("user", Some("deploy")));
        assert!(!u.matches("user", Some("other")));
        assert!(u.matches("query", Some("anything")));
        assert!(EventScript::parse("user:=h")
            .unwrap()
            .matches("user", Some("x")));
    }

    #[test]
    fn bad_specs_are_refused() {
        let e = EventScript::parse("member-joined=h").unwrap_err();
        assert!(e.contains("\"member-joined\""), "{e}");
        assert!(EventScript::parse("member-join=").is_err());
        assert!(EventScript::parse("   ").is_err());
        assert!(EventScript::parse("/bin/echo a=b").is_err());
    }
}
