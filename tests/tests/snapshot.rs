//! Snapshots end to end: `muster snapshot save` on a 3-server cluster and `restore` on a
//! fresh one (every key with its flags and lock, the external node with its service, check
//! and session, identical; no index going backwards); damaged files refused with nothing
//! changed; ACLs asking `acl:write`; a restore past what one Raft entry used to carry
//! (32 MiB) applied identically on every server; a leader killed mid-restore leaving the old
//! state or the new, never a mix.

use std::path::Path;
use std::time::Duration;

use muster_tests::*;
use serde_json::{json, Value};

/// Drops the fields that are Raft indexes, which differ between clusters by design.
fn strip_indexes(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.ends_with("Index"))
                .map(|(k, v)| (k.clone(), strip_indexes(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_indexes).collect()),
        v => v.clone(),
    }
}

async fn ok(r: anyhow::Result<Resp>) -> Resp {
    let r = r.expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

/// Writes the state the save/restore test compares: KV (flags, binary values), an external
/// node with a service and a check, a session on it holding a lock.
async fn seed(a: &Agent) -> String {
    ok(put(&a.url("/v1/kv/app/config/db?flags=42"), b"postgres://db").await).await;
    ok(put(&a.url("/v1/kv/bin/blob"), &[0, 1, 2, 3, 4]).await).await;
    ok(put(&a.url("/v1/kv/app/feature/x"), b"on").await).await;
    let reg = json!({
        "Node": "ext1", "Address": "192.0.2.10", "NodeMeta": {"kind": "external"},
        "Service": {"ID": "search1", "Service": "search", "Port": 9200, "Tags": ["es"]},
        "Check": {"CheckID": "search-alive", "Name": "search alive", "Status": "passing",
                  "ServiceID": "search1"}
    });
    ok(put(&a.url("/v1/catalog/register"), reg.to_string().as_bytes()).await).await;
    let s = json!({"Name": "lock-holder", "Node": "ext1", "Checks": [], "TTL": "3600s"});
    let s = ok(put(&a.url("/v1/session/create"), s.to_string().as_bytes()).await).await;
    let id = s.json()["ID"].as_str().expect("session id").to_string();
    let lock = ok(put(&a.url(&format!("/v1/kv/locks/leader?acquire={id}")), b"me").await).await;
    assert_eq!(lock.text(), "true");
    id
}

/// What the comparison reads on `a` (stale: this very server's state).
async fn state_of(a: &Agent) -> Vec<Value> {
    state_in(a, "stale").await
}

/// What the comparison reads on `a`, in consistency `mode`.
async fn state_in(a: &Agent, mode: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/v1/kv/?recurse&",
        "/v1/catalog/node/ext1?",
        "/v1/health/node/ext1?",
        "/v1/session/list?",
        "/v1/catalog/service/search?",
    ] {
        let path = format!("{path}{mode}");
        let r = get(&a.url(&path)).await.expect("read");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        out.push(strip_indexes(&r.json()));
    }
    out
}

fn index_of(r: &Resp) -> u64 {
    r.header("x-consul-index")
        .and_then(|v| v.parse().ok())
        .expect("X-Consul-Index")
}

