//! Raft peer management on real 3-server clusters: the configuration in Consul's JSON and
//! `operator raft list-peers`, moving leadership to a named server, removing a stopped
//! server, the refusals that protect the quorum, and a leader's graceful leave. Also what an
//! operator's supervisor sees of the process: `-pid-file` and `-log-json`.

use std::time::Duration;

use muster_tests::*;
use serde_json::Value;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_and_list_peers_show_every_server() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let servers = start_servers(root.path(), 3, &[]).await?;
    let leader = wait_for_agreed_leader(&servers, Duration::from_secs(10))
        .await?
        .expect("leader is a server");
    let config = wait_until(
        "nodes named in the configuration",
        Duration::from_secs(10),
        || async {
            let c = raft_configuration(&servers[0]).await.ok()?;
            let all_named = c["Servers"]
                .as_array()?
                .iter()
                .all(|s| s["Node"].as_str().is_some_and(|n| !n.is_empty()));
            all_named.then_some(c)
        },
    )
    .await?;
    assert_eq!(
        config["Servers"].as_array().map(Vec::len),
        Some(3),
        "{config}"
    );
    // The log index the configuration was written at (0: the one the cluster formed with).
    assert!(config["Index"].is_u64(), "{config}");
    for s in &servers {
        let rpc = s.rpc.as_deref().unwrap_or_default();
        let e = raft_entry(&config, rpc).unwrap_or_else(|| panic!("{rpc} in {config}"));
        assert_eq!(e["Node"], s.name.as_str(), "{e}");
        assert_eq!(e["Voter"], true, "{e}");
        assert_eq!(e["ProtocolVersion"], "3", "{e}");
        assert_eq!(e["Leader"], servers[leader].name == s.name, "{e}");
        assert!(e["ID"].as_str().is_some_and(|id| !id.is_empty()), "{e}");
    }
    let stale = get(&servers[1].url("/v1/operator/raft/configuration?stale")).await?;
    assert_eq!(stale.status, 200, "{}", stale.text());
    assert_eq!(stale.json()["Servers"].as_array().map(Vec::len), Some(3));

    let out = servers[2].cli(&["operator", "raft", "list-peers"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for col in ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"] {
        assert!(lines[0].contains(col), "{text}");
    }
    assert_eq!(text.matches("leader").count(), 1, "{text}");
    assert_eq!(text.matches("follower").count(), 2, "{text}");
    let out = servers[2].cli(&["operator", "raft", "list-peers", "-stale"]);
    assert!(out.status.success(), "{}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn transfer_leader_moves_leadership_to_the_named_server() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let servers = start_servers(root.path(), 3, &[]).await?;
    let w = put(&servers[0].url("/v1/kv/before"), b"1").await?;
    assert_eq!(w.status, 200);
    for step in 0..2 {
        let current = wait_for_agreed_leader(&servers, Duration::from_secs(10))
            .await?
            .expect("leader is a server");
        let target = &servers[(current + 1 + step) % 3];
        if target.name == servers[current].name {
            continue;
        }
        let config = raft_configuration(&servers[0]).await?;
        let rpc = target.rpc.as_deref().unwrap_or_default();
        let id = raft_entry(&config, rpc).expect("target in configuration")["ID"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // Asked through a server that is neither the leader nor the target.
        let via = &servers[3
            - current
            - servers
                .iter()
                .position(|s| s.name == target.name)
                .unwrap_or(0)];
        let out = via.cli(&["operator", "raft", "transfer-leader", "-id", &id]);
        assert!(
            out.status.success(),
            "transfer: {} {}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stdout(&out).contains("Success"), "{}", stdout(&out));
        let now = wait_for_agreed_leader(&servers, Duration::from_secs(10)).await?;
        assert_eq!(
            now.map(|i| servers[i].name.clone()),
            Some(target.name.clone()),
            "leadership moved to the target"
        );
    }
    // Without an ID, leadership moves to some other server.
    let before = wait_for_agreed_leader(&servers, Duration::from_secs(10)).await?;
    let r = call(
        "POST",
        &servers[0].url("/v1/operator/raft/transfer-leader"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["Success"], true);
    let after = wait_for_agreed_leader(&servers, Duration::from_secs(10)).await?;
    assert_ne!(before, after, "leadership moved");
    // Writes go on, and nothing written before is lost.
    let w = put(&servers[1].url("/v1/kv/after"), b"2").await?;
    assert_eq!(w.status, 200, "{}", w.text());
    for key in ["before", "after"] {
        let r = get(&servers[2].url(&format!("/v1/kv/{key}?raw"))).await?;
        assert_eq!(r.status, 200, "{key}");
    }
    // Unknown and self targets are refused with the reason.
    let r = call(
        "POST",
        &servers[0].url("/v1/operator/raft/transfer-leader?id=no-such-server"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    Ok(())
}

/// Gossip's status of `name` as `a` sees it (1 alive, 4 failed).
async fn member_status(a: &Agent, name: &str) -> Option<u64> {
    let r = get(&a.url("/v1/agent/members")).await.ok()?;
    r.json().as_array()?.iter().find(|m| m["Name"] == name)?["Status"].as_u64()
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_peer_of_a_stopped_server_and_the_quorum_refusals() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    // Autopilot would remove the stopped server itself: the operator does it here.
    let file = root.path().join("no-cleanup.json");
    std::fs::write(&file, br#"{"autopilot": {"cleanup_dead_servers": false}}"#)?;
    let file = file.display().to_string();
    let mut servers = start_servers(root.path(), 3, &["-config-file", &file]).await?;
    let leader = wait_for_agreed_leader(&servers, Duration::from_secs(10))
        .await?
        .expect("leader is a server");
    let stopped = (leader + 1) % 3;
    let alive = (leader + 2) % 3;
    let stopped_rpc = servers[stopped].rpc.clone().unwrap_or_default();
    let stopped_name = servers[stopped].name.clone();
    servers[stopped].kill9();
    wait_until(
        "the stopped server marked failed",
        Duration::from_secs(30),
        || async {
            (member_status(&servers[leader], &stopped_name).await == Some(4)).then_some(())
        },
    )
    .await?;

    // Removing the live follower would leave one live voter of two: refused.
    let alive_rpc = servers[alive].rpc.clone().unwrap_or_default();
    let out = servers[leader].cli(&["operator", "raft", "remove-peer", "-address", &alive_rpc]);
    assert!(!out.status.success(), "refused: {}", stdout(&out));
    assert!(stderr(&out).contains("quorum"), "{}", stderr(&out));
    // An unknown peer and a missing flag are refused too.
    let out = servers[leader].cli(&["operator", "raft", "remove-peer", "-id", "nope"]);
    assert!(!out.status.success());
    let out = servers[leader].cli(&["operator", "raft", "remove-peer"]);
    assert!(!out.status.success());
    assert_eq!(
        raft_configuration(&servers[leader]).await?["Servers"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // The stopped server goes, through the live follower.
    let out = servers[alive].cli(&["operator", "raft", "remove-peer", "-address", &stopped_rpc]);
    assert!(out.status.success(), "{} {}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("Removed peer with address"),
        "{}",
        stdout(&out)
    );
    let config = raft_configuration(&servers[alive]).await?;
    assert_eq!(
        config["Servers"].as_array().map(Vec::len),
        Some(2),
        "{config}"
    );
    assert!(raft_entry(&config, &stopped_rpc).is_none(), "{config}");
    let peers = get(&servers[leader].url("/v1/status/peers")).await?.json();
    assert_eq!(peers.as_array().map(Vec::len), Some(2), "{peers}");
    let w = put(&servers[alive].url("/v1/kv/still"), b"writable").await?;
    assert_eq!(w.status, 200, "{}", w.text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_the_last_voter_is_refused() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "solo", &[]).await?;
    let rpc = a.rpc.clone().unwrap_or_default();
    let r = call(
        "DELETE",
        &a.url(&format!("/v1/operator/raft/peer?address={rpc}")),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("last voter"), "{}", r.text());
    assert!(leader_of(&a).await.is_some(), "still leads");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_leaves_hands_over_first_and_loses_no_write() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut servers = start_servers(root.path(), 3, &[]).await?;
    let leader = wait_for_agreed_leader(&servers, Duration::from_secs(10))
        .await?
        .expect("leader is a server");
    for i in 0..20 {
        let w = put(&servers[i % 3].url(&format!("/v1/kv/k{i}")), b"v").await?;
        assert_eq!(w.status, 200, "{}", w.text());
    }
    let out = servers[leader].cli(&["leave"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = servers[leader].wait_exit(Duration::from_secs(30))?;
    assert!(status.success(), "exited cleanly: {status:?}");
    let logs = servers[leader].logs();
    assert!(
        logs.contains("transferring leadership"),
        "handed over first"
    );
    let rest: Vec<Agent> = servers
        .drain(..)
        .enumerate()
        .filter_map(|(i, a)| (i != leader).then_some(a))
        .collect();
    wait_for_agreed_leader(&rest, Duration::from_secs(10)).await?;
    let config = raft_configuration(&rest[0]).await?;
    assert_eq!(
        config["Servers"].as_array().map(Vec::len),
        Some(2),
        "{config}"
    );
    for i in 0..20 {
        let r = get(&rest[i % 2].url(&format!("/v1/kv/k{i}?raw"))).await?;
        assert_eq!(r.status, 200, "k{i} kept");
    }
    let w = put(&rest[0].url("/v1/kv/after-leave"), b"v").await?;
    assert_eq!(w.status, 200, "{}", w.text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_rules_govern_the_raft_and_autopilot_endpoints() -> anyhow::Result<()> {
    const ROOT: &str = "root-secret";
    let root = tempfile::tempdir()?;
    let dir = root.path().join("config");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("acl.hcl"),
        format!(
            "acl {{\n enabled = true\n default_policy = \"deny\"\n tokens {{\n  \
             initial_management = \"{ROOT}\"\n }}\n}}\n"
        ),
    )?;
    let a = single_server(
        root.path(),
        "s1",
        &["-config-dir", &dir.display().to_string()],
    )
    .await?;
    let config = a.url("/v1/operator/raft/configuration");
    wait_until("management token", Duration::from_secs(15), || async {
        (call("GET", &config, Some(ROOT), None).await.status == 200).then_some(())
    })
    .await?;
    let policy = serde_json::json!({"Name": "op-read", "Rules": "operator = \"read\""});
    let p = call("PUT", &a.url("/v1/acl/policy"), Some(ROOT), Some(policy)).await;
    assert_eq!(p.status, 200, "{}", p.text());
    let t = serde_json::json!({"Policies": [{"Name": "op-read"}]});
    let t = call("PUT", &a.url("/v1/acl/token"), Some(ROOT), Some(t)).await;
    let reader = t.json()["SecretID"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    assert_eq!(call("GET", &config, None, None).await.status, 403);
    assert_eq!(call("GET", &config, Some(&reader), None).await.status, 200);
    let transfer = a.url("/v1/operator/raft/transfer-leader");
    assert_eq!(
        call("POST", &transfer, Some(&reader), None).await.status,
        403
    );
    let peer = a.url("/v1/operator/raft/peer?id=1");
    assert_eq!(call("DELETE", &peer, Some(&reader), None).await.status, 403);
    // Management passes the rule and meets the refusal: no other voter to hand over to.
    assert_eq!(call("POST", &transfer, Some(ROOT), None).await.status, 400);
    // Autopilot: `operator` read for the GETs, write for the PUT.
    let autopilot = a.url("/v1/operator/autopilot/configuration");
    for path in ["configuration", "health", "state"] {
        let url = a.url(&format!("/v1/operator/autopilot/{path}"));
        assert_eq!(call("GET", &url, None, None).await.status, 403, "{path}");
        assert_eq!(
            call("GET", &url, Some(&reader), None).await.status,
            200,
            "{path}"
        );
    }
    let body = serde_json::json!({"CleanupDeadServers": true});
    let put = call("PUT", &autopilot, Some(&reader), Some(body.clone())).await;
    assert_eq!(put.status, 403);
    assert_eq!(
        call("PUT", &autopilot, Some(ROOT), Some(body)).await.status,
        200
    );
    // Metrics need `agent` read on this agent.
    let metrics = a.url("/v1/agent/metrics");
    assert_eq!(call("GET", &metrics, Some(&reader), None).await.status, 403);
    assert_eq!(call("GET", &metrics, Some(ROOT), None).await.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pid_file_lives_as_long_as_the_agent_and_logs_are_json_lines() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let pid_path = root.path().join("muster.pid");
    let pid_arg = pid_path.display().to_string();
    let mut a = single_server(root.path(), "s1", &["-pid-file", &pid_arg, "-log-json"]).await?;
    let pid = std::fs::read_to_string(&pid_path)?;
    assert_eq!(pid.trim(), a.pid().unwrap_or_default().to_string());
    let logs = a.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: Value = serde_json::from_str(l).map_err(|e| anyhow::anyhow!("{e}: {l}"))?;
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    let status = a.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status:?}");
    assert!(!pid_path.exists(), "pid file removed at exit");
    Ok(())
}
