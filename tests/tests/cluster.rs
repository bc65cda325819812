//! Server clusters on loopback: formation through gossip, replication, failover, quorum loss,
//! snapshots. Every test runs real `muster` processes with their own redb data dirs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn three_servers_form_through_gossip_and_replicate() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let servers = start_servers(root.path(), 3, &[]).await?;
    let leader = wait_for_agreed_leader(&servers, Duration::from_secs(10))
        .await?
        .expect("leader is a server");
    let peers = get(&servers[0].url("/v1/status/peers")).await?.json();
    assert_eq!(
        peers.as_array().map(Vec::len),
        Some(3),
        "three voters: {peers}"
    );

    // Write through a follower; read it back from every server.
    let follower = &servers[(leader + 1) % 3];
    let w = put(&follower.url("/v1/kv/web/config"), b"v1").await?;
    assert_eq!((w.status, w.text().as_str()), (200, "true"));
    for s in &servers {
        let r = get(&s.url("/v1/kv/web/config")).await?;
        assert_eq!(r.status, 200, "{} default read", s.name);
        let v = r.json();
        assert_eq!(v[0]["Key"], "web/config");
        assert_eq!(v[0]["Value"], "djE=", "base64 of v1");
        assert_eq!(r.header("x-consul-knownleader").as_deref(), Some("true"));
        let idx: u64 = r.header("x-consul-index").unwrap_or_default().parse()?;
        assert_eq!(idx, v[0]["ModifyIndex"].as_u64().unwrap_or(0));
        let raw = get(&s.url("/v1/kv/web/config?raw&consistent")).await?;
        assert_eq!(raw.body, b"v1", "{} consistent raw read", s.name);
    }
    // Every server is a catalog node running the consul service.
    let nodes = wait_until("3 catalog nodes", Duration::from_secs(10), || async {
        let n = get(&servers[0].url("/v1/catalog/nodes")).await.ok()?.json();
        (n.as_array()?.len() == 3).then_some(n)
    })
    .await?;
    for s in &servers {
        assert!(nodes
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["Node"] == s.name.as_str())));
        let port: u16 = s
            .rpc
            .as_deref()
            .and_then(|r| r.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0);
        // The leader registers each server's `consul` service on its reconcile tick, which
        // may come after the node itself is in the catalog.
        let url = servers[0].url(&format!("/v1/catalog/node/{}", s.name));
        let node = wait_until("the consul service", Duration::from_secs(10), || async {
            let node = get(&url).await.ok()?.json();
            (!node["Services"]["consul"].is_null()).then_some(node)
        })
        .await?;
        assert_eq!(node["Services"]["consul"]["Port"], port, "{node}");
    }
    Ok(())
}

