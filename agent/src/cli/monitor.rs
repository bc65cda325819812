//! `muster monitor`: streams the agent's log lines (`/v1/agent/monitor`) until interrupted.

use std::io::Write as _;

use super::client::{qs, Client};
use super::error::{Error, Result};
use super::help::Flag;
use crate::flags::Parsed;

pub(crate) const MONITOR_USAGE: &str = "
Usage: muster monitor [options]

  Shows recent log messages of a Muster agent, and attaches to the agent,
  outputting log messages as they occur in real time. The monitor lets you
  listen for log levels that may be filtered out of the agent's own output.
  Muster shows lines at the agent's own -log-level and above.
";

pub(crate) const MONITOR_FLAGS: &[Flag] = &[
    Flag::value(
        "log-level",
        "string",
        "Log level of the agent: trace, debug, info, warn or err.",
    ),
    Flag::bool("log-json", "Output logs in JSON format."),
];

pub(crate) async fn monitor(p: &Parsed) -> Result<i32> {
    if !p.positional.is_empty() {
        return Err(Error::UsageHelp(format!(
            "Error found unexpected args: [{}]",
            p.positional.join(" ")
        )));
    }
    let c = Client::new(p)?;
    let mut extra = vec![(
        "loglevel",
        p.value("log-level").unwrap_or("info").to_string(),
    )];
    if p.bool("log-json") {
        extra.push(("logjson", String::new()));
    }
    let path = format!("/v1/agent/monitor{}", qs(p, &extra));
    let mut out = std::io::stdout();
    c.stream_raw(reqwest::Method::GET, &path, Vec::new(), |chunk| {
        // A closed stdout (`muster monitor | head`) ends the monitor.
        out.write_all(chunk)
            .and_then(|()| out.flush())
            .map_err(Error::Io)
    })
    .await
    .map_err(|e| e.context("Error starting monitor"))?;
    Ok(0)
}
