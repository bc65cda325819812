//! User events on real agents (one server, two clients): a `-node` filter reaches only the
//! matching node, an unfiltered event reaches every node once (the sender too), a blocking
//! `/v1/event/list` returns when one arrives, an oversize payload is refused with the limit,
//! and the server's Raft index does not move while events are fired.

use std::path::{Path, PathBuf};
use std::time::Duration;

use muster_tests::*;

/// Appends `== NAME LTIME` and then the payload to `DIR/SELF.user`.
const RECORD: &str = r#"dir=$(dirname "$0")
{ echo "== $SERF_USER_EVENT $SERF_USER_LTIME"; cat; } >> "$dir/$SERF_SELF_NAME.user"
"#;

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// How many times `node`'s handler ran for the event `name`.
fn runs(dir: &Path, node: &str, name: &str) -> usize {
    read(dir.join(format!("{node}.user")))
        .lines()
        .filter(|l| l.starts_with(&format!("== {name} ")))
        .count()
}

async fn wait_runs(dir: &Path, node: &str, name: &str) -> anyhow::Result<()> {
    let what = format!("{node}'s handler to run for {name}");
    wait_until(&what, Duration::from_secs(15), || async {
        (runs(dir, node, name) > 0).then_some(())
    })
    .await
}

/// The names of the events `/v1/event/list` shows on `a`.
async fn listed(a: &Agent) -> anyhow::Result<Vec<String>> {
    let v = get(&a.url("/v1/event/list")).await?.json();
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["Name"].as_str().map(str::to_string))
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn user_events_reach_matching_nodes_once_without_raft() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let h = root.path().join("handlers");
    std::fs::create_dir_all(&h)?;
    std::fs::write(h.join("record.sh"), RECORD)?;
    // Coordinates are the one periodic Raft write of an idle cluster: keep them out of the
    // window the index is compared over.
    let cfg = root.path().join("quiet.json");
    std::fs::write(&cfg, r#"{"sync_coordinate_interval_min": "1h"}"#)?;
    let handler = format!("user=sh {}", h.join("record.sh").display());
    let cfg = cfg.display().to_string();
    let args = ["-event-handler", handler.as_str(), "-config-file", &cfg];
    let s1 = single_server(root.path(), "s1", &args).await?;
    let join = s1.serf.to_string();
    let mut client_args = args.to_vec();
    client_args.extend(["-join", join.as_str()]);
    let c2 = Agent::start("c2", &root.path().join("c2"), &client_args)?;
    let c3 = Agent::start("c3", &root.path().join("c3"), &client_args)?;
    let all = [&s1, &c2, &c3];
    for a in all {
        wait_until("3 alive members", Duration::from_secs(20), || async {
            let m = get(&a.url("/v1/agent/members")).await.ok()?.json();
            let alive = m.as_array()?.iter().filter(|m| m["Status"] == 1).count();
            (alive == 3).then_some(())
        })
        .await?;
    }
    wait_until(
        "3 nodes in the catalog",
        Duration::from_secs(20),
        || async {
            let n = get(&s1.url("/v1/catalog/nodes")).await.ok()?.json();
            (n.as_array()?.len() == 3).then_some(())
        },
    )
    .await?;
    let before = settled_raft_index(&s1).await?;

    // (a) -node matching c2 only: c2's handler runs once, only c2 lists it.
    let out = s1.cli(&["event", "-name", "deploy", "-node", "^c2$", "v1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {:?}", out.stderr);
    let id = stdout
        .trim()
        .strip_prefix("Event ID: ")
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    wait_runs(&h, "c2", "deploy").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&h, "c2", "deploy"), 1);
    assert!(read(h.join("c2.user")).contains("== deploy 0\nv1\n"));
    assert_eq!((runs(&h, "s1", "deploy"), runs(&h, "c3", "deploy")), (0, 0));
    let on_c2 = get(&c2.url("/v1/event/list?name=deploy")).await?;
    let ev = &on_c2.json()[0];
    assert_eq!(ev["ID"], id.as_str());
    assert_eq!(ev["Payload"], "djE=");
    assert_eq!(ev["NodeFilter"], "^c2$");
    assert_eq!(ev["Version"], 1);
    assert_eq!(ev["LTime"], 0);
    assert!(listed(&s1).await?.is_empty());
    assert!(listed(&c3).await?.is_empty());

    // (b) A blocking list on c3 returns when an unfiltered event arrives; every node,
    // the sender c2 included, runs its handler once.
    let first = get(&c3.url("/v1/event/list?name=all")).await?;
    assert_eq!(first.json(), serde_json::json!([]));
    let index = first.header("X-Consul-Index").unwrap_or_default();
    assert_eq!(index, "1");
    let url = c3.url(&format!("/v1/event/list?name=all&index={index}&wait=20s"));
    let blocked = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!blocked.is_finished(), "the list did not block");
    let fired = put(&c2.url("/v1/event/fire/all"), b"hello").await?;
    assert_eq!(fired.status, 200, "{}", fired.text());
    let fired = fired.json();
    let woke = tokio::time::timeout(Duration::from_secs(5), blocked).await???;
    assert_eq!(woke.json()[0]["ID"], fired["ID"]);
    assert_ne!(woke.header("X-Consul-Index").unwrap_or_default(), "1");
    for a in all {
        wait_runs(&h, &a.name, "all").await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for a in all {
        assert_eq!(runs(&h, &a.name, "all"), 1, "{}", a.name);
        assert_eq!(listed(a).await?.iter().filter(|n| *n == "all").count(), 1);
    }

    // (c) Name and payload beyond the limit: refused, saying the limit.
    let big = vec![b'x'; 600];
    let refused = put(&c2.url("/v1/event/fire/big"), &big).await?;
    assert_eq!(refused.status, 413);
    assert!(refused.text().contains("512 bytes"), "{}", refused.text());
    let out = c2.cli(&["event", "-name", "big", &"x".repeat(600)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("512 bytes"));

    // (d) None of it went through Raft.
    assert_eq!(raft_applied_index(&s1).await?, before);
    Ok(())
}

/// With ACLs on, Consul's `event_prefix` rules: firing needs `event` write on the name, and
/// a list shows only the events the token may read.
#[tokio::test(flavor = "multi_thread")]
async fn event_rules_govern_firing_and_listing() -> anyhow::Result<()> {
    const ROOT: &str = "root-secret";
    let root = tempfile::tempdir()?;
    let dir = root.path().join("config");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("acl.hcl"),
        format!(
            "acl {{\n  enabled = true\n  default_policy = \"deny\"\n  tokens {{\n    \
             initial_management = \"{ROOT}\"\n  }}\n}}\n"
        ),
    )?;
    let dir = dir.display().to_string();
    let s1 = single_server(root.path(), "s1", &["-config-dir", &dir]).await?;
    let secret = wait_until(
        "a token of an event policy",
        Duration::from_secs(15),
        || async {
            let rules = r#"event_prefix "dep" { policy = "write" }"#;
            let policy = serde_json::json!({"Name": "deployer", "Rules": rules});
            let p = call("PUT", &s1.url("/v1/acl/policy"), Some(ROOT), Some(policy)).await;
            if p.status != 200 {
                return None;
            }
            let t = serde_json::json!({"Policies": [{"Name": "deployer"}]});
            let t = call("PUT", &s1.url("/v1/acl/token"), Some(ROOT), Some(t)).await;
            t.json()["SecretID"].as_str().map(str::to_string)
        },
    )
    .await?;
    let fire = |name: &str, token: &str| {
        let url = s1.url(&format!("/v1/event/fire/{name}"));
        let token = token.to_string();
        async move { call("PUT", &url, Some(&token), None).await }
    };
    assert_eq!(fire("deploy", &secret).await.status, 200);
    let denied = fire("restart", &secret).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(fire("restart", ROOT).await.status, 200);
    let names = |r: &Resp| -> Vec<String> {
        r.json()
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["Name"].as_str().map(str::to_string))
            .collect()
    };
    let all = wait_until("both events listed", Duration::from_secs(5), || async {
        let r = call("GET", &s1.url("/v1/event/list"), Some(ROOT), None).await;
        (names(&r).len() == 2).then_some(r)
    })
    .await?;
    assert_eq!(names(&all), ["deploy", "restart"]);
    let mine = call("GET", &s1.url("/v1/event/list"), Some(&secret), None).await;
    assert_eq!(names(&mine), ["deploy"]);
    assert_eq!(
        mine.header("X-Consul-Results-Filtered-By-ACLs").as_deref(),
        Some("true")
    );
    Ok(())
}