/// Writes are acknowledged once committed, before they are applied; a default-mode read that
/// follows on any server must still see them (read-your-writes, as with Consul).
#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_write_is_seen_by_the_next_read_on_any_server() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let servers = start_servers(root.path(), 3, &[]).await?;
    wait_for_agreed_leader(&servers, Duration::from_secs(10)).await?;
    let bases: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.url("/v1/kv/")).collect());
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8usize {
        let bases = bases.clone();
        writers.spawn(async move {
            let client = http();
            for i in 0..60usize {
                let url = |s: usize| format!("{}ryw/{w}", bases[(w + i + s) % bases.len()]);
                let r = client.put(url(0)).body(format!("{i}")).send().await?;
                anyhow::ensure!(
                    r.status() == 200 && r.text().await? == "true",
                    "write {w}/{i}"
                );
                for s in 0..bases.len() {
                    let r = client.get(format!("{}?raw", url(s))).send().await?;
                    let (status, body) = (r.status(), r.text().await?);
                    anyhow::ensure!(
                        status == 200 && body == i.to_string(),
                        "write {i} to ryw/{w} acknowledged, then a read answered {status} {body:?}"
                    );
                }
            }
            Ok(())
        });
    }
    while let Some(r) = writers.join_next().await {
        r??;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_kill9_during_writes_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut servers = start_servers(root.path(), 3, &[]).await?;
    let leader = wait_for_agreed_leader(&servers, Duration::from_secs(10))
        .await?
        .expect("leader");

    // A writer spreading PUTs over all three servers, recording what was acknowledged.
    let urls: Vec<String> = servers.iter().map(|s| s.url("/v1/kv/")).collect();
    let acked = Arc::new(Mutex::new(Vec::<u32>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let client = http();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let url = format!("{}stream/{i:06}", urls[i as usize % urls.len()]);
                if let Ok(r) = client.put(&url).body(format!("v{i}")).send().await {
                    if r.status().as_u16() == 200 && r.text().await.is_ok_and(|t| t == "true") {
                        acked.lock().expect("lock").push(i);
                    }
                }
                i += 1;
            }
        })
    };
    wait_until("writes flowing", Duration::from_secs(10), || async {
        (acked.lock().expect("lock").len() >= 50).then_some(())
    })
    .await?;
    let before = acked.lock().expect("lock").len();
    let killed_at = Instant::now();
    servers[leader].kill9();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // Writes resume through the survivors under a new leader.
    wait_until(
        "writes resuming after failover",
        Duration::from_secs(15),
        || async { (acked.lock().expect("lock").len() >= before + 100).then_some(()) },
    )
    .await?;
    eprintln!(
        "writes resumed {:?} after kill -9 of the leader",
        killed_at.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    writer.await?;
    let new_leader = leader_of(&servers[survivors[0]]).await.expect("new leader");
    assert_ne!(Some(new_leader.as_str()), servers[leader].rpc.as_deref());

    let acked = acked.lock().expect("lock").clone();
    let keys = get(&servers[survivors[0]].url("/v1/kv/stream/?keys&consistent"))
        .await?
        .json();
    let have: std::collections::HashSet<String> = keys
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    for i in &acked {
        assert!(
            have.contains(&format!("stream/{i:06}")),
            "acknowledged write {i} lost"
        );
    }

    // The killed server restarts from its data dir and catches up.
    servers[leader].restart()?;
    let want = have.len();
    let restarted = &servers[leader];
    wait_until(
        "restarted server caught up",
        Duration::from_secs(30),
        || async {
            let k = get(&restarted.url("/v1/kv/stream/?keys&stale"))
                .await
                .ok()?
                .json();
            (k.as_array()?.len() == want).then_some(())
        },
    )
    .await
    .map_err(with_logs(&servers))?;
    wait_for_agreed_leader(&servers, Duration::from_secs(15)).await?;
    // Autopilot removed it once gossip marked it failed; back, it rejoins as a non-voter and
    // is a voter again once stable (the default 10 s).
    let restarted = &servers[leader];
    wait_until("rejoined as a voter", Duration::from_secs(30), || async {
        let peers = get(&restarted.url("/v1/status/peers")).await.ok()?.json();
        (peers.as_array()?.len() == 3).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_quorum_fails_fast_but_stale_reads_answer() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let hold = root.path().join("hold.json");
    std::fs::write(&hold, r#"{"performance": {"rpc_hold_timeout": "2s"}}"#)?;
    let hold = hold.to_string_lossy().into_owned();
    let mut servers = start_servers(root.path(), 3, &["-config-file", &hold]).await?;
    let w = put(&servers[0].url("/v1/kv/app/x"), b"1").await?;
    assert_eq!(w.status, 200);
    // The value must be on the survivor before the others die.
    let survivor = 2;
    wait_until("value replicated", Duration::from_secs(10), || async {
        let r = get(&servers[survivor].url("/v1/kv/app/x?stale"))
            .await
            .ok()?;
        (r.status == 200).then_some(())
    })
    .await?;
    servers[0].kill9();
    servers[1].kill9();
    let s = &servers[survivor];

    // Writes fail with Consul's message, each within a bounded time.
    wait_until(
        "writes refused with No cluster leader",
        Duration::from_secs(20),
        || async {
            let t = Instant::now();
            let r = put(&s.url("/v1/kv/app/y"), b"2").await.ok()?;
            let took = t.elapsed();
            assert!(took < Duration::from_secs(12), "a write hung for {took:?}");
            (r.status == 500 && r.text() == "No cluster leader").then_some(())
        },
    )
    .await?;
    let t = Instant::now();
    let r = put(&s.url("/v1/kv/app/y"), b"2").await?;
    assert_eq!((r.status, r.text().as_str()), (500, "No cluster leader"));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "write took {:?}",
        t.elapsed()
    );

    // Default and consistent reads wait for a leader for rpc_hold_timeout (2 s here), never
    // answering from the survivor's possibly stale state, then fail as Consul's do.
    for path in ["/v1/kv/app/x", "/v1/kv/app/x?consistent"] {
        let t = Instant::now();
        let r = get(&s.url(path)).await?;
        let took = t.elapsed();
        assert_eq!(
            (r.status, r.text().as_str()),
            (500, "No cluster leader"),
            "{path}"
        );
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
            "{path}: answered after {took:?}, not after the 2 s hold"
        );
    }

    // Stale reads still answer from local state, saying there is no known leader.
    let r = get(&s.url("/v1/kv/app/x?stale")).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["Value"], "MQ==");
    assert_eq!(r.header("x-consul-knownleader").as_deref(), Some("false"));
    let leader = get(&s.url("/v1/status/leader")).await?.json();
    assert_eq!(leader, "");
    Ok(())
}

