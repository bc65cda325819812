//! Gossip encryption end to end: agents with the same key form a cluster, agents with another
//! key or none cannot join and both sides log why, keys rotate across a running cluster
//! without any member failing, and the keyring outlives a restart.

use std::time::Duration;

use base64::Engine as _;
use muster_tests::*;

fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// The names `agent` sees alive.
async fn alive(agent: &Agent) -> Vec<String> {
    let Ok(r) = get(&agent.url("/v1/agent/members")).await else {
        return Vec::new();
    };
    let mut names: Vec<String> = r
        .json()
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["Status"] == 1)
                .filter_map(|m| m["Name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every name `agent` lists, whatever its status.
async fn listed(agent: &Agent) -> Vec<String> {
    let Ok(r) = get(&agent.url("/v1/agent/members")).await else {
        return Vec::new();
    };
    r.json()
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["Name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_alive(agents: &[&Agent], names: &[&str]) -> anyhow::Result<()> {
    let want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    for a in agents {
        wait_until(
            &format!("{} to see {names:?} alive", a.name),
            Duration::from_secs(20),
            || async { (alive(a).await == want).then_some(()) },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_with_the_same_key_form_a_cluster() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let k = key(1);
    let s1 = single_server(root.path(), "s1", &["-encrypt", &k]).await?;
    let c1 = Agent::start(
        "c1",
        &root.path().join("c1"),
        &["-encrypt", &k, "-join", &s1.serf.to_string()],
    )?;
    wait_alive(&[&s1, &c1], &["c1", "s1"]).await?;
    let self_info = get(&c1.url("/v1/agent/self")).await?.json();
    assert_eq!(self_info["Stats"]["serf_lan"]["encrypted"], "true");
    // The keyring file was written from -encrypt, as Consul writes serf/local.keyring.
    let ring = std::fs::read_to_string(c1.data_dir.join("serf/local.keyring"))?;
    assert_eq!(serde_json::from_str::<Vec<String>>(&ring)?, vec![k]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_with_another_key_or_none_cannot_join_and_both_sides_say_why() -> anyhow::Result<()>
{
    let root = tempfile::tempdir()?;
    let s1 = single_server(root.path(), "s1", &["-encrypt", &key(1)]).await?;
    let wrong = Agent::start(
        "wrong",
        &root.path().join("wrong"),
        &["-encrypt", &key(2), "-join", &s1.serf.to_string()],
    )?;
    let none = Agent::start("none", &root.path().join("none"), &[])?;
    // The keyed server also tries to reach the keyless agent: neither direction works.
    let _ = put(&s1.url(&format!("/v1/agent/join/{}", none.serf)), b"").await;
    let _ = put(&none.url(&format!("/v1/agent/join/{}", s1.serf)), b"").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(listed(&s1).await, vec!["s1"]);
    assert_eq!(listed(&wrong).await, vec!["wrong"]);
    assert_eq!(listed(&none).await, vec!["none"]);
    wait_until(
        "the server logs the refusals",
        Duration::from_secs(10),
        || async {
            s1.logs()
                .contains("gossip: refused a packet: no installed keys could decrypt the message")
                .then_some(())
        },
    )
    .await?;
    for a in [&wrong, &none] {
        wait_until(
            &format!("{} to log why it cannot talk", a.name),
            Duration::from_secs(10),
            || async {
                let logs = a.logs();
                (logs.contains("gossip: the peer refused our packets")
                    || logs.contains("gossip: refused a packet")
                    || logs.contains("gossip: undecodable packet"))
                .then_some(())
            },
        )
        .await?;
    }
    assert!(none
        .logs()
        .contains("gossip: the peer refused our packets, sent without a gossip key"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_is_let_through_while_rolling_encryption_out() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let k = key(3);
    let cfg = root.path().join("rollout.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"encrypt": "{k}", "encrypt_verify_incoming": false, "encrypt_verify_outgoing": false}}"#
        ),
    )?;
    let cfg = cfg.display().to_string();
    let s1 = single_server(root.path(), "s1", &[]).await?;
    let c1 = Agent::start(
        "c1",
        &root.path().join("c1"),
        &["-config-file", &cfg, "-join", &s1.serf.to_string()],
    )?;
    wait_alive(&[&s1, &c1], &["c1", "s1"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_keyring_survives_a_restart_without_encrypt() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let k = key(4);
    let s1 = single_server(root.path(), "s1", &["-encrypt", &k]).await?;
    let mut c1 = Agent::start(
        "c1",
        &root.path().join("c1"),
        &["-encrypt", &k, "-retry-join", &s1.serf.to_string()],
    )?;
    wait_alive(&[&s1, &c1], &["c1", "s1"]).await?;
    c1.terminate(Duration::from_secs(10))?;
    // Started again with neither -encrypt nor a config: the data dir's keyring is used.
    let mut c1 = Agent::start(
        "c1",
        &root.path().join("c1"),
        &["-retry-join", &s1.serf.to_string()],
    )?;
    wait_alive(&[&s1, &c1], &["c1", "s1"]).await?;
    assert!(!c1.logs().contains("gossip: refused"));
    c1.terminate(Duration::from_secs(10))?;
    Ok(())
}

/// Polls every agent's member list until `stop`; returns every (observer, member, status)
/// seen that was not alive.
async fn watch_failures(
    urls: Vec<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(String, String, u64)> {
    let mut bad = Vec::new();
    while !*stop.borrow() {
        for u in &urls {
            if let Ok(r) = get(u).await {
                for m in r.json().as_array().into_iter().flatten() {
                    let status = m["Status"].as_u64().unwrap_or(0);
                    if status != 1 {
                        bad.push((u.clone(), m["Name"].to_string(), status));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bad
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotates_across_the_cluster_without_a_member_failing() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (k1, k2) = (key(5), key(6));
    let agents = start_servers(root.path(), 3, &["-encrypt", &k1]).await?;
    let refs: Vec<&Agent> = agents.iter().collect();
    wait_alive(&refs, &["s1", "s2", "s3"]).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let urls = agents.iter().map(|a| a.url("/v1/agent/members")).collect();
    let watcher = tokio::spawn(watch_failures(urls, stop_rx));

    let run = |args: &[&str]| {
        let out = agents[1].cli(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = run(&["keyring", "-install", &k2]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out, "==> Installing new gossip encryption key...\n");
    let (code, out, _) = run(&["keyring", "-list"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("==> Gathering installed encryption keys...\n\ndc1 (LAN):\n"));
    assert!(out.contains(&format!("  {k1} [3/3]\n")), "{out}");
    assert!(out.contains(&format!("  {k2} [3/3]\n")), "{out}");
    // The primary key cannot be removed.
    let (code, _, err) = run(&["keyring", "-remove", &k1]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("Removing the primary key is not allowed"),
        "{err}"
    );
    assert!(err.contains("3/3 nodes reported failure"), "{err}");
    // Time for a few gossip rounds under both keys.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, out, err) = run(&["keyring", "-use", &k2]);
    assert_eq!(code, Some(0), "{out}{err}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, _, err) = run(&["keyring", "-remove", &k1]);
    assert_eq!(code, Some(0), "{err}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let list = get(&agents[0].url("/v1/operator/keyring")).await?.json();
    assert_eq!(list[0]["WAN"], false);
    assert_eq!(list[0]["Datacenter"], "dc1");
    assert_eq!(list[0]["NumNodes"], 3);
    assert_eq!(list[0]["Keys"], serde_json::json!({ k2.clone(): 3 }));
    assert_eq!(list[0]["PrimaryKeys"], serde_json::json!({ k2.clone(): 3 }));
    stop_tx.send(true)?;
    let bad = watcher.await?;
    assert!(
        bad.is_empty(),
        "members not alive during the rotation: {bad:?}"
    );
    wait_alive(&refs, &["s1", "s2", "s3"]).await?;
    for a in &agents {
        let ring = std::fs::read_to_string(a.data_dir.join("serf/local.keyring"))?;
        assert_eq!(
            serde_json::from_str::<Vec<String>>(&ring)?,
            vec![k2.clone()]
        );
    }
    // An agent that only knows the removed key is now a stranger.
    let old = Agent::start(
        "old",
        &root.path().join("old"),
        &["-encrypt", &k1, "-join", &agents[0].serf.to_string()],
    )?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(listed(&old).await, vec!["old"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_key_the_keyring_endpoint_says_encryption_is_off() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let s1 = single_server(root.path(), "s1", &[]).await?;
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let r = req(
            method,
            &s1.url("/v1/operator/keyring"),
            Some(br#"{"Key":"x"}"#.to_vec()),
        )
        .await?;
        assert_eq!(
            (r.status, r.text()),
            (500, "encryption not enabled".to_string())
        );
    }
    let out = s1.cli(&["keyring", "-list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("encryption not enabled"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsealed_keyring_request_is_ignored_even_while_plaintext_is_let_through(
) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cfg = root.path().join("lax.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"encrypt": "{}", "encrypt_verify_incoming": false}}"#,
            key(7)
        ),
    )?;
    let s1 = single_server(
        root.path(),
        "s1",
        &["-config-file", &cfg.display().to_string()],
    )
    .await?;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mut pkt = vec![0x30u8];
    pkt.extend(serde_json::to_vec(
        &serde_json::json!({"id": 1, "op": {"Install": key(8)}}),
    )?);
    for _ in 0..3 {
        sock.send_to(&pkt, s1.serf).await?;
    }
    let mut buf = [0u8; 2048];
    let answered = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await;
    if let Ok(Ok((n, _))) = answered {
        assert!(
            !buf[..n].starts_with(&[0x31]),
            "an unsealed request was answered"
        );
    }
    let list = get(&s1.url("/v1/operator/keyring")).await?.json();
    assert_eq!(list[0]["Keys"], serde_json::json!({ key(7): 1 }));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_strange_packets_is_logged_a_few_times_only() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let s1 = single_server(root.path(), "s1", &["-encrypt", &key(9)]).await?;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    for i in 0..500u32 {
        let mut junk = vec![1u8; 64];
        junk[1..5].copy_from_slice(&i.to_be_bytes());
        sock.send_to(&junk, s1.serf).await?;
    }
    wait_until("the refusal logged", Duration::from_secs(5), || async {
        s1.logs().contains("gossip: refused a packet").then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = s1.logs().matches("gossip: refused a packet").count();
    assert!(lines <= 2, "{lines} refusal lines for one flood");
    Ok(())
}

#[test]
fn keygen_prints_a_fresh_32_byte_key() -> anyhow::Result<()> {
    let run = || {
        std::process::Command::new(muster_bin())
            .arg("keygen")
            .output()
    };
    let (a, b) = (run()?, run()?);
    assert!(a.status.success());
    let k = String::from_utf8(a.stdout)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(k.trim_end())?;
    assert_eq!((bytes.len(), k.ends_with('\n')), (32, true));
    assert_ne!(k.as_bytes(), b.stdout.as_slice(), "two keys differ");
    Ok(())
}
