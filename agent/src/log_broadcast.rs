//! The tracing layer behind `/v1/agent/monitor`: formats each event that passes the agent's
//! log filter, as text and as JSON, and publishes it on a bounded broadcast channel. Sending
//! never blocks (a subscriber that falls behind loses the oldest lines), and nothing is
//! formatted while nobody listens.

use std::fmt::Write as _;
use std::sync::Arc;

use muster_api::monitor::{LogLine, LogSender};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines kept for a subscriber that is behind.
const BACKLOG: usize = 1024;

/// The layer, and the channel its lines go out on.
pub struct Broadcast {
    tx: LogSender,
}

impl Broadcast {
    pub fn new() -> (Broadcast, LogSender) {
        let (tx, _) = tokio::sync::broadcast::channel(BACKLOG);
        (Broadcast { tx: tx.clone() }, tx)
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        if field.name() == "message" {
            self.message = v;
        } else {
            self.rest.push((field.name().to_string(), v));
        }
    }
}

impl<S: Subscriber> Layer<S> for Broadcast {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let meta = event.metadata();
        let level = *meta.level();
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let time = muster_server::acl::builtin::rfc3339(ms);
        let name = match level {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARN",
            tracing::Level::INFO => "INFO",
            tracing::Level::DEBUG => "DEBUG",
            tracing::Level::TRACE => "TRACE",
        };
        let mut text = format!("{time} [{name}] {}: {}", meta.target(), f.message);
        for (k, v) in &f.rest {
            let _ = write!(text, " {k}={v}");
        }
        let mut obj = Map::new();
        obj.insert("@level".into(), name.to_ascii_lowercase().into());
        obj.insert("@message".into(), f.message.into());
        obj.insert("@module".into(), meta.target().into());
        obj.insert("@timestamp".into(), time.into());
        for (k, v) in f.rest {
            obj.insert(k, v.into());
        }
        let json = Value::Object(obj).to_string();
        // Fails only when nobody listens any more: nothing to do then.
        let _ = self.tx.send(Arc::new(LogLine { level, text, json }));
    }
}