/// Writes a config file making servers snapshot every 50 entries and keep no log behind the
/// snapshot; returns its path for `-config-file`.
fn snapshot_often(root: &std::path::Path) -> anyhow::Result<String> {
    let cfg = root.join("raft.json");
    std::fs::write(
        &cfg,
        r#"{"raft_snapshot_threshold": 50, "raft_trailing_logs": 0}"#,
    )?;
    Ok(cfg.display().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_brings_a_new_server_up_to_date() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cfg = snapshot_often(root.path())?;
    let s1 = Agent::start(
        "s1",
        &root.path().join("s1"),
        &["-server", "-bootstrap-expect", "1", "-config-file", &cfg],
    )?;
    wait_until("s1 leader", Duration::from_secs(10), || leader_of(&s1)).await?;
    for i in 0..300 {
        let r = put(
            &s1.url(&format!("/v1/kv/bulk/{i:04}")),
            format!("value-{i}").as_bytes(),
        )
        .await?;
        assert_eq!(r.status, 200);
    }
    wait_until("s1 built a snapshot", Duration::from_secs(10), || async {
        s1.logs().contains("built snapshot").then_some(())
    })
    .await?;
    let s2 = Agent::start(
        "s2",
        &root.path().join("s2"),
        &[
            "-server",
            "-retry-join",
            &s1.serf.to_string(),
            "-config-file",
            &cfg,
        ],
    )?;
    wait_until("s2 has every key", Duration::from_secs(30), || async {
        let k = get(&s2.url("/v1/kv/bulk/?keys&stale")).await.ok()?.json();
        (k.as_array()?.len() == 300).then_some(())
    })
    .await?;
    assert!(
        s2.logs().contains("installed snapshot"),
        "s2 caught up without a snapshot:\n{}",
        s2.logs()
    );
    let r = get(&s2.url("/v1/kv/bulk/0123?raw&stale")).await?;
    assert_eq!(r.body, b"value-123");
    // Autopilot promotes it once healthy (and, past s1's first 11 s as leader, stable for
    // the default 10 s).
    wait_until("s2 added as a voter", Duration::from_secs(25), || async {
        let peers = get(&s1.url("/v1/status/peers")).await.ok()?.json();
        (peers.as_array()?.len() == 2).then_some(())
    })
    .await?;
    Ok(())
}

/// redb frees replaced pages only in durable commits; the state machine commits most batches
/// without fsync, so without a periodic durable one its file would grow with every write.
#[tokio::test(flavor = "multi_thread")]
async fn state_file_does_not_grow_with_rewrites_of_the_same_key() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "grow", &[]).await?;
    let value = vec![b'x'; 4096];
    let started = std::time::Instant::now();
    let mut writes = 0;
    // Sequential writes: each is its own Raft entry and its own state machine commit.
    while writes < 1500 || started.elapsed() < Duration::from_secs(3) {
        let r = put(&a.url("/v1/kv/same"), &value).await?;
        assert_eq!(r.status, 200);
        writes += 1;
    }
    let size = std::fs::metadata(a.data_dir.join("state.redb"))?.len();
    assert!(
        size < 8 << 20,
        "state.redb is {size} bytes after {writes} rewrites of one 4 KB key"
    );
    Ok(())
}

