//! `muster watch`: runs one watch plan (`crate::watch`) against the agent, as `consul watch`
//! does. With a child command, the command runs on every change with the JSON on stdin and
//! `CONSUL_INDEX` in its environment; a child that fails stops the watch with exit code 1.
//! Without one, the first result's JSON is printed (indented as Consul's `MarshalIndent`) and
//! the watch ends, as `consul watch` does (`consul watch -type key -key k > out.json` scripts).

use std::ops::ControlFlow;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::error::{Error, Result};
use super::help::Flag;
use crate::flags::Parsed;
use crate::watch::handler::{run_script, Output};
use crate::watch::{plan, types, Fetch, Fetched, HandlerDef};

pub(crate) const WATCH_USAGE: &str = "
Usage: muster watch [options] [child...]

  Watches for changes in a given data view from Consul. If a child process
  is specified, it will be invoked with the latest results on changes. Otherwise,
  the latest values are dumped to stdout and the watch terminates.

  Providing the watch type is required, and other parameters may be required
  or supported depending on the watch type.
";

pub(crate) const WATCH_FLAGS: &[Flag] = &[
    Flag::value(
        "key",
        "string",
        "Specifies the key to watch. Only for 'key' type.",
    ),
    Flag::value(
        "name",
        "string",
        "Specifies an event name to watch. Only for 'event' type.",
    ),
    Flag::bool(
        "passing",
        "Only hosts passing all checks (the same as -passingonly=true). Optional for \
         'service' type.",
    ),
    Flag::value(
        "passingonly",
        "[true|false]",
        "Specifies if only hosts passing all checks are displayed. Optional for 'service' \
         type, must be one of `[true|false]`. Defaults false.",
    ),
    Flag::value(
        "prefix",
        "string",
        "Specifies the key prefix to watch. Only for 'keyprefix' type.",
    ),
    Flag::value(
        "service",
        "string",
        "Specifies the service to watch. Required for 'service' type, optional for 'checks' \
         type.",
    ),
    Flag::bool(
        "shell",
        "Use a shell to run the command (can set a custom shell via the SHELL environment \
         variable). The default value is true.",
    ),
    Flag::value(
        "state",
        "string",
        "Specifies the states to watch. Optional for 'checks' type.",
    ),
    Flag::multi(
        "tag",
        "string",
        "Specifies the service tag to filter on. Optional for 'service' type; may be given \
         more than once.",
    ),
    Flag::value(
        "type",
        "string",
        "Specifies the watch type. One of key, keyprefix, services, nodes, service, checks, \
         or event.",
    ),
];

/// The watch parameters the flags describe, in Consul's parameter names.
fn params(p: &Parsed) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for (flag, key) in [
        ("type", "type"),
        ("key", "key"),
        ("prefix", "prefix"),
        ("service", "service"),
        ("state", "state"),
        ("name", "name"),
    ] {
        if let Some(v) = p.value(flag).filter(|v| !v.is_empty()) {
            m.insert(key.into(), json!(v));
        }
    }
    let tags: Vec<&String> = p.all("tag").iter().filter(|t| !t.is_empty()).collect();
    if !tags.is_empty() {
        m.insert("tag".into(), json!(tags));
    }
    if p.bool("stale") {
        m.insert("stale".into(), json!(true));
    }
    let mut passing = p.bool("passing");
    if let Some(v) = p.value("passingonly").filter(|v| !v.is_empty()) {
        passing = go_bool(v).ok_or_else(|| {
            Error::usage(format!(
                "Failed to parse passingonly flag: strconv.ParseBool: parsing {v:?}: invalid syntax"
            ))
        })?;
    }
    if passing || p.has("passingonly") {
        m.insert("passingonly".into(), json!(passing));
    }
    Ok(m)
}

/// Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The plan reads through the command's client: its address, token and TLS flags.
struct CliFetch(Client);

impl Fetch for CliFetch {
    fn get<'a>(&'a self, path: &'a str, _token: Option<&'a str>) -> BoxFuture<'a, Fetched> {
        Box::pin(async move { self.0.send_indexed(path).await.map_err(|e| e.report()) })
    }
}

/// Prints the first result and stops, or runs the child on each change; remembers a child's
/// failure for the exit code.
struct CliHandler {
    child: Option<HandlerDef>,
    failed: bool,
}

impl plan::Handler for CliHandler {
    fn handle<'a>(&'a mut self, index: u64, data: &'a Value) -> BoxFuture<'a, ControlFlow<()>> {
        Box::pin(async move {
            let Some(child) = &self.child else {
                println!("{}", indented(data));
                return ControlFlow::Break(());
            };
            match run_script(child, index, data, Output::Inherit).await {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    eprintln!("{e}");
                    self.failed = true;
                    ControlFlow::Break(())
                }
            }
        })
    }

    /// As Consul's watch logger writes it to stderr.
    fn errored(&mut self, type_name: &str, error: &str, retry: std::time::Duration) {
        eprintln!(
            "[ERR] muster.watch: Watch (type: {type_name}) errored: {error}, retry in {retry:?}"
        );
    }
}

/// JSON indented by four spaces, as Go's `json.MarshalIndent(data, "", "    ")`.
fn indented(data: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if data.serialize(&mut ser).is_err() {
        return "null".into();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

pub(crate) async fn watch(p: &Parsed) -> Result<i32> {
    if p.value("type").is_none_or(str::is_empty) {
        return Err(Error::UsageHelp("Watch type must be specified".into()));
    }
    let spec = types::parse(params(p)?, &[]).map_err(Error::Usage)?;
    let client = Client::new(p)?;
    let _: Value = client
        .get_json("/v1/agent/self")
        .await
        .map_err(|e| Error::Context {
            what: "Error querying Consul agent".into(),
            source: Box::new(e),
        })?;
    let shell = !p.has("shell") || p.bool("shell");
    let child = match &p.positional[..] {
        [] => None,
        words if shell => Some(HandlerDef::Shell(words.join(" "))),
        words => Some(HandlerDef::Args(words.to_vec())),
    };
    let mut handler = CliHandler {
        child,
        failed: false,
    };
    let cancel = CancellationToken::new();
    let fetch = CliFetch(client);
    tokio::select! {
        _ = plan::run(&spec, &fetch, &mut handler, &cancel) => {}
        _ = crate::signal::shutdown() => return Ok(0),
    }
    Ok(if handler.failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_json_indented_as_consul() {
        assert_eq!(
            indented(&json!({"a": [1]})),
            "{\n    \"a\": [\n        1\n    ]\n}"
        );
        assert_eq!(indented(&Value::Null), "null");
    }
}
