//! `muster query`: Serf's query through the local agent (`PUT /v1/agent/query/<name>`):
//! acks and responses printed as they arrive (Serf's lines), then the totals and who did not
//! answer.

use muster_api::serf::QueryEvent;

use super::client::{url_escape, Client};
use super::error::{Error, Result};
use super::help::Flag;
use crate::flags::Parsed;

pub(crate) const QUERY_USAGE: &str = "
Usage: muster query [options] name [payload]

  Dispatches a query to the cluster. Nodes matching the filters run their
  query:NAME event handlers; a handler's output (when it exits 0) is the
  node's response. Acks and responses are printed as they arrive, then the
  totals and the nodes that did not answer. Responses come straight back to
  this agent, up to 64 KiB each; the name, payload and filters together may
  take at most 1200 bytes.
";

pub(crate) const QUERY_FLAGS: &[Flag] = &[
    Flag::multi(
        "node",
        "regexp",
        "A regular expression that must match a whole node name. May be given several \
         times: a node matching any of them answers.",
    ),
    Flag::multi(
        "tag",
        "key=regexp",
        "A tag the node must have, its value matching the regular expression. May be \
         given several times: a node must match all of them.",
    ),
    Flag::value(
        "timeout",
        "duration",
        "How long to wait for answers. The default grows with the cluster's size, as Serf's.",
    ),
    Flag::bool("no-ack", "Do not ask nodes to acknowledge the query."),
    Flag::value(
        "format",
        "string",
        "Output format: text (the default) or json.",
    ),
];

/// `muster query [-node RE]… [-tag K=RE]… [-timeout D] [-no-ack] [-format F] NAME [PAYLOAD]`.
pub(crate) async fn run(p: &Parsed) -> Result<i32> {
    let (name, payload) = match p.positional.as_slice() {
        [] => return Err(Error::UsageHelp("A query name must be specified.".into())),
        [n] => (n.clone(), Vec::new()),
        [n, body] => (n.clone(), body.clone().into_bytes()),
        _ => {
            return Err(Error::UsageHelp(
                "Too many command line arguments. Only a name and payload must be specified."
                    .into(),
            ))
        }
    };
    let format = p.value("format").unwrap_or("text");
    if format != "text" && format != "json" {
        return Err(Error::usage(format!("Invalid format: {format}")));
    }
    let no_ack = p.bool("no-ack");
    let mut qs: Vec<String> = Vec::new();
    for n in p.all("node") {
        qs.push(format!("node={}", url_escape(n)));
    }
    for t in p.all("tag") {
        if !t.contains('=') {
            return Err(Error::usage(format!(
                "Error: invalid tag: '{t}', expected key=regexp"
            )));
        }
        qs.push(format!("tag={}", url_escape(t)));
    }
    if let Some(t) = p.value("timeout").filter(|t| !t.is_empty()) {
        if muster_api::go_duration(t).is_none() {
            return Err(Error::usage(format!(
                "invalid value {t:?} for flag -timeout: parse error"
            )));
        }
        qs.push(format!("timeout={}", url_escape(t)));
    }
    if no_ack {
        qs.push("no-ack".into());
    }
    let mut path = format!("/v1/agent/query/{}", url_escape(&name));
    if !qs.is_empty() {
        path = format!("{path}?{}", qs.join("&"));
    }
    let c = Client::new(p).map_err(|e| e.context("Error connecting to Muster agent"))?;
    let text = format == "text";
    if text {
        println!("Query '{name}' dispatched");
    }
    let mut acks = 0;
    let mut responses = serde_json::Map::new();
    let mut ack_list = Vec::new();
    c.stream_lines(
        reqwest::Method::PUT,
        &path,
        payload,
        |ev: QueryEvent| match ev {
            QueryEvent::Ack { from } => {
                acks += 1;
                if text {
                    println!("Ack from '{from}'");
                }
                ack_list.push(from);
            }
            QueryEvent::Response { from, payload } => {
                if text {
                    let shown = payload.strip_suffix('\n').unwrap_or(&payload);
                    println!("Response from '{from}': {shown}");
                }
                responses.insert(from, payload.into());
            }
            QueryEvent::Error { from, reason } => eprintln!("Error from '{from}': {reason}"),
            QueryEvent::Done {
                expected,
                acks: acked,
                responses: answered,
            } => {
                if !text {
                    return;
                }
                if !no_ack {
                    println!("Total Acks: {acks}");
                }
                println!("Total Responses: {}", responses.len());
                let missing = |got: &[String]| -> Vec<String> {
                    expected
                        .iter()
                        .filter(|n| !got.contains(n))
                        .cloned()
                        .collect()
                };
                if !no_ack {
                    let silent = missing(&acked);
                    if !silent.is_empty() {
                        println!("No ack from: {}", silent.join(", "));
                    }
                }
                let unanswered = missing(&answered);
                if !unanswered.is_empty() {
                    println!("No response from: {}", unanswered.join(", "));
                }
            }
        },
    )
    .await
    .map_err(|e| e.context("Error sending query"))?;
    if !text {
        let out = serde_json::json!({ "Acks": ack_list, "Responses": responses });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(0)
}