/// A server waiting for peers that never come (no leader, so its node is never in the
/// catalog) must sit idle, not spin on its own-node watch, and still stop on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_a_leader_idles_and_stops_on_sigterm() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut a = Agent::start(
        "lonely",
        &root.path().join("lonely"),
        &["-server", "-bootstrap-expect", "3"],
    )?;
    let pid = a.pid().expect("pid");
    tokio::time::sleep(Duration::from_secs(2)).await; // past startup work
    let (t0, w0) = (
        muster_tests::bench::cpu_ticks(pid),
        std::time::Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticks = muster_tests::bench::cpu_ticks(pid) - t0;
    let share = ticks as f64 / 100.0 / w0.elapsed().as_secs_f64();
    // A busy loop shows as ~100% of a core; an idle agent is well under 10%.
    assert!(
        share < 0.3,
        "idle agent used {:.0}% of a core",
        share * 100.0
    );
    a.terminate(Duration::from_secs(10))?;
    Ok(())
}

/// Starts `n` servers with fixed gossip and RPC ports, as a real deployment has, so that
/// restarted servers are found where they were.
async fn start_on_fixed_ports(
    root: &std::path::Path,
    n: usize,
    extra: &[&str],
) -> anyhow::Result<Vec<Agent>> {
    let expect = n.to_string();
    let mut first_serf = None;
    let mut servers = Vec::new();
    for i in 0..n {
        let (serf, rpc) = (free_port()?.to_string(), free_port()?.to_string());
        let name = format!("s{}", i + 1);
        let mut args = vec![
            "-server",
            "-bootstrap-expect",
            &expect,
            "-serf-lan-port",
            &serf,
            "-server-port",
            &rpc,
        ];
        let join = first_serf
            .get_or_insert_with(|| format!("127.0.0.1:{serf}"))
            .clone();
        if i > 0 {
            args.extend(["-retry-join", &join]);
        }
        args.extend(extra);
        servers.push(Agent::start(&name, &root.join(&name), &args)?);
    }
    wait_for_agreed_leader(&servers, Duration::from_secs(30)).await?;
    Ok(servers)
}

/// Writes `PREFIX/000` .. `PREFIX/{n-1}` (values `v0` ..) spread over the servers, each
/// acknowledged.
async fn write_keys(servers: &[Agent], prefix: &str, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let url = servers[i % servers.len()].url(&format!("/v1/kv/{prefix}/{i:03}"));
        let r = put(&url, format!("v{i}").as_bytes()).await?;
        assert_eq!(r.text(), "true", "write {prefix}/{i:03} acknowledged");
    }
    Ok(())
}

/// How many keys under `PREFIX/` `s` holds, read in `mode`.
async fn key_count(s: &Agent, prefix: &str, mode: &str) -> anyhow::Result<Option<usize>> {
    let keys = get(&s.url(&format!("/v1/kv/{prefix}/?keys&{mode}")))
        .await?
        .json();
    Ok(keys.as_array().map(Vec::len))
}

/// Asserts `s` holds exactly the `n` `collapse/` keys [`write_keys`] wrote, read in `mode`.
async fn assert_keys(s: &Agent, n: usize, mode: &str) -> anyhow::Result<()> {
    assert_eq!(
        key_count(s, "collapse", mode).await?,
        Some(n),
        "{} holds every acknowledged write",
        s.name
    );
    let v = get(&s.url(&format!("/v1/kv/collapse/042?raw&{mode}"))).await?;
    assert_eq!(v.text(), "v42");
    Ok(())
}

