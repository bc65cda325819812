//! Agent-local services and checks against real agents: script, TTL, HTTP and TCP checks,
//! the Redis-master pattern, maintenance (and its persistence), config errors and reload,
//! anti-entropy repair.

use std::path::Path;
use std::time::{Duration, Instant};

use muster_tests::*;
use serde_json::{json, Value};

fn write(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("json")).expect("write config");
}

async fn instances(a: &Agent, path: &str) -> Vec<String> {
    let v = get(&a.url(path))
        .await
        .map(|r| r.json())
        .unwrap_or(Value::Null);
    let mut names: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["Node"]["Node"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

async fn check_statuses(a: &Agent, service: &str) -> Vec<(String, String)> {
    let v = get(&a.url(&format!("/v1/health/checks/{service}")))
        .await
        .map(|r| r.json())
        .unwrap_or(Value::Null);
    let mut out: Vec<(String, String)> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["CheckID"].as_str().unwrap_or("").to_string(),
                c["Status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A config dir with one Redis instance whose script check passes only when `role` says master.
fn redis_config(dir: &Path, role: &Path) {
    std::fs::create_dir_all(dir).expect("dir");
    write(
        &dir.join("agent.json"),
        &json!({"enable_local_script_checks": true}),
    );
    write(
        &dir.join("redis.json"),
        &json!({"service": {"name": "redis", "tags": ["master"], "port": 6379,
        "check": {"args": ["sh", "-c", format!("test \"$(cat {})\" = master || exit 2", role.display())], "interval": "1s", "timeout": "5s"}}}),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_master_pattern_and_script_exit_codes() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (role1, role2) = (root.path().join("role1"), root.path().join("role2"));
    std::fs::write(&role1, "master")?;
    std::fs::write(&role2, "replica")?;
    let (cfg1, cfg2) = (root.path().join("cfg1"), root.path().join("cfg2"));
    redis_config(&cfg1, &role1);
    redis_config(&cfg2, &role2);
    write(
        &cfg1.join("codes.json"),
        &json!({"service": {"name": "codes", "checks": [
        {"id": "zero", "args": ["sh", "-c", "exit 0"], "interval": "1s"},
        {"id": "one", "args": ["sh", "-c", "echo degraded; exit 1"], "interval": "1s"},
        {"id": "two", "args": ["sh", "-c", "exit 2"], "interval": "1s"}]}}),
    );
    let (c1, c2) = (cfg1.display().to_string(), cfg2.display().to_string());
    let s1 = Agent::start(
        "redis-a",
        &root.path().join("a"),
        &["-server", "-bootstrap-expect", "1", "-config-dir", &c1],
    )?;
    let s2 = Agent::start(
        "redis-b",
        &root.path().join("b"),
        &["-join", &s1.serf.to_string(), "-config-dir", &c2],
    )?;

    let masters = "/v1/health/service/redis?tag=master&passing";
    wait_until(
        "redis-a is the only healthy master",
        Duration::from_secs(20),
        || async {
            let both = instances(&s1, "/v1/health/service/redis").await.len() == 2;
            (both && instances(&s1, masters).await == ["redis-a"]).then_some(())
        },
    )
    .await?;
    let want = vec![
        ("one".to_string(), "warning".to_string()),
        ("two".to_string(), "critical".to_string()),
        ("zero".to_string(), "passing".to_string()),
    ];
    wait_until(
        "exit codes 0/1/2 as passing/warning/critical",
        Duration::from_secs(10),
        || async { (check_statuses(&s1, "codes").await == want).then_some(()) },
    )
    .await?;
    let checks = get(&s1.url("/v1/health/checks/codes")).await?.json();
    let one = checks
        .as_array()
        .and_then(|a| a.iter().find(|c| c["CheckID"] == "one"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(one["Output"], "degraded\n");

    // Fail over: flip the files; the answer flips within about one interval.
    std::fs::write(&role1, "replica")?;
    std::fs::write(&role2, "master")?;
    let t = Instant::now();
    wait_until(
        "redis-b is now the master",
        Duration::from_secs(10),
        || async { (instances(&s2, masters).await == ["redis-b"]).then_some(()) },
    )
    .await?;
    eprintln!("master flipped in {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "flip took {:?}",
        t.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_http_tcp_checks_and_anti_entropy() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "n1", &[]).await?;
    // A tiny HTTP server for the HTTP check, and its port for the TCP check.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = std::io::Write::write_all(
                &mut s,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
            );
        }
    });
    let def = json!({"Name": "api", "Port": port, "Checks": [
        {"CheckID": "api-http", "HTTP": format!("http://127.0.0.1:{port}/health"), "Interval": "1s"},
        {"CheckID": "api-tcp", "TCP": format!("127.0.0.1:{port}"), "Interval": "1s"},
        {"CheckID": "api-ttl", "TTL": "2s"}]});
    let r = put(
        &a.url("/v1/agent/service/register"),
        def.to_string().as_bytes(),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = put(&a.url("/v1/agent/check/pass/api-ttl?note=alive"), b"").await?;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until(
        "all three checks passing",
        Duration::from_secs(10),
        || async {
            (instances(&a, "/v1/health/service/api?passing").await == ["n1"]).then_some(())
        },
    )
    .await?;
    let agent_checks = get(&a.url("/v1/agent/checks")).await?.json();
    assert_eq!(agent_checks["api-ttl"]["Output"], "alive");
    assert_eq!(
        get(&a.url("/v1/agent/health/service/name/api"))
            .await?
            .status,
        200
    );
    let by_id = get(&a.url("/v1/agent/health/service/id/api")).await?;
    assert_eq!(by_id.status, 200);
    let v = by_id.json();
    assert_eq!(
        (v["AggregatedStatus"].as_str(), v["Service"]["ID"].as_str()),
        (Some("passing"), Some("api")),
        "a single object: {v}"
    );
    assert_eq!(
        get(&a.url("/v1/agent/health/service/id/nope"))
            .await?
            .status,
        404
    );

    // Not updated within its TTL: critical, visible to load balancers as 503.
    wait_until("TTL expired", Duration::from_secs(10), || async {
        let c = get(&a.url("/v1/agent/checks")).await.ok()?.json();
        (c["api-ttl"]["Status"] == "critical").then_some(())
    })
    .await?;
    assert!(
        get(&a.url("/v1/agent/checks")).await?.json()["api-ttl"]["Output"]
            .as_str()
            .unwrap_or("")
            .starts_with("TTL expired")
    );
    assert_eq!(
        get(&a.url("/v1/agent/health/service/name/api"))
            .await?
            .status,
        503
    );
    let r = put(
        &a.url("/v1/agent/check/update/api-ttl"),
        br#"{"Status": "warning", "Output": "slow"}"#,
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        get(&a.url("/v1/agent/health/service/name/api"))
            .await?
            .status,
        429
    );
    // Not a TTL check, or no such check: Consul's 500 and text for both.
    let r = put(&a.url("/v1/agent/check/pass/api-http"), b"").await?;
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, "CheckID \"api-http\" does not have associated TTL"),
        "not a TTL check"
    );
    let r = put(&a.url("/v1/agent/check/pass/nope"), b"").await?;
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, "CheckID \"nope\" does not have associated TTL")
    );

    // Deleted behind the agent's back: anti-entropy puts it back.
    let r = put(
        &a.url("/v1/catalog/deregister"),
        br#"{"Node": "n1", "ServiceID": "api"}"#,
    )
    .await?;
    assert_eq!(r.text(), "true");
    let t = Instant::now();
    wait_until("service restored", Duration::from_secs(10), || async {
        let v = get(&a.url("/v1/catalog/service/api")).await.ok()?.json();
        (v.as_array()?.len() == 1).then_some(())
    })
    .await?;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "restored after {:?}",
        t.elapsed()
    );
    // Deregistering stops the checks and removes everything from the catalog.
    assert_eq!(
        put(&a.url("/v1/agent/service/deregister/api"), b"")
            .await?
            .status,
        200
    );
    wait_until("service gone", Duration::from_secs(10), || async {
        let v = get(&a.url("/v1/catalog/service/api")).await.ok()?.json();
        let c = get(&a.url("/v1/health/node/n1")).await.ok()?.json();
        (v.as_array()?.is_empty() && c.as_array()?.iter().all(|c| c["ServiceID"] == ""))
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_hides_persists_and_expires() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut a = single_server(root.path(), "img", &[]).await?;
    let def = json!({"Name": "web", "ID": "web1", "Port": 80, "Check": {"TTL": "1h", "Status": "passing"}});
    assert_eq!(
        put(
            &a.url("/v1/agent/service/register"),
            def.to_string().as_bytes()
        )
        .await?
        .status,
        200
    );
    let healthy = "/v1/health/service/web?passing";
    wait_until("web healthy", Duration::from_secs(10), || async {
        (instances(&a, healthy).await == ["img"]).then_some(())
    })
    .await?;
    let out = a.cli(&["maint"]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "no maintenance: nothing printed"
    );

    let out = a.cli(&["maint", "-enable", "-reason", "AMI build"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Node maintenance is now enabled\n"
    );
    wait_until(
        "hidden from health queries",
        Duration::from_secs(5),
        || async { instances(&a, healthy).await.is_empty().then_some(()) },
    )
    .await?;
    let catalog = get(&a.url("/v1/catalog/service/web")).await?.json();
    assert_eq!(
        catalog.as_array().map(Vec::len),
        Some(1),
        "catalog still lists it"
    );
    let node_checks = get(&a.url("/v1/health/node/img")).await?.json();
    let maint = node_checks
        .as_array()
        .and_then(|a| a.iter().find(|c| c["CheckID"] == "_node_maintenance"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (maint["Status"].as_str(), maint["Notes"].as_str()),
        (Some("critical"), Some("AMI build"))
    );

    // An image built in maintenance boots in maintenance.
    let status = a.terminate(Duration::from_secs(10))?;
    assert!(status.success());
    a.restart()?;
    wait_until("leader after restart", Duration::from_secs(10), || {
        leader_of(&a)
    })
    .await?;
    let out = String::from_utf8(a.cli(&["maint"]).stdout)?;
    assert_eq!(out, "Node:\n  Name:   img\n  Reason: AMI build\n\n");
    let services = get(&a.url("/v1/agent/services")).await?.json();
    assert_eq!(
        services["web1"]["Service"], "web",
        "HTTP registration persisted"
    );
    wait_until(
        "still hidden after restart",
        Duration::from_secs(10),
        || async {
            let c = get(&a.url("/v1/catalog/service/web")).await.ok()?.json();
            (c.as_array()?.len() == 1).then_some(())
        },
    )
    .await?;
    assert!(instances(&a, healthy).await.is_empty());

    let out = a.cli(&["maint", "-disable"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Node maintenance is now disabled\n"
    );
    wait_until("back in health queries", Duration::from_secs(5), || async {
        (instances(&a, healthy).await == ["img"]).then_some(())
    })
    .await?;

    // Service maintenance with a TTL ends by itself.
    let out = a.cli(&[
        "maint", "-enable", "-service", "web1", "-reason", "deploy", "-ttl", "2s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("service hidden", Duration::from_secs(5), || async {
        instances(&a, healthy).await.is_empty().then_some(())
    })
    .await?;
    assert!(String::from_utf8(a.cli(&["maint"]).stdout)?.contains("ID:     web1\n  Reason: deploy"));
    wait_until("maintenance TTL ended", Duration::from_secs(10), || async {
        (instances(&a, healthy).await == ["img"]).then_some(())
    })
    .await?;
    let out = a.cli(&["maint", "-enable", "-service", "nope"]);
    assert!(!out.status.success());
    Ok(())
}

/// Runs `muster agent -dev -config-dir DIR` to completion (for configurations it refuses).
fn dev_agent_with_config(dir: &Path) -> std::io::Result<std::process::Output> {
    std::process::Command::new(muster_bin())
        .args([
            "agent",
            "-dev",
            "-http-port",
            "0",
            "-dns-port",
            "0",
            "-server-port",
            "0",
            "-serf-lan-port",
            "0",
        ])
        .arg("-config-dir")
        .arg(dir)
        .output()
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_definitions_are_refused_and_reload_keeps_the_old_config() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cfg = root.path().join("cfg");
    std::fs::create_dir_all(&cfg)?;
    let bad = cfg.join("bad.json");
    write(&bad, &json!({"service": {"name": "x", "prot": 1}}));
    let out = dev_agent_with_config(&cfg)?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("Error: {}: unknown service field \"prot\"", bad.display())
    );
    write(
        &bad,
        &json!({"service": {"name": "x", "check": {"args": ["true"], "interval": "10s"}}}),
    );
    let out = dev_agent_with_config(&cfg)?;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Scripts are disabled on this agent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    write(&bad, &json!({"service": {"name": "alpha", "port": 1}}));
    let a = single_server(
        root.path(),
        "r1",
        &["-config-dir", &cfg.display().to_string()],
    )
    .await?;
    let services = || async {
        get(&a.url("/v1/agent/services"))
            .await
            .map(|r| r.json())
            .unwrap_or(Value::Null)
    };
    assert_eq!(services().await["alpha"]["Port"], 1);
    // A broken file on reload: refused, the running config stays.
    write(&bad, &json!({"service": {"name": "beta", "port": "one"}}));
    let out = a.cli(&["reload"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("field \"port\": expected a non-negative number"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(services().await["alpha"]["Port"], 1);
    write(&bad, &json!({"service": {"name": "beta", "port": 2}}));
    let out = a.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = services().await;
    assert_eq!(
        (s.get("alpha"), s["beta"]["Port"].as_u64()),
        (None, Some(2))
    );

    // Over HTTP: the same rules, as 400 with Consul's reason; script checks need
    // enable_script_checks.
    let r = put(
        &a.url("/v1/agent/service/register"),
        br#"{"Name": "s", "Check": {"Args": ["true"], "Interval": "10s"}}"#,
    )
    .await?;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' to true"
    );
    let r = put(
        &a.url("/v1/agent/service/register"),
        br#"{"Name": "s", "Prot": 1}"#,
    )
    .await?;
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            "Request decode failed: json: unknown field \"Prot\"".to_string()
        )
    );
    let r = put(&a.url("/v1/agent/service/register"), b"{oops").await?;
    assert_eq!(r.status, 400);
    assert!(
        get(&a.url("/v1/agent/services"))
            .await?
            .json()
            .get("s")
            .is_none(),
        "nothing registered"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn services_critical_past_deregister_after_are_reaped() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "reap", &[]).await?;
    let def = json!({"Name": "flaky", "Check": {"CheckID": "flaky-ttl", "TTL": "1h", "Status": "passing",
        "DeregisterCriticalServiceAfter": "2s"}});
    assert_eq!(
        put(
            &a.url("/v1/agent/service/register"),
            def.to_string().as_bytes()
        )
        .await?
        .status,
        200
    );
    // Critical only briefly: recovers before the deadline and is kept.
    put(&a.url("/v1/agent/check/fail/flaky-ttl"), b"").await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    put(&a.url("/v1/agent/check/pass/flaky-ttl"), b"").await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get(&a.url("/v1/agent/services")).await?.json()["flaky"]["Service"],
        "flaky"
    );
    // Critical for longer than 2 s: the service is deregistered, here and in the catalog.
    let t = Instant::now();
    put(&a.url("/v1/agent/check/fail/flaky-ttl"), b"").await?;
    wait_until("service reaped", Duration::from_secs(10), || async {
        let local = get(&a.url("/v1/agent/services")).await.ok()?.json();
        let catalog = get(&a.url("/v1/catalog/service/flaky")).await.ok()?.json();
        (local.get("flaky").is_none() && catalog.as_array()?.is_empty()).then_some(())
    })
    .await?;
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "reaped too early: {:?}",
        t.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hcl_definitions_load_from_config_dir_and_services_register() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cfg = root.path().join("cfg");
    std::fs::create_dir_all(&cfg)?;
    std::fs::write(
        cfg.join("services.hcl"),
        r#"
service {
  name = "web"
  tags = ["v1"]
  port = 8080
  check {
    id     = "web-ttl"
    ttl    = "10m"
    status = "passing"
  }
}
service {
  name = "cache"
  port = 6379
}
"#,
    )?;
    let a = single_server(
        root.path(),
        "h1",
        &["-config-dir", &cfg.display().to_string()],
    )
    .await?;
    let services = get(&a.url("/v1/agent/services")).await?.json();
    assert_eq!(services["web"]["Tags"], json!(["v1"]));
    assert_eq!(services["cache"]["Port"], 6379);
    wait_until(
        "web passing in the catalog",
        Duration::from_secs(10),
        || async {
            let h = get(&a.url("/v1/health/service/web?passing"))
                .await
                .ok()?
                .json();
            (h.as_array()?.len() == 1).then_some(())
        },
    )
    .await?;

    // `muster services register` takes an HCL file too.
    let file = root.path().join("api.hcl");
    std::fs::write(&file, "service {\n  name = \"api\"\n  port = 9000\n}\n")?;
    let out = a.cli(&["services", "register", &file.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        get(&a.url("/v1/agent/service/api")).await?.json()["Port"],
        9000
    );
    Ok(())
}

/// Registrations arriving together are each saved: no save fails on another's temp file, and
/// a restart brings every one of them back.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_registrations_are_all_saved() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut a = single_server(root.path(), "saver", &[]).await?;
    let url = a.url("/v1/agent/service/register");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let def = json!({"Name": "svc", "ID": format!("svc{i:02}"), "Port": 8000 + i});
            put(&url, def.to_string().as_bytes()).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await??.status, 200);
    }
    assert!(
        !a.logs().contains("cannot save local state"),
        "a save failed:\n{}",
        a.logs()
    );
    a.restart()?;
    wait_until("all 40 restored", Duration::from_secs(15), || async {
        let v = get(&a.url("/v1/agent/services")).await.ok()?.json();
        (v.as_object()?.len() == 40).then_some(())
    })
    .await?;
    Ok(())
}

