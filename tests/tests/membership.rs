//! Gossip membership and client agents.

use std::time::Duration;

use muster_tests::*;

fn member_status(members: &serde_json::Value, name: &str) -> Option<u64> {
    members.as_array()?.iter().find(|m| m["Name"] == name)?["Status"].as_u64()
}

fn serf_health(checks: &serde_json::Value) -> Option<String> {
    let c = checks
        .as_array()?
        .iter()
        .find(|c| c["CheckID"] == "serfHealth")?;
    c["Status"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn client_agent_forwards_reads_and_writes() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let server = single_server(root.path(), "srv", &[]).await?;
    let client = Agent::start(
        "cli",
        &root.path().join("cli"),
        &["-join", &server.serf.to_string()],
    )?;
    assert!(
        client.rpc.is_none(),
        "a client agent has no server RPC port"
    );
    // The client learns the server through gossip, then forwards.
    let w = wait_until("client write accepted", Duration::from_secs(15), || async {
        let r = put(&client.url("/v1/kv/via/client"), b"hello").await.ok()?;
        (r.status == 200).then_some(r)
    })
    .await?;
    assert_eq!(w.text(), "true");
    let r = get(&client.url("/v1/kv/via/client?raw")).await?;
    assert_eq!(r.body, b"hello");
    let r = get(&server.url("/v1/kv/via/client?raw")).await?;
    assert_eq!(r.body, b"hello");
    let leader = get(&client.url("/v1/status/leader")).await?.json();
    assert_eq!(leader.as_str(), server.rpc.as_deref());
    // The CLI through the client agent.
    let out = client.cli(&["kv", "put", "cli/key", "from-cli"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = client.cli(&["kv", "get", "cli/key"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-cli\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_and_left_members_are_told_apart() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let server = single_server(root.path(), "srv", &[]).await?;
    let join = server.serf.to_string();
    let mut doomed = Agent::start("doomed", &root.path().join("doomed"), &["-join", &join])?;
    let leaver = Agent::start(
        "leaver",
        &root.path().join("leaver"),
        &["-retry-join", &join],
    )?;
    wait_until(
        "both clients alive with passing serfHealth",
        Duration::from_secs(15),
        || async {
            let m = get(&server.url("/v1/agent/members")).await.ok()?.json();
            let ok =
                member_status(&m, "doomed") == Some(1) && member_status(&m, "leaver") == Some(1);
            let c = get(&server.url("/v1/health/node/doomed"))
                .await
                .ok()?
                .json();
            (ok && serf_health(&c).as_deref() == Some("passing")).then_some(())
        },
    )
    .await?;
    let members = get(&server.url("/v1/agent/members")).await?.json();
    let me = members
        .as_array()
        .and_then(|a| a.iter().find(|m| m["Name"] == "srv"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(me["Tags"]["role"], "consul");
    assert_eq!(me["Tags"]["dc"], "dc1");
    assert_eq!(me["Port"], server.serf.port());

    doomed.kill9();
    wait_until(
        "killed member failed, its serfHealth critical",
        Duration::from_secs(20),
        || async {
            let m = get(&server.url("/v1/agent/members")).await.ok()?.json();
            let c = get(&server.url("/v1/health/node/doomed"))
                .await
                .ok()?
                .json();
            (member_status(&m, "doomed") == Some(4)
                && serf_health(&c).as_deref() == Some("critical"))
            .then_some(())
        },
    )
    .await?;
    let out = server.cli(&["members", "-status=failed"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("Node"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("doomed") && l.contains("failed")),
        "{text}"
    );
    assert!(!text.contains("leaver"), "{text}");

    let mut leaver = leaver;
    let out = leaver.cli(&["leave"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = leaver.wait_exit(Duration::from_secs(10))?;
    assert!(status.success());
    wait_until(
        "leaver shown as left and deregistered",
        Duration::from_secs(15),
        || async {
            let m = get(&server.url("/v1/agent/members")).await.ok()?.json();
            let n = get(&server.url("/v1/catalog/node/leaver")).await.ok()?;
            // Gone from the catalog: `null`, as Consul answers for an unknown node.
            let gone = n.status == 200 && n.json().is_null();
            (member_status(&m, "leaver") == Some(3) && gone).then_some(())
        },
    )
    .await?;
    let out = server.cli(&["members", "-status", "left"]);
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("leaver") && l.contains("left")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_leaves_is_removed_from_raft_and_force_leave_works() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut servers = start_servers(root.path(), 3, &[]).await?;
    // s3 leaves gracefully (SIGTERM): the others drop it from the voters and mark it left.
    let status = servers[2].terminate(Duration::from_secs(10))?;
    assert!(status.success(), "{status}");
    wait_until(
        "s3 removed from the voters and left",
        Duration::from_secs(15),
        || async {
            let peers = get(&servers[0].url("/v1/status/peers")).await.ok()?.json();
            let m = get(&servers[0].url("/v1/agent/members")).await.ok()?.json();
            (peers.as_array()?.len() == 2 && member_status(&m, "s3") == Some(3)).then_some(())
        },
    )
    .await?;
    // Two voters out of two: the cluster still takes writes.
    let w = put(&servers[0].url("/v1/kv/after/leave"), b"ok").await?;
    assert_eq!((w.status, w.text().as_str()), (200, "true"));

    // A client that dies is failed until force-leave makes it left.
    let mut c = Agent::start(
        "c1",
        &root.path().join("c1"),
        &["-join", &servers[0].serf.to_string()],
    )?;
    wait_until("c1 alive", Duration::from_secs(10), || async {
        let m = get(&servers[0].url("/v1/agent/members")).await.ok()?.json();
        (member_status(&m, "c1") == Some(1)).then_some(())
    })
    .await?;
    c.kill9();
    wait_until("c1 failed", Duration::from_secs(20), || async {
        let m = get(&servers[1].url("/v1/agent/members")).await.ok()?.json();
        (member_status(&m, "c1") == Some(4)).then_some(())
    })
    .await?;
    let out = servers[0].cli(&["force-leave", "c1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in &servers[..2] {
        wait_until("c1 left everywhere", Duration::from_secs(10), || async {
            let m = get(&s.url("/v1/agent/members")).await.ok()?.json();
            (member_status(&m, "c1") == Some(3)).then_some(())
        })
        .await?;
    }
    let out = servers[0].cli(&["force-leave", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No node named \"nobody\""));
    Ok(())
}