/// Three servers on fixed ports that acknowledged 100 `collapse/` writes, then all got
/// `kill -9` (a power cut): stopped, their data dirs left as the outage left them.
async fn collapsed_cluster(root: &std::path::Path) -> anyhow::Result<Vec<Agent>> {
    let mut servers = start_on_fixed_ports(root, 3, &[]).await?;
    write_keys(&servers, "collapse", 100).await?;
    // A write is acknowledged once a quorum holds it: the third server may still lack the
    // last ones. Recovering from that server alone would lose them, rightly (`muster
    // recover` is run on the survivor with the most recent data), so the power cut comes
    // once every server holds them all.
    for s in &servers {
        wait_until(
            "every server holds every write",
            Duration::from_secs(30),
            || async { (key_count(s, "collapse", "stale").await.ok()?? == 100).then_some(()) },
        )
        .await?;
    }
    for s in &mut servers {
        s.kill9();
    }
    Ok(servers)
}

/// Appends every agent's log to an error, for failure messages.
fn with_logs(servers: &[Agent]) -> impl Fn(anyhow::Error) -> anyhow::Error + '_ {
    move |e| {
        let logs: Vec<String> = servers
            .iter()
            .map(|s| format!("--- {}\n{}", s.name, s.logs()))
            .collect();
        anyhow::anyhow!("{e}\n{}", logs.join("\n"))
    }
}

/// The whole cluster dies at once (a power cut: `kill -9` of every server) and comes back from
/// its data dirs on the same addresses: the servers find each other again, elect a leader and
/// hold every acknowledged write; nothing is wiped, no `peers.json`.
#[tokio::test(flavor = "multi_thread")]
async fn a_collapsed_cluster_comes_back_from_its_data_dirs() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut servers = collapsed_cluster(root.path()).await?;
    for s in &mut servers {
        s.restart()?;
    }

    wait_for_agreed_leader(&servers, Duration::from_secs(30))
        .await
        .map_err(with_logs(&servers))?;
    for s in &servers {
        assert_keys(s, 100, "consistent").await?;
    }
    let r = put(&servers[1].url("/v1/kv/after-collapse"), b"x").await?;
    assert_eq!(r.text(), "true", "writes work after the restart");
    let peers = get(&servers[0].url("/v1/status/peers")).await?.json();
    assert_eq!(peers.as_array().map(Vec::len), Some(3), "{peers}");
    Ok(())
}

/// `muster recover -data-dir DIR`.
fn recover(dir: &std::path::Path) -> std::io::Result<std::process::Output> {
    std::process::Command::new(muster_bin())
        .args(["recover", "-data-dir"])
        .arg(dir)
        .output()
}

/// Restarts a recovered server and waits until it leads as the only voter; returns its
/// server RPC address.
async fn restart_leading_alone(survivor: &mut Agent) -> anyhow::Result<String> {
    survivor.restart()?;
    let me = survivor.rpc.clone().expect("rpc address");
    let s = &*survivor;
    wait_until(
        "the survivor leads alone",
        Duration::from_secs(15),
        || async { (leader_of(s).await? == me).then_some(()) },
    )
    .await
    .map_err(with_logs(std::slice::from_ref(s)))?;
    let peers = get(&s.url("/v1/status/peers")).await?.json();
    assert_eq!(peers, serde_json::json!([me]), "only the survivor votes");
    Ok(me)
}

/// Recovery before any snapshot: the whole log, membership entries included, is still there.
#[tokio::test(flavor = "multi_thread")]
async fn recovery_before_any_snapshot() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut servers = collapsed_cluster(root.path()).await?;
    let out = recover(&servers[2].data_dir)?;
    assert!(out.status.success(), "{out:?}");
    restart_leading_alone(&mut servers[2]).await?;
    assert_keys(&servers[2], 100, "consistent").await?;
    Ok(())
}

