//! Remote exec and queries on real agents (one server, two clients), through the CLI: output
//! and exit codes stream back per node with Consul's lines; a node with remote exec disabled
//! (the default) says so; output is cut at the limit with a note and never reaches Raft; a
//! node killed mid-run is reported lost at once; `-node` picks nodes; queries gather acks and
//! handler responses, and name who did not answer.

use std::process::Output;
use std::time::{Duration, Instant};

use muster_tests::*;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs the CLI against `a` off the async runtime.
async fn cli(a: &Agent, args: &[&str]) -> Output {
    cli_as(a, "", args).await
}

/// Runs the CLI against `a` with the ACL token `token`, off the async runtime.
async fn cli_as(a: &Agent, token: &str, args: &[&str]) -> Output {
    let http = a.http.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let token = token.to_string();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(muster_bin())
            .args(&args)
            .env("MUSTER_HTTP_ADDR", http)
            .env("CONSUL_HTTP_TOKEN", token)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run muster")
    })
    .await
    .expect("join")
}

/// One server and two clients, all seeing three members; s1 and c2 allow remote exec, c3
/// keeps the default (disabled). Each answers the query `load` with `up-<name>`, but c3.
async fn cluster(root: &std::path::Path) -> anyhow::Result<Vec<Agent>> {
    let allow = root.join("allow.json");
    std::fs::write(
        &allow,
        r#"{"disable_remote_exec": false, "sync_coordinate_interval_min": "1h"}"#,
    )?;
    let quiet = root.join("quiet.json");
    std::fs::write(&quiet, r#"{"sync_coordinate_interval_min": "1h"}"#)?;
    let (allow, quiet) = (allow.display().to_string(), quiet.display().to_string());
    let handler = "query:load=echo up-$SERF_SELF_NAME";
    let s1 = single_server(
        root,
        "s1",
        &["-config-file", &allow, "-event-handler", handler],
    )
    .await?;
    let join = s1.serf.to_string();
    let c2 = Agent::start(
        "c2",
        &root.join("c2"),
        &[
            "-config-file",
            &allow,
            "-event-handler",
            handler,
            "-join",
            &join,
        ],
    )?;
    let c3 = Agent::start(
        "c3",
        &root.join("c3"),
        &["-config-file", &quiet, "-join", &join],
    )?;
    let all = vec![s1, c2, c3];
    for a in &all {
        wait_until("3 alive members", Duration::from_secs(20), || async {
            let m = get(&a.url("/v1/agent/members")).await.ok()?.json();
            let alive = m.as_array()?.iter().filter(|m| m["Status"] == 1).count();
            (alive == 3).then_some(())
        })
        .await?;
    }
    Ok(all)
}

fn raft_log_bytes(server: &Agent) -> u64 {
    std::fs::metadata(server.data_dir.join("raft/raft.redb"))
        .or_else(|_| std::fs::metadata(server.data_dir.join("raft.redb")))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_streams_output_and_exit_codes_per_node_without_raft() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let all = cluster(root.path()).await?;
    let (s1, c3) = (&all[0], &all[2]);

    let index = settled_raft_index(s1).await?;
    let o = cli(
        s1,
        &["exec", "-wait", "1s", "echo hello; echo oops >&2; exit 3"],
    )
    .await;
    let out = stdout(&o);
    for line in [
        "    s1: hello",
        "    s1: oops",
        "==> s1: finished with exit code 3",
        "    c2: hello",
        "==> c2: finished with exit code 3",
        "==> c3: refused: remote exec is disabled on this agent (disable_remote_exec = true)",
        "2 / 2 node(s) completed / acknowledged",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
    assert_eq!(
        o.status.code(),
        Some(2),
        "a non-zero exit makes exec exit 2"
    );

    // -node picks one node, asked through another; a clean run exits 0.
    let o = cli(c3, &["exec", "-node", "^c2$", "-wait", "1s", "echo picked"]).await;
    let out = stdout(&o);
    assert!(out.contains("    c2: picked"), "{out}");
    assert!(!out.contains("s1:") && !out.contains("c3:"), "{out}");
    assert!(
        out.contains("1 / 1 node(s) completed / acknowledged"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(0), "{out}");

    // -shell=false runs the program directly.
    let o = cli(
        s1,
        &[
            "exec",
            "-node",
            "^s1$",
            "-wait",
            "1s",
            "-shell=false",
            "printf",
            "%s-%s",
            "a b",
            "c",
        ],
    )
    .await;
    assert!(stdout(&o).contains("    s1: a b-c"), "{}", stdout(&o));

    // 3 MB of output: the caller gets 1 MiB and the note, the exit code still, and the
    // server's Raft log does not grow by the output.
    let before = raft_log_bytes(s1);
    let o = cli(
        s1,
        &[
            "exec",
            "-node",
            "^c2$",
            "-wait",
            "2s",
            "head -c 3000000 /dev/zero | tr '\\0' x; echo",
        ],
    )
    .await;
    let out = stdout(&o);
    let got: usize = out
        .lines()
        .filter_map(|l| l.strip_prefix("    c2: "))
        .map(str::len)
        .sum();
    assert_eq!(got, 1024 * 1024, "1 MiB of output reaches the caller");
    assert!(
        out.contains("==> c2: output cut at 1048576 bytes; the rest was dropped"),
        "{}",
        &out[out.len().saturating_sub(500)..]
    );
    assert!(out.contains("==> c2: finished with exit code 0"));
    let after = raft_log_bytes(s1);
    assert!(
        after < before + 256 * 1024,
        "raft.redb grew from {before} to {after} bytes"
    );
    assert_eq!(
        raft_applied_index(s1).await?,
        index,
        "the servers' Raft index does not move during execs"
    );
    let keys = get(&s1.url("/v1/kv/_rexec?keys")).await?;
    assert_eq!(keys.status, 404, "nothing under _rexec in KV");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_run_is_reported_lost_at_once() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut all = cluster(root.path()).await?;
    let marker = root.path().join("started");
    let cmd = format!("touch {}; sleep 4", marker.display());
    let http = all[0].http.to_string();
    let run = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let o = std::process::Command::new(muster_bin())
            .args(["exec", "-node", "^c2$", "-wait", "10s", &cmd])
            .env("MUSTER_HTTP_ADDR", http)
            .output()
            .expect("run muster");
        (o, t.elapsed())
    });
    wait_until(
        "c2 to start the command",
        Duration::from_secs(15),
        || async { marker.exists().then_some(()) },
    )
    .await?;
    all[1].kill9();
    let (o, took) = run.await?;
    let out = stdout(&o);
    assert!(
        out.contains("==> c2: lost: its stream closed before it reported an exit code"),
        "{out}"
    );
    assert!(
        out.contains("0 / 1 node(s) completed / acknowledged"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(2));
    // Not the 20 s a silent node would be waited for (twice -wait).
    assert!(took < Duration::from_secs(15), "took {took:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_gathers_acks_and_responses_and_names_who_did_not_answer() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let all = cluster(root.path()).await?;
    let o = cli(&all[2], &["query", "-timeout", "3s", "load", "payload"]).await;
    let out = stdout(&o);
    for line in [
        "Query 'load' dispatched",
        "Ack from 's1'",
        "Ack from 'c2'",
        "Ack from 'c3'",
        "Response from 's1': up-s1",
        "Response from 'c2': up-c2",
        "Total Acks: 3",
        "Total Responses: 2",
        "No response from: c3",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
    assert_eq!(o.status.code(), Some(0));

    // Filters: a node regex and a tag the servers carry.
    let o = cli(
        &all[1],
        &["query", "-timeout", "2s", "-tag", "role=consul", "load"],
    )
    .await;
    let out = stdout(&o);
    assert!(out.contains("Response from 's1': up-s1"), "{out}");
    assert!(out.contains("Total Responses: 1"), "{out}");
    let o = cli(
        &all[0],
        &[
            "query", "-timeout", "2s", "-node", "c.", "-no-ack", "-format", "json", "load",
        ],
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v["Responses"], serde_json::json!({"c2": "up-c2\n"}), "{v}");

    // A bad filter is refused with the reason.
    let o = cli(&all[0], &["query", "-node", "(", "load"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Invalid node filter"));
    Ok(())
}

/// A token of a new policy with `rules`: (secret, accessor).
async fn token_with(a: &Agent, name: &str, rules: &str) -> anyhow::Result<(String, String)> {
    let policy = serde_json::json!({"Name": name, "Rules": rules});
    let p = call("PUT", &a.url("/v1/acl/policy"), Some("root"), Some(policy)).await;
    anyhow::ensure!(p.status == 200, "{}", p.text());
    let t = serde_json::json!({"Policies": [{"Name": name}]});
    let t = call("PUT", &a.url("/v1/acl/token"), Some("root"), Some(t)).await;
    anyhow::ensure!(t.status == 200, "{}", t.text());
    let field = |f: &str| t.json()[f].as_str().unwrap_or_default().to_string();
    Ok((field("SecretID"), field("AccessorID")))
}

#[tokio::test(flavor = "multi_thread")]
async fn with_acls_exec_needs_agent_write_on_each_node_and_queries_their_rule() -> anyhow::Result<()>
{
    let root = tempfile::tempdir()?;
    let cfg = root.path().join("acl.json");
    std::fs::write(
        &cfg,
        r#"{"disable_remote_exec": false, "event_handlers": ["query:load=echo up"],
            "acl": {"enabled": true, "default_policy": "deny",
                    "tokens": {"initial_management": "root"}}}"#,
    )?;
    let s1 = single_server(
        root.path(),
        "s1",
        &["-config-file", &cfg.display().to_string()],
    )
    .await?;
    wait_until("the management token", Duration::from_secs(15), || {
        let url = s1.url("/v1/acl/token/self");
        async move { (call("GET", &url, Some("root"), None).await.status == 200).then_some(()) }
    })
    .await?;
    let marker = root.path().join("ran");
    let cmd = format!("touch {}; echo ran", marker.display());

    // `_rexec` write alone: s1 is told no, and says why; nothing runs.
    let (event_only, accessor) =
        token_with(&s1, "rexec", r#"event "_rexec" { policy = "write" }"#).await?;
    let o = cli_as(&s1, &event_only, &["exec", "-wait", "1s", &cmd]).await;
    let want = format!(
        "==> s1: refused: Permission denied: token with AccessorID '{accessor}' lacks \
         permission 'agent:write' on \"s1\""
    );
    assert!(stdout(&o).lines().any(|l| l == want), "{}", stdout(&o));
    assert!(!marker.exists(), "a denied node runs nothing");

    // With agent write on the node it runs.
    let rules = "event \"_rexec\" { policy = \"write\" }\nagent \"s1\" { policy = \"write\" }";
    let (both, _) = token_with(&s1, "rexec-s1", rules).await?;
    let o = cli_as(&s1, &both, &["exec", "-wait", "1s", &cmd]).await;
    assert!(stdout(&o).contains("    s1: ran"), "{}", stdout(&o));
    assert!(marker.exists());

    // Without the `_rexec` event rule the request itself is refused.
    let (agent_only, agent_acc) =
        token_with(&s1, "agent", r#"agent "s1" { policy = "write" }"#).await?;
    let o = cli_as(&s1, &agent_only, &["exec", "-wait", "1s", "true"]).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "AccessorID '{agent_acc}' lacks permission 'event:write' on \"_rexec\""
        )),
        "{err}"
    );

    // Queries: `query` write on the name.
    let (q, _) = token_with(&s1, "q", r#"query "load" { policy = "write" }"#).await?;
    let o = cli_as(&s1, &q, &["query", "-timeout", "1s", "load"]).await;
    assert!(
        stdout(&o).contains("Response from 's1': up"),
        "{}",
        stdout(&o)
    );
    let o = cli_as(&s1, &agent_only, &["query", "-timeout", "1s", "load"]).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("lacks permission 'query:write' on \"load\""),
        "{err}"
    );
    Ok(())
}