async fn agent_services(a: &Agent) -> Vec<String> {
    let v = get(&a.url("/v1/agent/services"))
        .await
        .map(|r| r.json())
        .unwrap_or(Value::Null);
    let mut ids: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    ids.sort();
    ids
}

/// Registers a service over HTTP, which must answer 200.
async fn register(a: &Agent, def: Value) -> anyhow::Result<()> {
    let r = put(
        &a.url("/v1/agent/service/register"),
        def.to_string().as_bytes(),
    )
    .await?;
    anyhow::ensure!(r.status == 200, "{}", r.text());
    Ok(())
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Each HTTP registration is saved in a file of its own, and forgotten at deregistration; an
/// older agent's `local.json`, which held them all, is moved over at the first start.
#[tokio::test(flavor = "multi_thread")]
async fn registrations_are_saved_one_file_each_and_older_files_move_over() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let data = root.path().join("keeper");
    std::fs::create_dir_all(&data)?;
    write(
        &data.join("local.json"),
        &json!({"services": [{"Name": "old", "ID": "old", "Port": 1}],
                "checks": [{"Name": "old check", "CheckID": "oldcheck", "TTL": "1h"}],
                "statuses": {"oldcheck": ["passing", "still fine"]}, "maintenance": []}),
    );
    let mut a = single_server(root.path(), "keeper", &[]).await?;
    assert_eq!(agent_services(&a).await, ["old"]);
    let checks = get(&a.url("/v1/agent/checks")).await?.json();
    assert_eq!(checks["oldcheck"]["Status"], "passing");
    assert_eq!(checks["oldcheck"]["Output"], "still fine");
    let saved = data.join("local");
    assert_eq!(files_in(&saved.join("services")), 1);
    assert_eq!(files_in(&saved.join("checks")), 1);
    let local: Value = serde_json::from_slice(&std::fs::read(data.join("local.json"))?)?;
    assert!(
        local.get("services").is_none() && local.get("checks").is_none(),
        "registrations left in local.json: {local}"
    );

    for id in ["a/b", "web", "db"] {
        let def = json!({"Name": "svc", "ID": id, "Port": 80});
        register(&a, def).await?;
    }
    let check = json!({"Name": "disk", "CheckID": "disk", "TTL": "1h", "ServiceID": "db"});
    assert_eq!(
        put(
            &a.url("/v1/agent/check/register"),
            check.to_string().as_bytes()
        )
        .await?
        .status,
        200
    );
    assert_eq!(files_in(&saved.join("services")), 4);
    assert_eq!(files_in(&saved.join("checks")), 2);
    // Deregistering a service forgets the checks registered for it too.
    assert_eq!(
        put(&a.url("/v1/agent/service/deregister/db"), b"")
            .await?
            .status,
        200
    );
    assert_eq!(
        put(&a.url("/v1/agent/check/deregister/oldcheck"), b"")
            .await?
            .status,
        200
    );
    assert_eq!(files_in(&saved.join("services")), 3);
    assert_eq!(files_in(&saved.join("checks")), 0);

    a.restart()?;
    wait_until("leader after restart", Duration::from_secs(10), || {
        leader_of(&a)
    })
    .await?;
    assert_eq!(agent_services(&a).await, ["a/b", "old", "web"]);
    let checks = get(&a.url("/v1/agent/checks")).await?.json();
    assert!(
        checks.get("disk").is_none() && checks.get("oldcheck").is_none(),
        "{checks}"
    );

    // A check registered on its own for a service, reloaded from its file at a start, still
    // goes with the service.
    let check = json!({"Name": "extra", "CheckID": "web-extra", "TTL": "1h", "ServiceID": "web"});
    let r = put(
        &a.url("/v1/agent/check/register"),
        check.to_string().as_bytes(),
    )
    .await?;
    assert_eq!(r.status, 200);
    a.restart()?;
    wait_until("leader after restart", Duration::from_secs(10), || {
        leader_of(&a)
    })
    .await?;
    assert!(get(&a.url("/v1/agent/checks"))
        .await?
        .json()
        .get("web-extra")
        .is_some());
    let r = put(&a.url("/v1/agent/service/deregister/web"), b"").await?;
    assert_eq!(r.status, 200);
    assert_eq!(files_in(&saved.join("checks")), 0);
    Ok(())
}