fn run_ok(a: &Agent, args: &[&str]) -> String {
    let out = a.cli(args);
    assert!(
        out.status.success(),
        "muster {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn save(a: &Agent, file: &Path) -> String {
    run_ok(a, &["snapshot", "save", &file.display().to_string()])
}

#[tokio::test(flavor = "multi_thread")]
async fn save_on_three_servers_and_restore_on_a_fresh_cluster() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("backup.snap");
    let (want, session) = {
        let a = start_servers(&dir.path().join("a"), 3, &[]).await?;
        let session = seed(&a[1]).await;
        let want = state_in(&a[0], "consistent").await;
        // Written through a follower, read consistently: the snapshot has the seed.
        let out = save(&a[2], &file).await;
        assert!(
            out.starts_with("Saved and verified snapshot to index "),
            "{out}"
        );
        let inspect = run_ok(&a[0], &["snapshot", "inspect", &file.display().to_string()]);
        assert!(inspect.starts_with(" ID "), "{inspect}");
        assert!(inspect.contains("\n Index "), "{inspect}");
        assert!(inspect.contains("\n Type "), "{inspect}");
        let kv_line = inspect
            .lines()
            .find(|l| l.starts_with(" kv "))
            .unwrap_or_else(|| panic!("no kv row: {inspect}"));
        assert_eq!(kv_line.split_whitespace().nth(1), Some("4"), "{inspect}");
        // A client agent forwards the save to a server, as Consul's does.
        let client = Agent::start(
            "c1",
            &dir.path().join("a/c1"),
            &["-retry-join", &a[0].serf.to_string()],
        )?;
        let via_client = dir.path().join("via-client.snap");
        let f = via_client.display().to_string();
        wait_until(
            "a save through the client",
            Duration::from_secs(15),
            || async {
                client
                    .cli(&["snapshot", "save", &f])
                    .status
                    .success()
                    .then_some(())
            },
        )
        .await?;
        let inspect = run_ok(&client, &["snapshot", "inspect", &f]);
        assert!(inspect.contains("\n kv "), "{inspect}");
        (want, session)
    };
    assert_eq!(want[3][0]["ID"], session.as_str());
    assert_eq!(want[0].as_array().map(Vec::len), Some(4), "{:?}", want[0]);

    let b = start_servers(&dir.path().join("b"), 3, &[]).await?;
    ok(put(
        &b[0].url("/v1/kv/b/only?flags=7"),
        b"gone after the restore",
    )
    .await)
    .await;
    ok(put(&b[0].url("/v1/kv/b/more"), b"raise the index").await).await;
    let before_kv = index_of(&ok(get(&b[0].url("/v1/kv/?recurse")).await).await);
    let before_nodes = index_of(&ok(get(&b[0].url("/v1/catalog/nodes")).await).await);
    let out = run_ok(&b[1], &["snapshot", "restore", &file.display().to_string()]);
    assert!(out.contains("Restored snapshot"), "{out}");

    for s in &b {
        let got = wait_until("the restored state", Duration::from_secs(10), || async {
            let got = state_of(s).await;
            (got == want).then_some(got)
        })
        .await;
        assert!(
            got.is_ok(),
            "{}: {:?}\nwant {:?}",
            s.name,
            state_of(s).await,
            want
        );
    }
    let kv = ok(get(&b[0].url("/v1/kv/?recurse")).await).await;
    assert!(index_of(&kv) >= before_kv, "kv index went backwards");
    for e in kv.json().as_array().expect("entries") {
        assert!(e["ModifyIndex"].as_u64() >= Some(before_kv), "{e}");
    }
    let nodes = ok(get(&b[0].url("/v1/catalog/nodes")).await).await;
    assert!(
        index_of(&nodes) >= before_nodes,
        "catalog index went backwards"
    );
    // The lock is still held by the restored session.
    let lock = ok(get(&b[2].url("/v1/kv/locks/leader")).await).await;
    assert_eq!(lock.json()[0]["Session"], session.as_str());
    // A blocking query from before the restore wakes with a newer index.
    let blocked = get(&b[0].url(&format!("/v1/kv/b/only?index={before_kv}&wait=1s"))).await?;
    assert_eq!(blocked.status, 404);
    assert!(index_of(&blocked) > before_kv);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_snapshots_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let a = single_server(dir.path(), "s1", &[]).await?;
    ok(put(&a.url("/v1/kv/keep?flags=3"), b"kept").await).await;
    let file = dir.path().join("good.snap");
    save(&a, &file).await;
    ok(put(&a.url("/v1/kv/later"), b"after the save").await).await;
    let before = ok(get(&a.url("/v1/kv/?recurse")).await).await;
    let good = std::fs::read(&file)?;

    let mut corrupt = good.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x55;
    let cases: [(&str, Vec<u8>); 3] = [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("corrupted", corrupt),
        ("not an archive", b"hello".to_vec()),
    ];
    for (what, bytes) in cases {
        let r = put(&a.url("/v1/snapshot"), &bytes).await?;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(
            r.text().starts_with("snapshot is damaged: "),
            "{what}: {}",
            r.text()
        );
        let path = dir.path().join(format!("{}.snap", what.replace(' ', "-")));
        std::fs::write(&path, &bytes)?;
        for cmd in ["restore", "inspect"] {
            let out = a.cli(&["snapshot", cmd, &path.display().to_string()]);
            assert_eq!(out.status.code(), Some(1), "{what} {cmd}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("Error verifying snapshot file: snapshot is damaged: "),
                "{what} {cmd}: {err}"
            );
        }
    }
    let after = ok(get(&a.url("/v1/kv/?recurse")).await).await;
    assert_eq!(after.json(), before.json());
    assert_eq!(index_of(&after), index_of(&before));

    // The good file restores: `later` goes, `keep` stays.
    ok(put(&a.url("/v1/snapshot"), &good).await).await;
    let keys = ok(get(&a.url("/v1/kv/?keys")).await).await;
    assert_eq!(keys.json(), json!(["keep"]));
    Ok(())
}

