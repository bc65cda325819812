//! `/v1/agent/monitor`: the agent's log lines as they are written, streamed to the caller
//! (`?loglevel=` sets the lowest level sent, `?logjson` JSON lines). The agent's logging
//! publishes each line on a bounded broadcast channel; a caller too slow to keep up misses
//! lines rather than ever holding logging up.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::ApiState;

/// One log line, in both formats.
#[derive(Debug)]
pub struct LogLine {
    pub level: tracing::Level,
    /// `2006-01-02T15:04:05.000Z [INFO]  target: message: key=value`.
    pub text: String,
    /// The same as one JSON object (`@level`, `@message`, `@module`, `@timestamp`, fields).
    pub json: String,
}

/// Where the agent publishes its log lines.
pub type LogSender = broadcast::Sender<Arc<LogLine>>;

fn level(name: &str) -> Option<tracing::Level> {
    Some(match name.to_ascii_lowercase().as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "" | "info" => tracing::Level::INFO,
        "warn" => tracing::Level::WARN,
        "err" | "error" => tracing::Level::ERROR,
        _ => return None,
    })
}

pub(crate) async fn agent_monitor(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let raw = p.get("loglevel").unwrap_or("info");
    let min =
        level(raw).ok_or_else(|| ApiError::BadRequest(format!("Unknown log level: {raw}")))?;
    let json = p.has("logjson");
    let Some(tx) = &st.logs else {
        return Err(ApiError::BadRequest(
            "this agent does not publish its logs".into(),
        ));
    };
    let rx = tx.subscribe();
    let stop = st.stop.clone();
    let lines = futures::stream::unfold(rx, move |mut rx| {
        let stop = stop.clone();
        async move {
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return None,
                    r = rx.recv() => r,
                };
                match next {
                    // tracing orders levels by verbosity: ERROR is the least.
                    Ok(l) if l.level <= min => {
                        let mut s = if json { l.json.clone() } else { l.text.clone() };
                        s.push('\n');
                        return Some((Ok::<_, std::convert::Infallible>(s), rx));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        Body::from_stream(lines),
    )
        .into_response())
}