/// A registration the agent cannot save is refused with the reason, and not half-kept: it
/// is neither served nor pushed to the catalog (where the next restart would lose it).
#[tokio::test(flavor = "multi_thread")]
async fn a_registration_that_cannot_be_saved_is_refused_and_not_kept() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "nosave", &[]).await?;
    let saved = root.path().join("nosave").join("local");
    std::fs::create_dir_all(&saved)?;
    // A file where the directory of saved services belongs: every save there fails, even
    // for root.
    std::fs::write(saved.join("services"), b"in the way")?;
    let def = json!({"Name": "web", "Port": 80, "Check": {"TTL": "1h"}});
    let r = put(
        &a.url("/v1/agent/service/register"),
        def.to_string().as_bytes(),
    )
    .await?;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text()
            .starts_with("failed to persist service \"web\" in ")
            && r.text().contains("local/services/"),
        "{}",
        r.text()
    );
    assert_eq!(agent_services(&a).await, Vec::<String>::new());
    assert!(get(&a.url("/v1/agent/checks"))
        .await?
        .json()
        .as_object()
        .is_some_and(|c| c.is_empty()));
    // A later registration of something else still goes through the rest of the agent.
    let check = json!({"Name": "node check", "CheckID": "n", "TTL": "1h"});
    assert_eq!(
        put(
            &a.url("/v1/agent/check/register"),
            check.to_string().as_bytes()
        )
        .await?
        .status,
        200
    );
    wait_until(
        "the check in the catalog",
        Duration::from_secs(10),
        || async {
            let v = get(&a.url("/v1/health/node/nosave")).await.ok()?.json();
            v.as_array()?
                .iter()
                .any(|c| c["CheckID"] == "n")
                .then_some(())
        },
    )
    .await?;
    let catalog = get(&a.url("/v1/catalog/service/web")).await?.json();
    assert_eq!(catalog, json!([]));
    Ok(())
}

