//! `muster exec`: runs a command on the members through the local agent (`PUT
//! /v1/agent/exec`), printing each member's output and exit code as they arrive, with
//! Consul's flags and output lines. Consul's exec writes every chunk into KV through Raft;
//! Muster's members stream it straight back to the agent that asked.

use std::io::Read;

use muster_api::serf::{ExecEvent, ExecRequest};

use super::client::Client;
use super::error::{Error, Result};
use super::event::{check_filters, FILTER_FLAGS};
use super::help::Flag;
use crate::flags::Parsed;

pub(crate) const EXEC_USAGE: &str = "
Usage: muster exec [options] [-|command...]

  Evaluates a command on remote nodes. The nodes responding can
  be filtered using regular expressions on node name, service, and tag
  definitions. If a command is '-', stdin will be read until EOF
  and used as a script input.

  The request travels on the gossip layer and each node streams its output
  and exit code straight back to this agent: nothing goes through the
  servers' Raft log. A node runs nothing unless its agent sets
  disable_remote_exec = false; one that refuses says so. Output is cut at
  1 MiB per node, with a note.
";

pub(crate) const EXEC_FLAGS: &[Flag] = &[
    FILTER_FLAGS[0],
    FILTER_FLAGS[1],
    FILTER_FLAGS[2],
    Flag::value(
        "prefix",
        "string",
        "Accepted for Consul's scripts; Muster keeps nothing in KV.",
    ),
    Flag::bool(
        "shell",
        "Use a shell to run the command. The default is true.",
    ),
    Flag::value(
        "wait",
        "duration",
        "Period to wait with no responses before terminating execution. The default is 2s.",
    ),
    Flag::value(
        "wait-repl",
        "duration",
        "Accepted for Consul's scripts; Muster has no replication to wait for.",
    ),
    Flag::bool("verbose", "Enables verbose output."),
];

/// Consul's `TargetedUI`: each line of `message` as `ARROW NODE: line`, trailing space
/// trimmed from the whole.
fn targeted(arrow: bool, node: &str, message: &str) -> String {
    let arrow = if arrow { "==>" } else { "   " };
    let lines: Vec<String> = message
        .split('\n')
        .map(|l| format!("{arrow} {node}: {l}"))
        .collect();
    lines.join("\n").trim_end().to_string()
}

/// `muster exec [-node RE] [-service RE] [-tag RE] [-wait D] [-shell=false] COMMAND…`;
/// exits 2 when a node failed, or acknowledged and never finished (Consul's codes).
pub(crate) async fn run(p: &Parsed) -> Result<i32> {
    let shell = p.value("shell") != Some("false");
    let verbose = p.bool("verbose");
    let mut req = ExecRequest {
        node: p.value("node").unwrap_or("").into(),
        service: p.value("service").unwrap_or("").into(),
        tag: p.value("tag").unwrap_or("").into(),
        wait: p.value("wait").unwrap_or("").into(),
        ..ExecRequest::default()
    };
    if p.positional.first().map(String::as_str) == Some("-") {
        if !shell {
            return Err(Error::usage(
                "Cannot configure -shell=false when reading from stdin",
            ));
        }
        let mut script = String::new();
        std::io::stdin()
            .read_to_string(&mut script)
            .map_err(|e| Error::UsageHelp(format!("Failed to read stdin: {e}")))?;
        req.script = script;
    } else if shell {
        req.command = p.positional.join(" ");
    } else {
        req.args = p.positional.clone();
    }
    if req.command.is_empty() && req.script.is_empty() && req.args.is_empty() {
        return Err(Error::UsageHelp("Must specify a command to execute".into()));
    }
    check_filters(&req.node, &req.service, &req.tag)?;
    if !req.wait.is_empty() && muster_api::go_duration(&req.wait).is_none() {
        return Err(Error::usage(format!(
            "invalid value {:?} for flag -wait: parse error",
            req.wait
        )));
    }
    let c = Client::new(p).map_err(|e| e.context("Error connecting to Consul agent"))?;
    let body = serde_json::to_vec(&req)?;
    let start = std::time::Instant::now();
    let mut bad = 0;
    c.stream_lines(
        reqwest::Method::PUT,
        "/v1/agent/exec",
        body,
        |ev: ExecEvent| match ev {
            ExecEvent::Ack { node } if verbose => {
                println!("{}", targeted(true, &node, "acknowledged"))
            }
            ExecEvent::Ack { .. } => {}
            ExecEvent::Output { node, output } => println!("{}", targeted(false, &node, &output)),
            ExecEvent::Truncated { node, limit } => println!(
                "{}",
                targeted(
                    true,
                    &node,
                    &format!("output cut at {limit} bytes; the rest was dropped")
                )
            ),
            ExecEvent::Exit { node, code } => {
                if code != 0 {
                    bad += 1;
                }
                let msg = format!("finished with exit code {code}");
                println!("{}", targeted(true, &node, &msg));
            }
            ExecEvent::Refused { node, reason } => {
                println!("{}", targeted(true, &node, &format!("refused: {reason}")))
            }
            ExecEvent::Lost { node, reason } => {
                bad += 1;
                println!("{}", targeted(true, &node, &format!("lost: {reason}")))
            }
            ExecEvent::Done { acks, exits } => {
                println!("{exits} / {acks} node(s) completed / acknowledged");
                if verbose {
                    println!("Completed in {:.2} seconds", start.elapsed().as_secs_f64());
                }
            }
        },
    )
    .await
    .map_err(|e| e.context("Failed to run the remote exec"))?;
    Ok(if bad > 0 { 2 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_are_consuls() {
        // A chunk's closing newline leaves Consul's bare `    web1:` line.
        assert_eq!(
            targeted(false, "web1", "a\nb\n"),
            "    web1: a\n    web1: b\n    web1:"
        );
        assert_eq!(
            targeted(true, "web1", "finished with exit code 0"),
            "==> web1: finished with exit code 0"
        );
    }
}