/// Two of three servers are lost for good. `muster recover` on the stopped survivor makes it
/// the only voter, keeping its data (here from a snapshot, its log purged); it leads alone at
/// once, and a new server that joins is added as a voter and brought up to date.
#[tokio::test(flavor = "multi_thread")]
async fn a_survivor_of_a_lost_quorum_recovers_with_its_data() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    // Snapshots every 50 entries, no trailing log: the membership entries are purged from
    // the log, so recovery must find the membership in the state machine.
    let cfg = snapshot_often(root.path())?;
    let mut servers = start_on_fixed_ports(root.path(), 3, &["-config-file", &cfg]).await?;
    write_keys(&servers, "collapse", 100).await?;
    wait_until("s1 built a snapshot", Duration::from_secs(10), || async {
        servers[0].logs().contains("built snapshot").then_some(())
    })
    .await?;
    // A running server's data dir is refused, untouched.
    let busy = recover(&servers[0].data_dir)?;
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("in use by another muster process"),
        "{busy:?}"
    );
    let empty = tempfile::tempdir()?;
    let none = recover(empty.path())?;
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("nothing to recover"),
        "{none:?}"
    );

    servers[1].kill9();
    servers[2].kill9();
    servers[0].kill9();
    let out = recover(&servers[0].data_dir)?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains("Recovered server s1"), "{said}");
    assert!(
        said.contains(servers[2].rpc.as_deref().unwrap_or("?")),
        "{said}"
    );

    let me = restart_leading_alone(&mut servers[0]).await?;
    assert_keys(&servers[0], 100, "consistent").await?;
    let r = put(&servers[0].url("/v1/kv/after-collapse"), b"x").await?;
    assert_eq!(r.text(), "true", "writes work at once");

    // A replacement server joins and becomes a voter with the survivor's data.
    let join = servers[0].serf.to_string();
    let fresh = Agent::start(
        "s4",
        &root.path().join("s4"),
        &["-server", "-retry-join", &join],
    )?;
    let both = [&servers[0], &fresh];
    wait_until("the new server votes", Duration::from_secs(30), || async {
        let p = get(&both[0].url("/v1/status/peers")).await.ok()?.json();
        (p.as_array()?.len() == 2).then_some(())
    })
    .await?;
    wait_until(
        "the new server has the data",
        Duration::from_secs(30),
        || async {
            let n = key_count(both[1], "collapse", "stale").await.ok()??;
            (n == 100).then_some(())
        },
    )
    .await?;
    assert_keys(&fresh, 100, "stale").await?;

    // A lost server that turns up after all, with its old data dir and the old membership,
    // is refused as retired and stops; started again, it rejoins as a new member.
    servers[1].restart()?;
    stops_as_retired(&mut servers[1]).await?;
    servers[1].restart()?;
    let all = [&servers[0], &fresh, &servers[1]];
    wait_until(
        "the returning server votes",
        Duration::from_secs(30),
        || async {
            let p = get(&all[0].url("/v1/status/peers")).await.ok()?.json();
            (p.as_array()?.len() == 3).then_some(())
        },
    )
    .await
    .map_err(with_logs(&servers[..2]))?;
    wait_until(
        "the returning server follows",
        Duration::from_secs(30),
        || async {
            let v = get(&all[2].url("/v1/kv/after-collapse?raw&stale"))
                .await
                .ok()?;
            (v.text() == "x").then_some(())
        },
    )
    .await?;
    for a in all {
        assert_eq!(
            leader_of(a).await.as_deref(),
            Some(me.as_str()),
            "{}",
            a.name
        );
    }
    Ok(())
}

/// Waits for a returning server to be refused as retired and to stop with an error.
async fn stops_as_retired(s: &mut Agent) -> anyhow::Result<()> {
    let status = s
        .wait_exit(Duration::from_secs(30))
        .map_err(with_logs(std::slice::from_ref(s)))?;
    assert!(!status.success(), "{}: {status}", s.name);
    let logs = s.logs();
    assert!(
        logs.contains("refuses Raft requests from Raft ID") && logs.contains("was retired"),
        "{} says why it stopped:\n{logs}",
        s.name
    );
    Ok(())
}