/// The ModifyIndex of the first instance of `name` in the catalog.
async fn listed(a: &Agent, name: &str) -> Option<u64> {
    let v = get(&a.url(&format!("/v1/catalog/service/{name}")))
        .await
        .ok()?
        .json();
    v.as_array()?.first()?["ModifyIndex"].as_u64()
}

/// Anti-entropy pushes only what changed: a service re-registered as it was is not written
/// to the catalog again (its ModifyIndex stays, so its watchers do not wake).
#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_re_registration_writes_nothing_to_the_catalog() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "steady", &[]).await?;
    let web = json!({"Name": "web", "Port": 80, "Tags": ["a"], "Check": {"CheckID": "web-ttl", "TTL": "1h"}});
    register(&a, web.clone()).await?;
    let first = wait_until("web listed", Duration::from_secs(10), || listed(&a, "web")).await?;
    register(&a, web.clone()).await?;
    // Syncs run in order: once a later registration is in the catalog, a push of the
    // re-registration would have been made.
    register(&a, json!({"Name": "marker", "Port": 1})).await?;
    wait_until("marker listed", Duration::from_secs(10), || {
        listed(&a, "marker")
    })
    .await?;
    assert_eq!(listed(&a, "web").await, Some(first));
    // A changed definition is pushed.
    register(&a, json!({"Name": "web", "Port": 80, "Tags": ["b"], "Check": {"CheckID": "web-ttl", "TTL": "1h"}})).await?;
    wait_until("the new tag listed", Duration::from_secs(10), || async {
        let v = get(&a.url("/v1/catalog/service/web?tag=b"))
            .await
            .ok()?
            .json();
        (!v.as_array()?.is_empty()).then_some(())
    })
    .await?;
    Ok(())
}

