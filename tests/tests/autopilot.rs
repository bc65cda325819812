//! Autopilot on real clusters: a server killed with `kill -9` is removed from the Raft
//! configuration once gossip marks it failed, a fresh server joins as a non-voter and is
//! promoted only after `server_stabilization_time`, `min_quorum` keeps a dead server in a
//! three-server cluster (until an operator lowers it through the replicated configuration),
//! the configuration's GET/PUT with `?cas` and the CLI, and the health and state endpoints.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use muster_tests::*;
use serde_json::Value;

/// Writes an agent config file holding `autopilot` and returns its path.
fn autopilot_file(root: &Path, autopilot: Value) -> anyhow::Result<PathBuf> {
    let path = root.join("autopilot.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&serde_json::json!({ "autopilot": autopilot }))?,
    )?;
    Ok(path)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The leader's index among `servers`.
async fn leader(servers: &[Agent]) -> anyhow::Result<usize> {
    wait_for_agreed_leader(servers, Duration::from_secs(10))
        .await?
        .ok_or_else(|| anyhow::anyhow!("the leader is not one of the servers"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_is_cleaned_up_and_a_new_one_promoted_after_stabilization(
) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let file = autopilot_file(
        root.path(),
        serde_json::json!({ "server_stabilization_time": "2s" }),
    )?;
    let file = file.display().to_string();
    let mut servers = start_servers(root.path(), 3, &["-config-file", &file]).await?;
    let l = leader(&servers).await?;

    // All three healthy voters: one may fail.
    let health = wait_until("a healthy cluster", Duration::from_secs(10), || async {
        let r = get(&servers[l].url("/v1/operator/autopilot/health"))
            .await
            .ok()?;
        (r.status == 200 && r.json()["Servers"].as_array()?.len() == 3).then(|| r.json())
    })
    .await?;
    assert_eq!(health["Healthy"], true, "{health}");
    assert_eq!(health["FailureTolerance"], 1, "{health}");

    let dead = (l + 1) % 3;
    let dead_rpc = servers[dead].rpc.clone().unwrap_or_default();
    servers[dead].kill9();
    let started = Instant::now();
    wait_until(
        "autopilot removing the killed server",
        Duration::from_secs(30),
        || async {
            let c = raft_configuration(&servers[l]).await.ok()?;
            let n = c["Servers"].as_array()?.len();
            (n == 2 && raft_entry(&c, &dead_rpc).is_none()).then_some(())
        },
    )
    .await?;
    eprintln!("dead server removed after {:?}", started.elapsed());
    let w = put(&servers[l].url("/v1/kv/after-cleanup"), b"ok").await?;
    assert_eq!(w.status, 200, "{}", w.text());

    // A fresh server joins: first a non-voter, a voter once stable for 2 s.
    let join = servers[l].serf.to_string();
    let fresh = Agent::start(
        "s4",
        &root.path().join("s4"),
        &["-server", "-retry-join", &join, "-config-file", &file],
    )?;
    let fresh_rpc = fresh.rpc.clone().unwrap_or_default();
    let first = wait_until(
        "the new server in the configuration",
        Duration::from_secs(20),
        || async {
            let c = raft_configuration(&servers[l]).await.ok()?;
            raft_entry(&c, &fresh_rpc).cloned()
        },
    )
    .await?;
    let seen = Instant::now();
    assert_eq!(first["Voter"], false, "joins as a non-voter: {first}");
    let mine = wait_until(
        "the new server in autopilot's health",
        Duration::from_secs(5),
        || async {
            let health = get(&servers[l].url("/v1/operator/autopilot/health"))
                .await
                .ok()?
                .json();
            health["Servers"]
                .as_array()?
                .iter()
                .find(|s| s["Address"] == fresh_rpc.as_str())
                .cloned()
        },
    )
    .await?;
    assert_eq!(mine["Voter"], false, "{mine}");
    assert_eq!(mine["Name"], "s4", "{mine}");
    wait_until(
        "the new server promoted",
        Duration::from_secs(20),
        || async {
            let c = raft_configuration(&servers[l]).await.ok()?;
            (raft_entry(&c, &fresh_rpc)?["Voter"] == true).then_some(())
        },
    )
    .await?;
    let waited = seen.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "promoted after {waited:?}, before the 2 s stabilization time"
    );
    let c = raft_configuration(&servers[l]).await?;
    let voters = c["Servers"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|s| s["Voter"] == true).count());
    assert_eq!(voters, 3, "{c}");

    // The removed server comes back on its own data dir (a reboot that outlasted the
    // grace): it is let in again, as a non-voter first, and promoted once stable.
    servers[dead].restart()?;
    // A restart binds fresh ephemeral ports: the server's RPC address is its new one.
    let back_rpc = servers[dead].rpc.clone().unwrap_or_default();
    wait_until(
        "the removed server back as a voter",
        Duration::from_secs(30),
        || async {
            let c = raft_configuration(&servers[l]).await.ok()?;
            (raft_entry(&c, &back_rpc)?["Voter"] == true).then_some(())
        },
    )
    .await?;
    let w = put(&servers[dead].url("/v1/kv/after-return?consistent"), b"ok").await?;
    assert_eq!(w.status, 200, "{}", w.text());
    drop(fresh);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn min_quorum_keeps_a_dead_server_until_lowered() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let file = autopilot_file(root.path(), serde_json::json!({ "min_quorum": 3 }))?;
    let file = file.display().to_string();
    let mut servers = start_servers(root.path(), 3, &["-config-file", &file]).await?;
    let l = leader(&servers).await?;
    let dead = (l + 2) % 3;
    let dead_name = servers[dead].name.clone();
    let dead_rpc = servers[dead].rpc.clone().unwrap_or_default();
    servers[dead].kill9();

    // Autopilot sees it failed and unhealthy...
    let health = wait_until(
        "the killed server failed",
        Duration::from_secs(30),
        || async {
            let r = get(&servers[l].url("/v1/operator/autopilot/health"))
                .await
                .ok()?;
            let h = r.json();
            let s = h["Servers"]
                .as_array()?
                .iter()
                .find(|s| s["Name"] == dead_name.as_str())?
                .clone();
            (s["SerfStatus"] == "failed" && r.status == 429).then_some(h)
        },
    )
    .await?;
    assert_eq!(health["Healthy"], false, "{health}");
    assert_eq!(health["FailureTolerance"], 0, "{health}");
    // ...and keeps it, through several reconcile passes (one a second).
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let c = raft_configuration(&servers[l]).await?;
        assert!(
            raft_entry(&c, &dead_rpc).is_some(),
            "removed below min_quorum: {c}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Lowered through the replicated configuration (from a follower), it goes.
    let other = (l + 1) % 3;
    let out = servers[other].cli(&["operator", "autopilot", "set-config", "-min-quorum=0"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("Configuration updated!"),
        "{}",
        stdout(&out)
    );
    wait_until(
        "the dead server removed",
        Duration::from_secs(15),
        || async {
            let c = raft_configuration(&servers[l]).await.ok()?;
            raft_entry(&c, &dead_rpc).is_none().then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_round_trip_with_cas_and_the_health_endpoint() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let file = autopilot_file(
        root.path(),
        serde_json::json!({ "cleanup_dead_servers": false, "max_trailing_logs": 100 }),
    )?;
    let file = file.display().to_string();
    let a = single_server(root.path(), "s1", &["-config-file", &file]).await?;
    let url = a.url("/v1/operator/autopilot/configuration");

    // Seeded from the file by the first leader, Consul's defaults elsewhere.
    let c = wait_until(
        "the seeded configuration",
        Duration::from_secs(10),
        || async {
            let c = get(&url).await.ok()?.json();
            (c["ModifyIndex"].as_u64()? > 0).then_some(c)
        },
    )
    .await?;
    assert_eq!(c["CleanupDeadServers"], false, "{c}");
    assert_eq!(c["LastContactThreshold"], "200ms", "{c}");
    assert_eq!(c["MaxTrailingLogs"], 100, "{c}");
    assert_eq!(c["MinQuorum"], 0, "{c}");
    assert_eq!(c["ServerStabilizationTime"], "10s", "{c}");
    assert_eq!(c["RedundancyZoneTag"], "", "{c}");
    assert_eq!(c["DisableUpgradeMigration"], false, "{c}");
    assert_eq!(c["UpgradeVersionTag"], "", "{c}");
    let index = c["ModifyIndex"].as_u64().unwrap_or(0);
    assert_eq!(c["CreateIndex"], index, "{c}");

    // A stale CAS index changes nothing.
    let mut body = c.clone();
    body["MinQuorum"] = 3.into();
    body["ServerStabilizationTime"] = "5s".into();
    let bytes = serde_json::to_vec(&body)?;
    let r = put(&format!("{url}?cas={}", index + 1000), &bytes).await?;
    assert_eq!(
        (r.status, r.text().trim().to_string()),
        (200, "false".into())
    );
    assert_eq!(get(&url).await?.json()["MinQuorum"], 0);
    // The current one does.
    let r = put(&format!("{url}?cas={index}"), &bytes).await?;
    assert_eq!(
        (r.status, r.text().trim().to_string()),
        (200, "true".into())
    );
    let c = get(&url).await?.json();
    assert_eq!(c["MinQuorum"], 3, "{c}");
    assert_eq!(c["ServerStabilizationTime"], "5s", "{c}");
    assert_eq!(c["CreateIndex"], index, "{c}");
    assert!(c["ModifyIndex"].as_u64() > Some(index), "{c}");
    // Without cas: always true. A bad duration: 400.
    let r = put(
        &url,
        br#"{"CleanupDeadServers": true, "LastContactThreshold": "1s"}"#,
    )
    .await?;
    assert_eq!(
        (r.status, r.text().trim().to_string()),
        (200, "true".into())
    );
    let r = put(&url, br#"{"LastContactThreshold": "soon"}"#).await?;
    assert_eq!(r.status, 400, "{}", r.text());

    // The CLI reads and changes it.
    let out = a.cli(&[
        "operator",
        "autopilot",
        "set-config",
        "-min-quorum=2",
        "-max-trailing-logs=250",
        "-last-contact-threshold=200ms",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("Configuration updated!"),
        "{}",
        stdout(&out)
    );
    let out = a.cli(&["operator", "autopilot", "get-config"]);
    assert_eq!(
        stdout(&out),
        "CleanupDeadServers = true\nLastContactThreshold = 200ms\nMaxTrailingLogs = 250\n\
         MinQuorum = 2\nServerStabilizationTime = 0s\nRedundancyZoneTag = \"\"\n\
         DisableUpgradeMigration = false\nUpgradeVersionTag = \"\"\n"
    );

    // Health: one healthy leader.
    let r = get(&a.url("/v1/operator/autopilot/health")).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let h = r.json();
    assert_eq!(h["Healthy"], true, "{h}");
    assert_eq!(h["FailureTolerance"], 0, "{h}");
    let s = &h["Servers"][0];
    assert!(s["ID"].as_str().is_some_and(|id| id.len() == 36), "{h}");
    assert_eq!(s["Name"], "s1", "{h}");
    assert_eq!(
        s["Address"],
        a.rpc.clone().unwrap_or_default().as_str(),
        "{h}"
    );
    assert_eq!(s["SerfStatus"], "alive", "{h}");
    assert!(s["Version"].as_str().is_some_and(|v| !v.is_empty()), "{h}");
    assert_eq!(s["Leader"], true, "{h}");
    assert_eq!(s["LastContact"], "0s", "{h}");
    assert!(s["LastTerm"].as_u64() > Some(0), "{h}");
    assert!(s["LastIndex"].as_u64() > Some(0), "{h}");
    assert_eq!(s["Healthy"], true, "{h}");
    assert_eq!(s["Voter"], true, "{h}");
    assert!(
        s["StableSince"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
        "{h}"
    );

    // State, and its CLI.
    let st = get(&a.url("/v1/operator/autopilot/state")).await?.json();
    assert_eq!(st["Leader"], s["ID"], "{st}");
    assert_eq!(st["Voters"][0], s["ID"], "{st}");
    let out = a.cli(&["operator", "autopilot", "state"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).starts_with("Healthy:                      true\n"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("      Status:          leader\n"),
        "{}",
        stdout(&out)
    );
    Ok(())
}
