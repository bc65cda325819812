//! Watches against real agents: `muster watch` with and without a handler, and the agent's
//! `watches` config key with script and HTTP handlers. A handler runs once for the first
//! result and then once per change (the index moved and the result differs, as Consul's
//! `reflect.DeepEqual` decides), never for an unchanged result.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_tests::*;
use serde_json::{json, Value};

/// A `muster watch` process, killed by PID on drop.
struct WatchProc(Child);

impl Drop for WatchProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_watch(agent: &Agent, args: &[&str], stdout: &Path) -> WatchProc {
    let out = std::fs::File::create(stdout).expect("stdout file");
    let mut all = vec!["watch", "-http-addr"];
    let addr = agent.http.to_string();
    all.push(&addr);
    all.extend_from_slice(args);
    WatchProc(
        Command::new(muster_bin())
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn muster watch"),
    )
}

/// The handler's log: one line per run, `CONSUL_INDEX` then the JSON it got on stdin.
fn runs(log: &Path) -> Vec<(u64, Value)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (idx, json) = l.split_once(' ')?;
            Some((idx.parse().ok()?, serde_json::from_str(json).ok()?))
        })
        .collect()
}

/// A script that appends `CONSUL_INDEX`, a space and its stdin (one JSON line) to `log`.
fn append_script(log: &Path) -> String {
    format!(
        "printf '%s ' \"$CONSUL_INDEX\" >> {0}; cat >> {0}",
        log.display()
    )
}