/// The config files are the source of truth for the IDs they define, as in Consul: a service
/// of the same ID registered over HTTP gives way at the next reload, and stays gone after a
/// restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_service_wins_over_an_http_one_of_the_same_id() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cfg = root.path().join("cfg");
    std::fs::create_dir_all(&cfg)?;
    write(
        &cfg.join("api.json"),
        &json!({"service": {"name": "api", "port": 9000}}),
    );
    let dir = cfg.display().to_string();
    let mut a = single_server(root.path(), "cfgwins", &["-config-dir", &dir]).await?;
    let port = |a: &Agent| {
        let url = a.url("/v1/agent/service/api");
        async move { get(&url).await.ok()?.json()["Port"].as_u64() }
    };
    let def = json!({"Name": "api", "Port": 9999});
    register(&a, def).await?;
    assert_eq!(port(&a).await, Some(9999));
    let r = put(&a.url("/v1/agent/reload"), b"").await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(port(&a).await, Some(9000));
    a.restart()?;
    wait_until("leader after restart", Duration::from_secs(10), || {
        leader_of(&a)
    })
    .await?;
    assert_eq!(port(&a).await, Some(9000));
    Ok(())
}

/// Re-registering a service keeps its checks' statuses, and with them how long they have been
/// critical: a passing check is not reaped by `DeregisterCriticalServiceAfter` counted from
/// the re-registration.
#[tokio::test(flavor = "multi_thread")]
async fn a_re_registered_passing_service_is_not_reaped() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "rereg", &[]).await?;
    // No Status: each registration starts the check critical, unless it keeps a status.
    let steady = json!({"Name": "steady", "Check": {"CheckID": "steady-ttl", "TTL": "1h",
        "DeregisterCriticalServiceAfter": "1s"}});
    register(&a, steady.clone()).await?;
    assert_eq!(
        put(&a.url("/v1/agent/check/pass/steady-ttl"), b"")
            .await?
            .status,
        200
    );
    register(&a, steady).await?;
    // Reaped one second after its registration, later than `steady` would have been.
    register(
        &a,
        json!({"Name": "victim", "Check": {"CheckID": "victim-ttl", "TTL": "1h",
        "DeregisterCriticalServiceAfter": "1s"}}),
    )
    .await?;
    wait_until("victim reaped", Duration::from_secs(10), || async {
        let v = get(&a.url("/v1/agent/services")).await.ok()?.json();
        v.get("victim").is_none().then_some(())
    })
    .await?;
    let checks = get(&a.url("/v1/agent/checks")).await?.json();
    assert_eq!(checks["steady-ttl"]["Status"], "passing", "{checks}");
    assert_eq!(agent_services(&a).await, ["steady"]);
    Ok(())
}

