//! The client commands against real agents: `lock`, `kv export | kv import`, `catalog`,
//! `members`, `services` and the Consul settings every command honours.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use muster_tests::*;

/// A `muster lock` process, killed by PID on drop.
struct LockProc(Child);

impl Drop for LockProc {
    /// SIGTERM first, which `muster lock` passes on to its child and waits for, so no child
    /// outlives the test; SIGKILL only if it has not exited within its own 5 s grace.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(7);
        while std::time::Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `muster lock` against `agent`; the child appends `start-ID` / `stop-ID` to `log`.
fn lock(agent: &Agent, id: &str, log: &Path, extra: &[&str]) -> LockProc {
    let script = format!(
        "trap 'echo stop-{id} >> {log}; exit 0' TERM; echo start-{id}-$CONSUL_LOCK_HELD >> {log}; while true; do sleep 0.1; done",
        log = log.display()
    );
    let mut args = vec![
        "lock".to_string(),
        "-http-addr".into(),
        agent.http.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["service/leader".to_string(), script]);
    LockProc(
        Command::new(muster_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn lock"),
    )
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn running(log: &Path) -> Vec<String> {
    let l = lines(log);
    l.iter()
        .filter_map(|x| x.strip_prefix("start-"))
        .map(|x| x.split('-').next().unwrap_or("").to_string())
        .filter(|id| !l.contains(&format!("stop-{id}")))
        .collect()
}

async fn alive_in_catalog(server: &Agent, node: &str) {
    wait_until(
        &format!("{node} registered with serfHealth"),
        Duration::from_secs(20),
        || async {
            let c = get(&server.url(&format!("/v1/health/node/{node}")))
                .await
                .ok()?
                .json();
            c.as_array()?
                .iter()
                .any(|c| c["CheckID"] == "serfHealth" && c["Status"] == "passing")
                .then_some(())
        },
    )
    .await
    .expect("node registered");
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_runs_one_child_and_hands_over_when_the_holder_dies() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let server = single_server(root.path(), "srv", &[]).await?;
    let join = server.serf.to_string();
    let mut c1 = Agent::start("c1", &root.path().join("c1"), &["-join", &join])?;
    let c2 = Agent::start("c2", &root.path().join("c2"), &["-join", &join])?;
    alive_in_catalog(&server, "c1").await;
    alive_in_catalog(&server, "c2").await;
    let log = root.path().join("children.log");
    let _l1 = lock(&c1, "one", &log, &[]);
    wait_until("first child running", Duration::from_secs(15), || async {
        (running(&log) == ["one"]).then_some(())
    })
    .await?;
    let _l2 = lock(&c2, "two", &log, &[]);
    // The second waits: for two seconds, still only one child.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(running(&log), ["one"], "{:?}", lines(&log));
    }
    assert!(
        lines(&log).contains(&"start-one-true".to_string()),
        "CONSUL_LOCK_HELD set: {:?}",
        lines(&log)
    );

    // The holder's agent dies: its child is stopped, and the other lock process takes over.
    c1.kill9();
    wait_until(
        "losing child terminated",
        Duration::from_secs(15),
        || async { lines(&log).contains(&"stop-one".to_string()).then_some(()) },
    )
    .await?;
    wait_until("second child running", Duration::from_secs(60), || async {
        (running(&log) == ["two"]).then_some(())
    })
    .await?;
    let l = lines(&log);
    let stop_one = l.iter().position(|x| x == "stop-one");
    let start_two = l.iter().position(|x| x.starts_with("start-two"));
    assert!(stop_one < start_two, "the two children overlapped: {l:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_semaphore_and_signal_forwarding() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let server = single_server(root.path(), "srv", &[]).await?;
    alive_in_catalog(&server, "srv").await;
    let log = root.path().join("sem.log");
    let mut procs: Vec<LockProc> = ["a", "b", "c"]
        .iter()
        .map(|id| lock(&server, id, &log, &["-n", "2"]))
        .collect();
    wait_until("two holders", Duration::from_secs(15), || async {
        (running(&log).len() == 2).then_some(())
    })
    .await?;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(running(&log).len(), 2, "{:?}", lines(&log));
    }
    // SIGTERM to a holder's lock process reaches its child, which exits; a slot frees up.
    let holder = running(&log)[0].clone();
    let idx = ["a", "b", "c"]
        .iter()
        .position(|x| *x == holder)
        .expect("holder");
    Command::new("kill")
        .args(["-TERM", &procs[idx].0.id().to_string()])
        .status()?;
    let status = procs[idx].0.wait()?;
    assert!(status.success(), "{status}");
    assert!(
        lines(&log).contains(&format!("stop-{holder}")),
        "child got the SIGTERM: {:?}",
        lines(&log)
    );
    wait_until(
        "the waiting contender took the slot",
        Duration::from_secs(15),
        || async {
            let r = running(&log);
            (r.len() == 2 && !r.contains(&holder)).then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_export_import_round_trips_binary_values_and_flags() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "srv", &[]).await?;
    let binary: Vec<u8> = (0..=255u8).collect();
    assert_eq!(
        put(&a.url("/v1/kv/app/bin?flags=42"), &binary)
            .await?
            .status,
        200
    );
    assert_eq!(put(&a.url("/v1/kv/app/text"), b"hello").await?.status, 200);
    assert_eq!(put(&a.url("/v1/kv/other"), b"x").await?.status, 200);
    let out = a.cli(&["kv", "export", "app/"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(exported.as_array().map(Vec::len), Some(2));
    assert_eq!(exported[0]["key"], "app/bin");
    assert_eq!(exported[0]["flags"], 42);

    let out = a.cli(&["kv", "delete", "-recurse", "app/"]);
    assert!(out.status.success());
    assert_eq!(get(&a.url("/v1/kv/app/bin")).await?.status, 404);
    let dump = root.path().join("backup.json");
    std::fs::write(&dump, out_stdout(&a, &["kv", "export"]))?;
    let mut import = Command::new(muster_bin())
        .args(["kv", "import", "-http-addr", &a.http.to_string(), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(
        import.stdin.as_mut().expect("stdin"),
        &serde_json::to_vec(&exported)?,
    )?;
    let out = import.wait_with_output()?;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Imported: app/bin\nImported: app/text\n"
    );
    let r = get(&a.url("/v1/kv/app/bin?raw")).await?;
    assert_eq!(r.body, binary, "binary value restored byte for byte");
    assert_eq!(get(&a.url("/v1/kv/app/bin")).await?.json()[0]["Flags"], 42);

    // @file with -prefix; a bad entry aborts before anything is written.
    let out = a.cli(&[
        "kv",
        "import",
        "-prefix",
        "restored/",
        &format!("@{}", dump.display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(&a.url("/v1/kv/restored/other?raw")).await?.body, b"x");
    let out = a.cli(&[
        "kv",
        "import",
        r#"[{"key":"ok","value":"eA=="},{"key":"bad","value":"%%"}]"#,
    ]);
    assert!(!out.status.success());
    // Consul's message; unlike Consul, every entry is checked before any is written.
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("Error base 64 decoding value for key bad: "));
    assert_eq!(
        get(&a.url("/v1/kv/ok")).await?.status,
        404,
        "nothing imported"
    );
    Ok(())
}

fn out_stdout(a: &Agent, args: &[&str]) -> Vec<u8> {
    a.cli(args).stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_commands_list_nodes_and_services() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "srv", &[]).await?;
    alive_in_catalog(&a, "srv").await;
    let reg = serde_json::json!({"Node": "web1", "Address": "10.0.0.5", "Service": {"Service": "web", "Tags": ["v1", "blue"], "Port": 80}});
    assert_eq!(
        put(&a.url("/v1/catalog/register"), reg.to_string().as_bytes())
            .await?
            .status,
        200
    );
    let out = String::from_utf8(a.cli(&["catalog", "services", "-tags"]).stdout)?;
    assert!(out.lines().any(|l| l.starts_with("consul")), "{out}");
    // Consul sorts each service's tags.
    assert!(
        out.lines()
            .any(|l| l.starts_with("web") && l.ends_with("blue,v1")),
        "{out}"
    );
    let out = String::from_utf8(a.cli(&["catalog", "nodes", "-service=web"]).stdout)?;
    let rows: Vec<&str> = out.lines().collect();
    assert!(
        rows[0].starts_with("Node") && rows[0].contains("Address"),
        "{out}"
    );
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[1].starts_with("web1") && rows[1].contains("10.0.0.5"),
        "{out}"
    );
    let out = String::from_utf8(a.cli(&["catalog", "services", "-node", "web1"]).stdout)?;
    assert_eq!(out, "web\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_cli_detailed_and_locks() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "srv", &[]).await?;
    alive_in_catalog(&a, "srv").await;
    let sid = put(&a.url("/v1/session/create"), b"{}").await?.json()["ID"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let out = a.cli(&[
        "kv", "put", "-acquire", "-session", &sid, "locks/db", "mine",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8(a.cli(&["kv", "get", "-detailed", "locks/db"]).stdout)?;
    let field = |k: &str| {
        out.lines()
            .find(|l| l.starts_with(k))
            .map(|l| l[k.len()..].trim().to_string())
    };
    assert_eq!(field("Key").as_deref(), Some("locks/db"), "{out}");
    assert_eq!(field("Session").as_deref(), Some(sid.as_str()), "{out}");
    assert_eq!(field("LockIndex").as_deref(), Some("1"), "{out}");
    assert_eq!(field("Value").as_deref(), Some("mine"), "{out}");
    let out = a.cli(&[
        "kv", "put", "-release", "-session", &sid, "locks/db", "mine",
    ]);
    assert!(out.status.success());
    let out = String::from_utf8(a.cli(&["kv", "get", "-detailed", "locks/db"]).stdout)?;
    assert!(
        out.lines()
            .any(|l| l.starts_with("Session") && l.ends_with('-')),
        "{out}"
    );
    let out = a.cli(&["kv", "put", "-acquire", "locks/db", "x"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error! Missing -session (required with -acquire and -release)\n"
    );
    Ok(())
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn members_shows_consuls_columns_wan_pool_and_segments() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let server = single_server(root.path(), "srv", &[]).await?;
    let client = Agent::start(
        "cli1",
        &root.path().join("cli1"),
        &["-join", &server.serf.to_string()],
    )?;
    alive_in_catalog(&server, "cli1").await;
    let out = server.cli(&["members"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Segment"],
        "{stdout}"
    );
    // Servers first (segment <all>), then the default segment.
    assert_eq!(rows[1][0], "srv", "{stdout}");
    assert_eq!(rows[1][1], server.serf.to_string(), "{stdout}");
    assert_eq!(rows[1][2..4], ["alive", "server"], "{stdout}");
    assert_eq!(rows[1][6..], ["dc1", "<all>"], "{stdout}");
    assert!(
        !rows[1][4].contains(':') && !rows[1][5].is_empty(),
        "{stdout}"
    );
    assert_eq!(rows[2][0], "cli1", "{stdout}");
    assert_eq!(rows[2][3], "client", "{stdout}");
    assert_eq!(rows[2][7], "<default>", "{stdout}");
    let (detailed, _) = text(&server.cli(&["members", "-detailed"]));
    assert!(detailed.starts_with("Node "), "{detailed}");
    assert!(
        detailed.lines().any(|l| l.starts_with("srv ")
            && l.contains("role=consul")
            && l.contains("segment=<all>")),
        "{detailed}"
    );
    // The WAN pool is the servers, under their WAN names; a client agent is in none.
    let (wan, _) = text(&server.cli(&["members", "-wan"]));
    let names: Vec<&str> = wan
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["srv.dc1"], "{wan}");
    assert_eq!(client.cli(&["members", "-wan"]).status.code(), Some(2));
    assert_eq!(
        server.cli(&["members", "-segment", "alpha"]).status.code(),
        Some(2)
    );
    let (default_segment, _) = text(&server.cli(&["members", "-segment="]));
    assert!(
        default_segment
            .lines()
            .any(|l| l.starts_with("srv ") && l.ends_with("<default>")),
        "{default_segment}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn services_register_and_deregister_definition_files() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "srv", &[]).await?;
    alive_in_catalog(&a, "srv").await;
    let file = root.path().join("web.json");
    std::fs::write(
        &file,
        r#"{"services": [{"name": "web", "id": "web-1", "port": 80}, {"name": "db", "port": 5432}]}"#,
    )?;
    let file = file.display().to_string();
    let out = a.cli(&["services", "register", &file]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "Registered service: web\nRegistered service: db\n");
    let services = get(&a.url("/v1/agent/services")).await?.json();
    assert_eq!(services["web-1"]["Port"], 80, "{services}");
    assert_eq!(services["db"]["Port"], 5432, "{services}");
    // The same file deregisters them, by ID, else by name.
    let out = a.cli(&["services", "deregister", &file]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stdout,
        "Deregistered service: web-1\nDeregistered service: db\n"
    );
    let services = get(&a.url("/v1/agent/services")).await?.json();
    assert!(
        services.get("web-1").is_none() && services.get("db").is_none(),
        "{services}"
    );
    // Flags: only what is given is sent.
    let out = a.cli(&[
        "services", "register", "-name", "api", "-tag", "v2", "-meta", "team=x",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let services = get(&a.url("/v1/agent/services")).await?.json();
    assert_eq!(
        services["api"]["Tags"],
        serde_json::json!(["v2"]),
        "{services}"
    );
    assert_eq!(services["api"]["Meta"]["team"], "x", "{services}");
    let out = a.cli(&["services", "deregister", "-id", "api"]);
    assert_eq!(text(&out).0, "Deregistered service: api\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_find_the_agent_and_token_as_consuls_do() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "srv", &[]).await?;
    alive_in_catalog(&a, "srv").await;
    let token_file = root.path().join("token");
    std::fs::write(&token_file, "secret\n")?;
    let run = |env: &[(&str, String)], args: &[&str]| {
        let mut cmd = Command::new(muster_bin());
        for v in [
            "MUSTER_HTTP_ADDR",
            "CONSUL_HTTP_ADDR",
            "CONSUL_HTTP_TOKEN",
            "CONSUL_HTTP_TOKEN_FILE",
        ] {
            cmd.env_remove(v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run muster")
    };
    let addr = a.http.to_string();
    let consul_env = [
        ("CONSUL_HTTP_ADDR", format!("http://{addr}")),
        ("CONSUL_HTTP_TOKEN", "anything".to_string()),
        ("CONSUL_HTTP_TOKEN_FILE", token_file.display().to_string()),
    ];
    let out = run(&consul_env, &["kv", "put", "env/key", "v"]);
    assert_eq!(
        text(&out).0,
        "Success! Data written to: env/key\n",
        "{}",
        text(&out).1
    );
    let out = run(&consul_env, &["catalog", "datacenters"]);
    assert_eq!(text(&out).0, "dc1\n", "{}", text(&out).1);
    let out = run(
        &[],
        &["kv", "get", "-http-addr", &addr, "-token", "t", "env/key"],
    );
    assert_eq!(text(&out).0, "v\n", "{}", text(&out).1);
    // Nothing at the default address: the flag or a variable is what found the agent.
    let out = run(&[], &["kv", "get", "env/key"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out)
            .1
            .starts_with("Error querying Consul agent: cannot reach the agent at"),
        "{}",
        text(&out).1
    );
    // Consul's lines for locks and prefixes.
    let sid = put(&a.url("/v1/session/create"), b"{}").await?.json()["ID"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let out = a.cli(&["kv", "put", "-acquire", "-session", &sid, "locks/a", "x"]);
    assert_eq!(
        text(&out).0,
        "Success! Lock acquired on: locks/a\n",
        "{}",
        text(&out).1
    );
    let out = a.cli(&["kv", "put", "-release", "-session", &sid, "locks/a"]);
    assert_eq!(
        text(&out).0,
        "Success! Lock released on: locks/a\n",
        "{}",
        text(&out).1
    );
    let out = a.cli(&["kv", "delete", "-recurse", "locks/"]);
    assert_eq!(text(&out).0, "Success! Deleted keys with prefix: locks/\n");
    let out = a.cli(&["catalog", "services", "-node", "ghost"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out).1,
        "No services match the given query - try expanding your search.\n"
    );
    Ok(())
}