/// 85 values of 400 KiB (under Consul's 512 KiB value limit): 34 MiB of state, past the
/// 32 MiB one Raft entry used to carry. Mostly repetitive, so that a debug build compresses
/// it fast, with [`BIG_NOISE`] bytes of noise each, so that the archive (which a restore
/// stages as it is, compressed) still takes several chunks: about 5 MiB.
const BIG_KEYS: usize = 85;
const BIG_VALUE: usize = 400 << 10;
const BIG_NOISE: usize = 64 << 10;

fn big_value(i: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let noise = std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    });
    let line = format!("value {i:03} of the big restore, ");
    let text = line.bytes().cycle();
    noise.take(BIG_NOISE).chain(text).take(BIG_VALUE).collect()
}

/// The archive of a state of the big keys under `prefix`, written on a single server of its
/// own (writing through one server is quicker than through three).
async fn big_archive(root: &Path, prefix: &str) -> Vec<u8> {
    let a = single_server(root, "gen", &[]).await.expect("server");
    for i in 0..BIG_KEYS {
        let url = a.url(&format!("/v1/kv/{prefix}/{i:03}?flags={i}"));
        ok(put(&url, &big_value(i)).await).await;
    }
    let file = root.join(format!("{prefix}.snap"));
    save(&a, &file).await;
    std::fs::read(&file).expect("archive")
}

/// Runs a restore until it succeeds, 3 times at most: on a loaded machine a debug build's
/// leader may change under it (or be missing for a moment), and such a restore fails whole,
/// changing nothing, as the callers check.
async fn restore_until_ok(url: &str, archive: &[u8]) -> anyhow::Result<Resp> {
    let mut last = String::new();
    for _ in 0..3 {
        let r = put_slow(url, archive.to_vec()).await?;
        if r.status == 200 {
            return Ok(r);
        }
        last = r.text();
        assert!(
            last.contains("nothing was changed") || last.contains("No cluster leader"),
            "{last}"
        );
    }
    anyhow::bail!("the restore kept failing: {last}")
}

/// The two tests that move tens of MiB through three debug servers run one at a time, so
/// that neither starves the other's elections of CPU.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A PUT with room for a large body to be restored in a debug build.
async fn put_slow(url: &str, body: Vec<u8>) -> anyhow::Result<Resp> {
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?
        .put(url)
        .body(body)
        .send()
        .await?;
    Ok(Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await?.to_vec(),
    })
}

/// The keys `a` holds (stale: this very server's state) and its KV index.
async fn keys_on(a: &Agent) -> Option<(Vec<String>, u64)> {
    let r = get(&a.url("/v1/kv/?keys&stale")).await.ok()?;
    if r.status == 404 {
        return Some((Vec::new(), index_of(&r)));
    }
    let keys = serde_json::from_value(r.json()).ok()?;
    Some((keys, index_of(&r)))
}