fn keys(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["Key"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_runs(log: &Path, n: usize) -> anyhow::Result<Vec<(u64, Value)>> {
    wait_until(
        &format!("{n} handler runs in {}", log.display()),
        Duration::from_secs(15),
        || async {
            let r = runs(log);
            (r.len() >= n).then_some(r)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn keyprefix_handler_runs_once_per_change() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cli_log = root.path().join("cli-runs");
    let agent_log = root.path().join("agent-runs");
    let cfg = root.path().join("watches.json");
    let entry = json!({"watches": [{"type": "keyprefix", "prefix": "app/",
        "args": ["/bin/sh", "-c", append_script(&agent_log)]}]});
    std::fs::write(&cfg, entry.to_string())?;
    let a = single_server(
        root.path(),
        "s1",
        &["-config-file", &cfg.display().to_string()],
    )
    .await?;
    let script = append_script(&cli_log);
    let _w = spawn_watch(
        &a,
        &["-type", "keyprefix", "-prefix", "app/", &script],
        &root.path().join("cli-out"),
    );

    // Both handlers, the agent's and the command's, see the same sequence.
    for log in [&cli_log, &agent_log] {
        let r = wait_runs(log, 1).await?;
        assert_eq!(r[0].1, Value::Null, "the first run gets the empty prefix");
    }
    let step = |n: usize| {
        let (cli_log, agent_log) = (cli_log.clone(), agent_log.clone());
        async move {
            let c = wait_runs(&cli_log, n).await?;
            let g = wait_runs(&agent_log, n).await?;
            anyhow::Ok((c, g))
        }
    };
    assert_eq!(put(&a.url("/v1/kv/app/a"), b"1").await?.status, 200);
    let (c, _) = step(2).await?;
    assert_eq!(keys(&c[1].1), ["app/a"]);
    // The same value again: ModifyIndex moves, so the result differs and the handler runs
    // (Consul's DeepEqual compares the whole entry).
    assert_eq!(put(&a.url("/v1/kv/app/a"), b"1").await?.status, 200);
    let (c, _) = step(3).await?;
    assert_ne!(c[2].1, c[1].1);
    // A write elsewhere moves the KV index but not this result: no run. The next write under
    // the prefix is the fourth run, not the fifth.
    assert_eq!(put(&a.url("/v1/kv/other/x"), b"z").await?.status, 200);
    assert_eq!(put(&a.url("/v1/kv/app/b"), b"2").await?.status, 200);
    let (c, g) = step(4).await?;
    assert_eq!(keys(&c[3].1), ["app/a", "app/b"]);
    let r = call("DELETE", &a.url("/v1/kv/app/a"), None, None).await;
    assert_eq!(r.status, 200);
    let (c, g2) = step(5).await?;
    assert_eq!(keys(&c[4].1), ["app/b"]);
    assert_eq!(g[..4], g2[..4]);

    // Nothing more: unchanged results never run a handler.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for log in [&cli_log, &agent_log] {
        let r = runs(log);
        assert_eq!(r.len(), 5, "{r:?}");
        assert!(r.windows(2).all(|w| w[0].0 < w[1].0), "indexes grow: {r:?}");
        assert!(
            r.windows(2).all(|w| w[0].1 != w[1].1),
            "each run is a change: {r:?}"
        );
    }
    Ok(())
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["Service"]["ID"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_without_handler_prints_the_current_passing_instances_once() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "s1", &[]).await?;
    let def = json!({"Name": "web", "ID": "web1", "Port": 80,
        "Check": {"CheckID": "web1-ttl", "TTL": "1h"}});
    let r = put(
        &a.url("/v1/agent/service/register"),
        def.to_string().as_bytes(),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    // Without a child, as `consul watch`: the current result, indented, then exit 0.
    let once = || {
        let o = a.cli(&["watch", "-type", "service", "-service", "web", "-passing"]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let v: serde_json::Value = serde_json::from_str(&text).expect("one JSON document");
        (text, v)
    };
    let (text, v) = once();
    assert_eq!(text, "[]\n");
    assert!(ids(&v).is_empty(), "{v}");
    assert_eq!(
        put(&a.url("/v1/agent/check/pass/web1-ttl"), b"")
            .await?
            .status,
        200
    );
    let (text, up) = once();
    assert_eq!(ids(&up), ["web1"], "{text}");
    assert!(text.starts_with("[\n    {"), "{text}");
    assert_eq!(up[0]["Checks"][0]["Status"], "passing", "{up}");
    assert_eq!(
        put(&a.url("/v1/agent/check/fail/web1-ttl"), b"")
            .await?
            .status,
        200
    );
    assert!(ids(&once().1).is_empty());

    // Consul's messages and exit codes: no type; a child that fails ends the watch.
    let o = a.cli(&["watch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("Watch type must be specified\n"));
    let o = a.cli(&["watch", "-type", "key"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "Must specify a single key to watch\n"
    );
    let o = a.cli(&["watch", "-type", "key", "-key", "k", "exit 3"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "Error executing handler: exit status 3\n"
    );
    Ok(())
}

/// One request the tiny HTTP server got.
#[derive(Debug, Clone)]
struct Hook {
    method: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// A tiny HTTP server on 127.0.0.1 recording each request; its thread lives as long as the
/// test process.
fn hook_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<Hook>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let mut r = BufReader::new(&s);
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let method = line.split(' ').next().unwrap_or("").to_string();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.trim().split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let len = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            keep.lock().expect("lock").push(Hook {
                method,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let _ = (&s)
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn config_watch_with_http_handler() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (hook, seen) = hook_server();
    let cfg = root.path().join("watches.hcl");
    std::fs::write(
        &cfg,
        format!(
            r#"watches = [{{
  type = "key"
  key = "cfg/x"
  handler_type = "http"
  http_handler_config = {{
    path = "http://{hook}/hook"
    method = "PUT"
    header = {{ "X-Test" = ["yes"] }}
    timeout = "5s"
  }}
}}]"#
        ),
    )?;
    let a = single_server(
        root.path(),
        "s1",
        &["-config-file", &cfg.display().to_string()],
    )
    .await?;
    let wait_hooks = |n: usize| {
        let seen = seen.clone();
        async move {
            wait_until(&format!("{n} hook calls"), Duration::from_secs(15), || {
                let s = seen.lock().expect("lock").clone();
                async move { (s.len() >= n).then_some(s) }
            })
            .await
        }
    };
    let first = wait_hooks(1).await?;
    assert_eq!(first[0].body, "null\n", "the missing key is null");
    assert_eq!(put(&a.url("/v1/kv/cfg/x"), b"hello").await?.status, 200);
    let calls = wait_hooks(2).await?;
    let h = &calls[1];
    assert_eq!(h.method, "PUT");
    let header = |name: &str| {
        h.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-test").as_deref(), Some("yes"));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    let body: Value = serde_json::from_str(&h.body)?;
    assert_eq!(body["Key"], "cfg/x");
    assert_eq!(body["Value"], "aGVsbG8=");
    assert_eq!(
        header("x-consul-index"),
        Some(body["ModifyIndex"].to_string()),
        "the index the change came with"
    );
    // The plan, parked in a blocking read, stops with the agent.
    let mut a = a;
    let status = a.terminate(Duration::from_secs(10))?;
    assert!(status.success(), "{status:?}");
    assert!(!a.logs().contains("did not stop in time"), "{}", a.logs());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_watches_entry_fails_the_start() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cfg = root.path().join("bad.json");
    std::fs::write(
        &cfg,
        json!({"watches": [{"type": "key", "args": ["true"]}]}).to_string(),
    )?;
    let args = ["-config-file", &cfg.display().to_string()];
    let Err(e) = Agent::start("s1", &root.path().join("s1"), &args) else {
        anyhow::bail!("the agent started with a bad watches entry");
    };
    // The harness's error carries the agent's log, where the start failure is written.
    let err = e.to_string();
    assert!(
        err.contains(&format!(
            "config file {}: key \"watches\": watches[0]: Failed to parse watch: \
             Must specify a single key to watch",
            cfg.display()
        )),
        "{err}"
    );
    Ok(())
}

/// `muster watch -type event -name deploy` against a real agent's `/v1/event/list`: the
/// handler gets only the events new since its last run, of that name only.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_watch_runs_for_each_new_event_of_its_name() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "s1", &[]).await?;
    let log = root.path().join("runs");
    let script = append_script(&log);
    let _w = spawn_watch(
        &a,
        &["-type", "event", "-name", "deploy", &script],
        &root.path().join("out"),
    );
    let first = wait_runs(&log, 1).await?;
    assert_eq!(first[0].1, json!([]), "no event yet");
    let fire = |name: &str, body: &'static [u8]| {
        let url = a.url(&format!("/v1/event/fire/{name}"));
        async move { put(&url, body).await }
    };
    assert_eq!(fire("deploy", b"v1").await?.status, 200);
    let r = wait_runs(&log, 2).await?;
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["Payload"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        names(&r[1].1),
        ["djE="],
        "the new event, its payload in base64"
    );
    // Another name does not run the handler; the next deploy does, alone.
    assert_eq!(fire("other", b"x").await?.status, 200);
    assert_eq!(fire("deploy", b"v2").await?.status, 200);
    let r = wait_runs(&log, 3).await?;
    assert_eq!(names(&r[2].1), ["djI="], "{:?}", r[2].1);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(runs(&log).len(), 3, "{:?}", runs(&log));
    Ok(())
}
