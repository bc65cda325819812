//! Ready means ready: the moment an agent's `/v1/status/leader` names a leader, the leader's
//! own registration (node, `serfHealth`, the `consul` service) and the agent's node are in the
//! catalog, so a script may create a session at once. Each test polls as fast as a script
//! would and acts on the first answer that names a leader.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use muster_tests::*;

/// One client for the tight polling loops (a new client per request would dominate).
fn poller() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// Polls every agent's `/v1/status/leader` back to back until one names a leader; returns
/// that agent's index and the leader's address.
async fn first_named_leader(
    c: &reqwest::Client,
    agents: &[&Agent],
    timeout: Duration,
) -> anyhow::Result<(usize, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        for (i, a) in agents.iter().enumerate() {
            let Ok(r) = c.get(a.url("/v1/status/leader")).send().await else {
                continue;
            };
            if let Ok(serde_json::Value::String(l)) = r.json::<serde_json::Value>().await {
                if !l.is_empty() {
                    return Ok((i, l));
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no agent named a leader within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `PUT /v1/session/create` on `a` (its own node, `serfHealth`): the session ID.
async fn create_session(c: &reqwest::Client, a: &Agent) -> anyhow::Result<String> {
    let r = c.put(a.url("/v1/session/create")).body("{}").send().await?;
    let status = r.status();
    let body = r.text().await?;
    if !status.is_success() {
        bail!("session create on {} answered {status}: {body}", a.name);
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    v["ID"]
        .as_str()
        .map(str::to_string)
        .context("session create returned no ID")
}

fn serf_health(checks: &serde_json::Value) -> Option<&str> {
    checks
        .as_array()?
        .iter()
        .find(|c| c["CheckID"] == "serfHealth")?["Status"]
        .as_str()
}

/// Through `a`: the node running the `consul` service at `leader` (its server RPC address),
/// with a passing `serfHealth`. Fails if the catalog does not hold that registration.
async fn registered_leader(a: &Agent, leader: &str) -> anyhow::Result<String> {
    let list = get(&a.url("/v1/health/service/consul")).await?.json();
    let found = list.as_array().into_iter().flatten().find(|e| {
        let addr = e["Service"]["Address"]
            .as_str()
            .filter(|s| !s.is_empty())
            .or(e["Node"]["Address"].as_str())
            .unwrap_or_default();
        format!("{addr}:{}", e["Service"]["Port"]) == leader
    });
    let Some(e) = found else {
        bail!("the leader {leader} has no consul service in the catalog: {list}");
    };
    let node = e["Node"]["Node"].as_str().unwrap_or_default().to_string();
    let serf = serf_health(&e["Checks"]);
    anyhow::ensure!(
        serf == Some("passing"),
        "leader node {node}: serfHealth {serf:?}"
    );
    Ok(node)
}

/// Through `a`: its own node's `serfHealth` status.
async fn own_serf_health(a: &Agent) -> anyhow::Result<Option<String>> {
    let checks = get(&a.url(&format!("/v1/health/node/{}", a.name)))
        .await?
        .json();
    Ok(serf_health(&checks).map(str::to_string))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_can_be_created_the_moment_a_dev_agent_names_a_leader() -> anyhow::Result<()> {
    let c = poller();
    // The race is between the election and the leader's registration of itself: several
    // fresh starts, so a window that is only sometimes open shows.
    for round in 0..5 {
        let root = tempfile::tempdir()?;
        let name = format!("dev{round}");
        let a = Agent::start(&name, &root.path().join(&name), &["-dev"])?;
        let (_, leader) = first_named_leader(&c, &[&a], Duration::from_secs(20)).await?;
        assert_eq!(Some(leader.as_str()), a.rpc.as_deref(), "round {round}");
        let first = create_session(&c, &a)
            .await
            .with_context(|| format!("round {round}: first request after the leader"))?;

        // A blocking list returns when a session is created.
        let list = c.get(a.url("/v1/session/list")).send().await?;
        let index: u64 = list
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .context("session list without X-Consul-Index")?;
        let url = a.url(&format!("/v1/session/list?index={index}&wait=30s"));
        let started = Instant::now();
        let blocked = tokio::spawn(async move { get(&url).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!blocked.is_finished(), "round {round}: did not block");
        let second = create_session(&c, &a).await?;
        let r = tokio::time::timeout(Duration::from_secs(10), blocked)
            .await
            .context("blocking session list still waiting after a session was created")???;
        assert!(started.elapsed() < Duration::from_secs(10));
        let ids: Vec<String> = r
            .json()
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["ID"].as_str().map(str::to_string))
            .collect();
        assert!(
            ids.contains(&first) && ids.contains(&second),
            "round {round}: {ids:?}"
        );
    }
    Ok(())
}

/// The leader registers itself when it wins the election, not on a later timer: the time
/// from an agent knowing its leader (`X-Consul-KnownLeader` on a stale read) to its status
/// naming that leader is one Raft write.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_leader_registers_itself_at_once() -> anyhow::Result<()> {
    let c = poller();
    let mut waits = Vec::new();
    for round in 0..4 {
        let root = tempfile::tempdir()?;
        let name = format!("elect{round}");
        let a = Agent::start(&name, &root.path().join(&name), &["-dev"])?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut known_at = None;
        let named_at = loop {
            if known_at.is_none() {
                if let Ok(r) = c.get(a.url("/v1/kv/none?stale")).send().await {
                    let known = r.headers().get("x-consul-knownleader");
                    if known.is_some_and(|v| v == "true") {
                        known_at = Some(Instant::now());
                    }
                }
            } else if let Ok(r) = c.get(a.url("/v1/status/leader")).send().await {
                if r.json::<serde_json::Value>().await? != "" {
                    break Instant::now();
                }
            }
            if Instant::now() > deadline {
                bail!("round {round}: no leader named within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        waits.push(named_at - known_at.expect("known before named"));
    }
    // The periodic pass runs once a second; a registration left to it would take about that.
    println!("from known leader to named leader: {waits:?}");
    let slowest = waits.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(400),
        "from known leader to named leader: {waits:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn three_servers_name_a_leader_only_once_it_is_registered() -> anyhow::Result<()> {
    let c = poller();
    let root = tempfile::tempdir()?;
    let mut servers: Vec<Agent> = Vec::new();
    for i in 0..3 {
        let name = format!("s{}", i + 1);
        let mut args = vec!["-server", "-bootstrap-expect", "3"];
        let join;
        if let Some(first) = servers.first() {
            join = first.serf.to_string();
            args.extend(["-retry-join", join.as_str()]);
        }
        servers.push(Agent::start(&name, &root.path().join(&name), &args)?);
    }

    // Formation: the first leader any server names is registered, as is the naming server.
    let all: Vec<&Agent> = servers.iter().collect();
    let (i, leader) = first_named_leader(&c, &all, Duration::from_secs(30)).await?;
    let named_by = &servers[i];
    registered_leader(named_by, &leader).await?;
    assert_eq!(own_serf_health(named_by).await?.as_deref(), Some("passing"));
    create_session(&c, named_by).await?;

    // Failover: kill the leader; the new leader the survivors name is registered too.
    let old = servers
        .iter()
        .position(|s| s.rpc.as_deref() == Some(leader.as_str()))
        .context("the leader is one of the servers")?;
    let old_name = servers[old].name.clone();
    servers[old].kill9();
    let survivors: Vec<&Agent> = servers.iter().filter(|s| s.pid().is_some()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (j, new_leader) = loop {
        let (j, l) = first_named_leader(&c, &survivors, Duration::from_secs(30)).await?;
        if l != leader {
            break (j, l);
        }
        if Instant::now() > deadline {
            bail!("the survivors still name the killed leader {leader}");
        }
    };
    let named_by = survivors[j];
    let new_node = registered_leader(named_by, &new_leader).await?;
    assert_ne!(new_node, old_name);
    create_session(&c, named_by).await?;
    // The new leader marks its predecessor failed as soon as gossip reports it.
    wait_until(
        "the killed leader's serfHealth critical",
        Duration::from_secs(30),
        || async {
            let checks = get(&named_by.url(&format!("/v1/health/node/{old_name}")))
                .await
                .ok()?
                .json();
            (serf_health(&checks) == Some("critical")).then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_agent_is_ready_only_once_its_node_is_registered() -> anyhow::Result<()> {
    let c = poller();
    let root = tempfile::tempdir()?;
    let server = single_server(root.path(), "srv", &[]).await?;
    let join = server.serf.to_string();
    // The client's registration is one Raft write behind the gossip join that tells it of
    // the server: several clients, so a window that is only sometimes open shows.
    for round in 0..4 {
        let name = format!("cli{round}");
        let client = Agent::start(&name, &root.path().join(&name), &["-join", &join])?;
        let (_, leader) = first_named_leader(&c, &[&client], Duration::from_secs(20)).await?;
        assert_eq!(Some(leader.as_str()), server.rpc.as_deref());
        assert_eq!(
            own_serf_health(&client).await?.as_deref(),
            Some("passing"),
            "round {round}: the client named a leader before its node was registered"
        );
        create_session(&c, &client)
            .await
            .with_context(|| format!("round {round}: first request after the leader"))?;
    }
    Ok(())
}