fn big_keys(prefix: &str) -> Vec<String> {
    (0..BIG_KEYS).map(|i| format!("{prefix}/{i:03}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_past_32_mib_applies_identically_on_every_server() -> anyhow::Result<()> {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir()?;
    let archive = big_archive(dir.path(), "big").await;
    let s = start_servers(dir.path(), 3, &[]).await?;
    ok(put(&s[0].url("/v1/kv/after"), b"gone after the restore").await).await;
    let before = index_of(&ok(get(&s[0].url("/v1/kv/after")).await).await);

    // Through a follower's API: it drives the restore, forwarding every chunk to the leader.
    let leader = wait_for_agreed_leader(&s, Duration::from_secs(10)).await?;
    let via = (leader.unwrap_or(0) + 1) % s.len();
    let r = restore_until_ok(&s[via].url("/v1/snapshot"), &archive).await?;
    let restored = r.json()["Index"].as_u64().expect("Index");
    assert!(restored > before);

    let want = big_keys("big");
    let mut indexes = Vec::new();
    for a in &s {
        let (keys, index) = wait_until("the restored keys", Duration::from_secs(30), || async {
            keys_on(a).await.filter(|(k, _)| *k == want)
        })
        .await?;
        assert_eq!(keys.len(), BIG_KEYS);
        indexes.push(index);
        // A sample of rows: the value, the flags, the restore's index on every server.
        for i in (0..BIG_KEYS).step_by(33) {
            let r = ok(get(&a.url(&format!("/v1/kv/big/{i:03}?raw&stale"))).await).await;
            assert_eq!(r.body, big_value(i), "{} big/{i:03}", a.name);
            let e = ok(get(&a.url(&format!("/v1/kv/big/{i:03}?stale"))).await).await;
            assert_eq!(e.json()[0]["Flags"], i, "{}", a.name);
            assert_eq!(e.json()[0]["ModifyIndex"], restored, "{}", a.name);
        }
    }
    assert_eq!(indexes, vec![restored; 3], "KV index per server");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_mid_restore_leaves_the_old_state_or_the_new() -> anyhow::Result<()> {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir()?;
    let archive = big_archive(dir.path(), "new").await;
    let mut s = start_servers(dir.path(), 3, &[]).await?;
    let old: Vec<String> = (0..5).map(|i| format!("old/{i}")).collect();
    for k in &old {
        ok(put(&s[0].url(&format!("/v1/kv/{k}")), b"old").await).await;
    }

    let leader = wait_for_agreed_leader(&s, Duration::from_secs(10))
        .await?
        .expect("a leader among the servers");
    let follower = (leader + 1) % 3;
    let before = settled_raft_index(&s[follower]).await?;
    let url = s[leader].url("/v1/snapshot");
    let restore = tokio::spawn(put_slow_owned(url, archive.clone()));
    // Killed once chunks are being committed (a few entries past the settled index).
    wait_until(
        "restore chunks committed",
        Duration::from_secs(60),
        || async {
            let now = raft_applied_index(&s[follower]).await.ok()?;
            (now >= before + 2).then_some(())
        },
    )
    .await?;
    s[leader].kill9();
    let answered = restore.await?;
    let survivors: Vec<Agent> = s
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, a)| a)
        .collect();
    wait_for_agreed_leader(&survivors, Duration::from_secs(30)).await?;

    let new = big_keys("new");
    let mut seen = Vec::new();
    for a in &survivors {
        let whole = wait_until("a whole state", Duration::from_secs(30), || async {
            keys_on(a).await.filter(|(k, _)| *k == old || *k == new)
        })
        .await;
        let Ok((keys, _)) = whole else {
            panic!("{} holds a mix: {:?}", a.name, keys_on(a).await);
        };
        seen.push(keys);
    }
    assert_eq!(seen[0], seen[1], "the survivors disagree");
    if matches!(&answered, Ok(r) if r.status == 200) {
        assert_eq!(seen[0], new, "an acknowledged restore was lost");
    }

    // Whatever was left staged does not stand in the way of the next restore.
    restore_until_ok(&survivors[0].url("/v1/snapshot"), &archive).await?;
    for a in &survivors {
        wait_until("the second restore", Duration::from_secs(30), || async {
            keys_on(a).await.filter(|(k, _)| *k == new)
        })
        .await?;
    }
    Ok(())
}

async fn put_slow_owned(url: String, body: Vec<u8>) -> anyhow::Result<Resp> {
    put_slow(&url, body).await
}

const ROOT: &str = "root-secret";

#[tokio::test(flavor = "multi_thread")]
async fn with_acls_snapshots_need_acl_write() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("config");
    std::fs::create_dir_all(&conf)?;
    std::fs::write(
        conf.join("acl.hcl"),
        format!(
            "acl {{\n enabled = true\n default_policy = \"deny\"\n tokens {{\n  initial_management = \"{ROOT}\"\n }}\n}}\n"
        ),
    )?;
    let a = single_server(
        dir.path(),
        "s1",
        &["-config-dir", &conf.display().to_string()],
    )
    .await?;
    wait_until("management token", Duration::from_secs(15), || {
        let url = a.url("/v1/acl/token/self");
        async move { (call("GET", &url, Some(ROOT), None).await.status == 200).then_some(()) }
    })
    .await?;
    let policy = json!({"Name": "ops", "Rules": "operator = \"write\"\nkey_prefix \"\" { policy = \"write\" }"});
    assert_eq!(
        call("PUT", &a.url("/v1/acl/policy"), Some(ROOT), Some(policy))
            .await
            .status,
        200
    );
    let t = call(
        "PUT",
        &a.url("/v1/acl/token"),
        Some(ROOT),
        Some(json!({"Policies": [{"Name": "ops"}]})),
    )
    .await;
    let ops = t.json()["SecretID"].as_str().expect("secret").to_string();

    for token in [None, Some(ops.as_str())] {
        let r = call("GET", &a.url("/v1/snapshot"), token, None).await;
        assert_eq!(r.status, 403, "{token:?}: {}", r.text());
        let r = call("PUT", &a.url("/v1/snapshot"), token, None).await;
        assert_eq!(r.status, 403, "{token:?}: {}", r.text());
    }
    let r = call("GET", &a.url("/v1/snapshot"), Some(ROOT), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call("PUT", &a.url("/v1/snapshot"), Some(ROOT), None).await;
    assert_eq!(r.status, 400, "{}", r.text());
    Ok(())
}

fn consul_data(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/consul-snapshot")
        .join(file)
}

fn recorded(file: &str) -> Value {
    let text = std::fs::read_to_string(consul_data(file)).expect("recorded answer");
    serde_json::from_str(&text).expect("recorded JSON")
}

/// Items of `want` (a recorded list) must be in `got`, indexes aside, matched by `key`.
fn contains_all(got: &Value, want: &Value, key: &[&str]) {
    let id = |v: &Value| key.iter().map(|k| v[*k].to_string()).collect::<Vec<_>>();
    let got = got.as_array().expect("list");
    for w in want.as_array().expect("recorded list") {
        let g = got
            .iter()
            .find(|g| id(g) == id(w))
            .unwrap_or_else(|| panic!("missing {:?} in {got:?}", id(w)));
        assert_eq!(strip_indexes(g), strip_indexes(w));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consul_snapshot_restores_into_a_fresh_agent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let a = single_server(dir.path(), "fresh", &[]).await?;
    let file = consul_data("consul-1.10.9-dev.snap").display().to_string();

    let inspect = run_ok(&a, &["snapshot", "inspect", &file]);
    let want = std::fs::read_to_string(consul_data("inspect.txt"))?;
    assert!(inspect.starts_with(&want), "got:\n{inspect}\nwant:\n{want}");
    assert!(
        inspect.contains("\n Skipped by a restore (consul snapshot)\n"),
        "{inspect}"
    );
    assert!(inspect.contains("\n ConnectCA "), "{inspect}");

    let out = run_ok(&a, &["snapshot", "restore", &file]);
    assert!(out.contains("Skipped 1 Autopilot record(s)"), "{out}");
    assert!(out.ends_with("Restored snapshot\n"), "{out}");

    let export = run_ok(&a, &["kv", "export"]);
    let export: Value = serde_json::from_str(&export)?;
    assert_eq!(export, recorded("kv-export.json"));
    let nodes = ok(get(&a.url("/v1/catalog/nodes")).await).await.json();
    contains_all(&nodes, &recorded("catalog-nodes.json"), &["Node"]);
    let services = ok(get(&a.url("/v1/catalog/services")).await).await.json();
    assert_eq!(services, recorded("catalog-services.json"));
    let sessions = ok(get(&a.url("/v1/session/list")).await).await.json();
    assert_eq!(
        strip_indexes(&sessions),
        strip_indexes(&recorded("sessions.json"))
    );
    let checks = ok(get(&a.url("/v1/health/state/any")).await).await.json();
    contains_all(
        &checks,
        &recorded("health-checks.json"),
        &["Node", "CheckID"],
    );
    let web = ok(get(&a.url("/v1/catalog/service/redis")).await)
        .await
        .json();
    assert_eq!(web[0]["ServiceAddress"], "127.0.0.5");
    assert_eq!(web[0]["ServiceTaggedAddresses"]["lan_ipv4"]["Port"], 6379);

    // The lock is still held by the restored session, and the session still holds it later.
    let session = recorded("sessions.json")[0]["ID"].clone();
    let lock = ok(get(&a.url("/v1/kv/locks/leader")).await).await.json();
    assert_eq!(lock[0]["Session"], session);
    assert_eq!(lock[0]["LockIndex"], 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lock = ok(get(&a.url("/v1/kv/locks/leader")).await).await.json();
    assert_eq!(lock[0]["Session"], session);
    Ok(())
}

fn snapshots_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_snapshots_are_written_by_the_leader_and_rotate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let snaps = dir.path().join("snaps");
    let conf = dir.path().join("config");
    std::fs::create_dir_all(&conf)?;
    std::fs::write(
        conf.join("snap.hcl"),
        format!(
            "snapshot_agent {{\n  snapshot {{\n    interval = \"1s\"\n    retain = 2\n  }}\n  local_storage {{\n    path = \"{}\"\n  }}\n}}\n",
            snaps.display()
        ),
    )?;
    let servers =
        start_servers(dir.path(), 3, &["-config-dir", &conf.display().to_string()]).await?;
    let leader = wait_for_agreed_leader(&servers, Duration::from_secs(10))
        .await?
        .expect("a leader among the servers");
    ok(put(
        &servers[0].url("/v1/kv/scheduled?flags=9"),
        b"in every snapshot",
    )
    .await)
    .await;

    // Four intervals: four snapshots written, the two newest kept.
    let first = wait_until("two snapshots", Duration::from_secs(10), || async {
        let n = snapshots_in(&snaps);
        (n.len() == 2).then_some(n)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = snapshots_in(&snaps);
    assert_eq!(later.len(), 2, "{later:?}");
    assert!(later[0] > first[0], "not rotated: {first:?} then {later:?}");
    for n in &later {
        assert!(n.starts_with("muster-") && n.ends_with(".snap"), "{n}");
        let out = run_ok(
            &servers[0],
            &["snapshot", "inspect", &snaps.join(n).display().to_string()],
        );
        assert!(out.contains("\n kv "), "{out}");
    }
    for (i, s) in servers.iter().enumerate() {
        let wrote = s.logs().contains("scheduled snapshot saved");
        assert_eq!(wrote, i == leader, "{}: only the leader writes", s.name);
    }
    Ok(())
}