/// The two "lost" servers come back together after the survivor was recovered. In their old
/// membership they are a majority and could elect one of them, whose log would then overwrite
/// the survivor's. The survivor refuses them as retired: they stop, and started again they set
/// their old Raft data aside and rejoin with the survivor's data. Nothing the survivor
/// acknowledged, before or after the recovery, is lost.
#[tokio::test(flavor = "multi_thread")]
async fn lost_servers_returning_together_cannot_overwrite_a_recovered_survivor(
) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut servers = collapsed_cluster(root.path()).await?;
    let out = recover(&servers[0].data_dir)?;
    assert!(out.status.success(), "{out:?}");
    let me = restart_leading_alone(&mut servers[0]).await?;
    write_keys(&servers[..1], "after", 20).await?;

    servers[1].restart()?;
    servers[2].restart()?;
    for s in &mut servers[1..] {
        stops_as_retired(s).await?;
    }
    assert_keys(&servers[0], 100, "consistent").await?;
    assert_eq!(
        key_count(&servers[0], "after", "consistent").await?,
        Some(20),
        "the survivor keeps its writes from after the recovery"
    );

    for s in &mut servers[1..] {
        s.restart()?;
    }
    let peers = wait_until("both rejoin as voters", Duration::from_secs(60), || async {
        let p = get(&servers[0].url("/v1/status/peers")).await.ok()?.json();
        (p.as_array()?.len() == 3).then_some(p)
    })
    .await
    .map_err(with_logs(&servers))?;
    for s in &servers[1..] {
        assert!(
            peers
                .as_array()
                .is_some_and(|p| p.iter().any(|a| a.as_str() == s.rpc.as_deref())),
            "{} votes: {peers}",
            s.name
        );
        wait_until(
            "it has the survivor's writes",
            Duration::from_secs(30),
            || async {
                let n = key_count(s, "after", "stale").await.ok()??;
                (n == 20).then_some(())
            },
        )
        .await
        .map_err(with_logs(&servers))?;
        assert_keys(s, 100, "stale").await?;
        assert_eq!(
            leader_of(s).await.as_deref(),
            Some(me.as_str()),
            "{}",
            s.name
        );
        let aside = std::fs::read_dir(&s.data_dir)?
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with("superseded-"))
            .map(|e| e.path().join("raft.redb"));
        assert!(
            aside.is_some_and(|p| p.exists()),
            "{}'s old Raft data is kept aside",
            s.name
        );
    }
    let r = put(&servers[2].url("/v1/kv/after-rejoin"), b"x").await?;
    assert_eq!(r.text(), "true", "writes work through a rejoined server");
    Ok(())
}

/// The local and remote addresses of `pid`'s TCP sockets, from `/proc` (IPv4 only).
fn tcp_connections(pid: u32) -> Vec<(std::net::SocketAddr, std::net::SocketAddr)> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let addr = |s: &str| -> Option<std::net::SocketAddr> {
        let (ip, port) = s.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?.to_le_bytes();
        Some((ip, u16::from_str_radix(port, 16).ok()?).into())
    };
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            inodes
                .contains(&f.get(9)?.to_string())
                .then(|| Some((addr(f.get(1)?)?, addr(f.get(2)?)?)))?
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn outgoing_server_connections_leave_from_the_bind_address() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut servers: Vec<Agent> = Vec::new();
    for i in 0..3 {
        let (name, bind) = (format!("s{}", i + 1), format!("127.0.0.{}", i + 2));
        let mut args = vec!["-server", "-bootstrap-expect", "3", "-bind", &bind];
        let join = servers.first().map(|s| s.serf.to_string());
        if let Some(j) = &join {
            args.extend(["-retry-join", j]);
        }
        servers.push(Agent::start(&name, &root.path().join(&name), &args)?);
    }
    let leader = wait_for_agreed_leader(&servers, Duration::from_secs(30))
        .await?
        .unwrap_or(0);
    // A write through a follower: forwarded to the leader, then replicated to both.
    let w = put(&servers[(leader + 1) % 3].url("/v1/kv/bind"), b"x").await?;
    assert_eq!(w.status, 200);
    let rpc: Vec<std::net::SocketAddr> = servers
        .iter()
        .filter_map(|s| s.rpc.as_deref()?.parse().ok())
        .collect();
    for (i, s) in servers.iter().enumerate() {
        let pid = s.pid().expect("running");
        let outgoing: Vec<_> = tcp_connections(pid)
            .into_iter()
            .filter(|(local, remote)| rpc.contains(remote) && !rpc.contains(local))
            .collect();
        assert!(
            i != leader || !outgoing.is_empty(),
            "the leader {} has no connection to another server",
            s.name
        );
        for (local, remote) in outgoing {
            assert_eq!(
                local.ip().to_string(),
                format!("127.0.0.{}", i + 2),
                "{}'s connection to {remote} leaves from {local}, not its -bind address",
                s.name
            );
        }
    }
    Ok(())
}