/// An older `local.json` whose registrations cannot be moved to files of their own (here the
/// directory is blocked by a file) loses nothing: they are served, kept in `local.json`, and
/// moved at a later start.
#[tokio::test(flavor = "multi_thread")]
async fn registrations_that_cannot_move_out_of_an_older_local_json_stay_in_it() -> anyhow::Result<()>
{
    let root = tempfile::tempdir()?;
    let data = root.path().join("mover");
    std::fs::create_dir_all(data.join("local"))?;
    std::fs::write(data.join("local").join("services"), b"in the way")?;
    write(
        &data.join("local.json"),
        &json!({"services": [{"Name": "old", "ID": "old", "Port": 1}], "checks": [],
                "statuses": {}, "maintenance": []}),
    );
    let mut a = single_server(root.path(), "mover", &[]).await?;
    assert_eq!(agent_services(&a).await, ["old"]);
    // A TTL status save rewrites local.json; the registration must survive it.
    let check = json!({"Name": "ttl", "CheckID": "ttl", "TTL": "1h"});
    let r = put(
        &a.url("/v1/agent/check/register"),
        check.to_string().as_bytes(),
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        put(&a.url("/v1/agent/check/pass/ttl"), b"").await?.status,
        200
    );
    wait_until("status saved", Duration::from_secs(10), || async {
        let v: Value =
            serde_json::from_slice(&std::fs::read(data.join("local.json")).ok()?).ok()?;
        (v["statuses"]["ttl"][0] == "passing").then_some(v)
    })
    .await
    .map(|v| assert_eq!(v["services"][0]["ID"], "old", "{v}"))?;

    std::fs::remove_file(data.join("local").join("services"))?;
    a.restart()?;
    wait_until("leader after restart", Duration::from_secs(10), || {
        leader_of(&a)
    })
    .await?;
    assert_eq!(agent_services(&a).await, ["old"]);
    assert_eq!(files_in(&data.join("local").join("services")), 1);
    let local: Value = serde_json::from_slice(&std::fs::read(data.join("local.json"))?)?;
    assert!(local.get("services").is_none(), "{local}");
    Ok(())
}
