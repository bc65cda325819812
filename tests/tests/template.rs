//! `muster template` against real agents: the two seed workflows (an `/etc/hosts` line that
//! follows the Redis master, a deny list whose reload command runs once per PUT), and the
//! guards consul-template lacks: a reset cluster's empty answers, `min_instances`,
//! `check_command`, unreachable servers and denied reads each keep the last file and turn
//! the check `template:<dest>` critical with the reason; 200 templates over 50 services
//! share one watcher per query and only the users of a changed service render again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muster_tests::*;
use serde_json::json;

/// A `muster template` process, killed by PID on drop.
struct TemplateProc {
    child: Child,
    log: PathBuf,
}

impl Drop for TemplateProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TemplateProc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn spawn_template(agent: &Agent, dir: &Path, args: &[&str]) -> TemplateProc {
    spawn_template_at(&agent.http.to_string(), dir, args)
}

fn spawn_template_at(addr: &str, dir: &Path, args: &[&str]) -> TemplateProc {
    let log = dir.join(format!("template-{}.log", rand_suffix()));
    let err = std::fs::File::create(&log).expect("log file");
    let child = Command::new(muster_bin())
        .arg("template")
        .args(["-http-addr", addr, "-log-level", "debug"])
        .args(args)
        .current_dir(dir)
        .env_remove("CONSUL_HTTP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn muster template");
    TemplateProc { child, log }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

/// Writes template `name` with `text`; the destination `dest` beside it and the
/// `-template` value joining them.
fn template_spec(root: &Path, name: &str, text: &str, dest: &str) -> (PathBuf, String) {
    let src = write(root, name, text);
    let dest = root.join(dest);
    let spec = format!("{src}:{}", dest.display());
    (dest, spec)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

async fn wait_file(p: &Path, what: &str, pred: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    wait_until(what, Duration::from_secs(20), || {
        let text = read(p);
        let ok = p.exists() && pred(&text);
        async move { ok.then_some(text) }
    })
    .await
}

/// Registers `service` on an external node at `addr` through the catalog.
async fn register(a: &Agent, node: &str, addr: &str, service: &str, id: &str, tags: &[&str]) {
    let body = json!({"Node": node, "Address": addr,
                      "Service": {"ID": id, "Service": service, "Tags": tags, "Port": 6379}});
    let r = call("PUT", &a.url("/v1/catalog/register"), None, Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn deregister(a: &Agent, node: &str, id: &str) {
    let body = json!({"Node": node, "ServiceID": id});
    let r = call("PUT", &a.url("/v1/catalog/deregister"), None, Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The check `template:<dest>` on `a`: (status, output).
async fn template_check(a: &Agent, dest: &str) -> Option<(String, String)> {
    let r = get(&a.url("/v1/agent/checks")).await.ok()?;
    let c = r.json().get(format!("template:{dest}"))?.clone();
    Some((
        c["Status"].as_str()?.to_string(),
        c["Output"].as_str()?.to_string(),
    ))
}

async fn wait_check(a: &Agent, dest: &str, status: &str, contains: &str) -> anyhow::Result<String> {
    wait_until(
        &format!("check template:{dest} {status} with {contains:?}"),
        Duration::from_secs(20),
        || async move {
            let (s, out) = template_check(a, dest).await?;
            (s == status && out.contains(contains)).then_some(out)
        },
    )
    .await
}

#[tokio::test]
async fn hosts_follow_the_redis_master_within_one_wait() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "hosts", &[]).await?;
    register(
        &a,
        "redis-a",
        "10.0.0.1",
        "foo-redis",
        "redis-a",
        &["master"],
    )
    .await;
    register(
        &a,
        "redis-b",
        "10.0.0.2",
        "foo-redis",
        "redis-b",
        &["replica"],
    )
    .await;
    let (dest, spec) = template_spec(root.path(), "hosts.ctmpl", "127.0.0.1 localhost\n{{- range service \"master.foo-redis\" }}\n{{ .Address }} foo-redis-master\n{{- end }}\n", "etc/hosts");
    let t = spawn_template(&a, root.path(), &["-template", &spec, "-wait", "200ms:1s"]);
    let text = wait_file(&dest, "first render", |s| s.contains("10.0.0.1")).await?;
    assert_eq!(text, "127.0.0.1 localhost\n10.0.0.1 foo-redis-master\n");

    // The failover script moves the master tag; the file follows within one wait.
    let moved = Instant::now();
    register(
        &a,
        "redis-b",
        "10.0.0.2",
        "foo-redis",
        "redis-b",
        &["master"],
    )
    .await;
    register(
        &a,
        "redis-a",
        "10.0.0.1",
        "foo-redis",
        "redis-a",
        &["replica"],
    )
    .await;
    let text = wait_file(&dest, "failover render", |s| {
        s.contains("10.0.0.2") && !s.contains("10.0.0.1")
    })
    .await?;
    let took = moved.elapsed();
    assert_eq!(text, "127.0.0.1 localhost\n10.0.0.2 foo-redis-master\n");
    // wait.max is 1 s; a debug build on a busy machine gets 2 s more. A change missed by
    // the blocking read would show only after its 60 s wait.
    assert!(took < Duration::from_secs(3), "took {took:?}\n{}", t.log());
    Ok(())
}

#[tokio::test]
async fn the_reload_command_runs_exactly_once_per_put() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "spam", &[]).await?;
    put(&a.url("/v1/kv/spam_ips"), b"1.1.1.1").await?;
    let src = write(
        root.path(),
        "deny.ctmpl",
        "{{ range split \",\" (key \"spam_ips\") }}deny {{ . }};\n{{ end }}",
    );
    let dest = root.path().join("deny.conf");
    let ran = root.path().join("reloads");
    let spec = format!("{src}:{}:echo reload >> {}", dest.display(), ran.display());
    let t = spawn_template(&a, root.path(), &["-template", &spec]);
    wait_file(&dest, "first render", |s| s == "deny 1.1.1.1;\n").await?;
    let count = || read(&ran).lines().count();
    wait_until("first reload", Duration::from_secs(10), || async {
        (count() == 1).then_some(())
    })
    .await?;
    for (i, ips) in ["1.1.1.1,2.2.2.2", "3.3.3.3", "3.3.3.3,4.4.4.4"]
        .iter()
        .enumerate()
    {
        put(&a.url("/v1/kv/spam_ips"), ips.as_bytes()).await?;
        let want = ips
            .split(',')
            .map(|ip| format!("deny {ip};\n"))
            .collect::<String>();
        wait_file(&dest, "render after PUT", |s| s == want).await?;
        wait_until("one reload per PUT", Duration::from_secs(10), || async {
            (count() == i + 2).then_some(())
        })
        .await?;
    }
    // A PUT of the same value changes no file: no reload.
    put(&a.url("/v1/kv/spam_ips"), b"3.3.3.3,4.4.4.4").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(), 4, "{}", t.log());
    let dest_s = dest.display().to_string();
    wait_check(&a, &dest_s, "passing", "echo reload").await?;
    Ok(())
}

#[tokio::test]
async fn a_restart_with_empty_data_renders_nothing() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut a = single_server(root.path(), "reset", &[]).await?;
    // Enough writes that a fresh cluster's index is well below this one's.
    for i in 0..40 {
        register(&a, "filler", "10.9.9.9", "filler", &format!("f{i}"), &[]).await;
    }
    register(&a, "web-1", "10.0.0.1", "web", "web-1", &[]).await;
    let (dest, spec) = template_spec(
        root.path(),
        "web.ctmpl",
        "{{ range service \"web\" }}server {{ .Address }};\n{{ else }}# no web\n{{ end }}",
        "upstreams.conf",
    );
    let port = a.http.port().to_string();
    let t = spawn_template(&a, root.path(), &["-template", &spec]);
    wait_file(&dest, "first render", |s| s == "server 10.0.0.1;\n").await?;

    // The agent comes back on the same address with its state lost.
    a.kill9();
    let b = single_server(root.path(), "reset-empty", &["-http-port", &port]).await?;
    let dest_s = dest.display().to_string();
    let why = wait_check(&b, &dest_s, "critical", "went back").await?;
    assert!(why.contains("keeping the last"), "{why}");
    assert_eq!(read(&dest), "server 10.0.0.1;\n", "{}", t.log());

    // Data again: rendered from the new state.
    register(&b, "web-2", "10.0.0.2", "web", "web-2", &[]).await;
    wait_file(&dest, "render after the data is back", |s| {
        s == "server 10.0.0.2;\n"
    })
    .await?;
    wait_check(&b, &dest_s, "passing", "rendered").await?;
    Ok(())
}

#[tokio::test]
async fn min_instances_keeps_the_last_file() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "mininst", &[]).await?;
    for i in 1..=3 {
        register(
            &a,
            &format!("web-{i}"),
            &format!("10.0.0.{i}"),
            "web",
            &format!("web-{i}"),
            &[],
        )
        .await;
    }
    let by_config = root.path().join("by-config.conf");
    let by_func = root.path().join("by-func.conf");
    let cfg = format!(
        r#"
template {{
  contents      = "{{{{ range service \"web\" }}}}{{{{ .Address }}}} {{{{ end }}}}"
  destination   = "{}"
  min_instances = 3
}}
template {{
  contents    = "{{{{ range service \"web\" | minimum 2 }}}}{{{{ .Address }}}} {{{{ end }}}}"
  destination = "{}"
}}
"#,
        by_config.display(),
        by_func.display()
    );
    let cfg_path = write(root.path(), "template.hcl", &cfg);
    let t = spawn_template(&a, root.path(), &["-config", &cfg_path]);
    let all = "10.0.0.1 10.0.0.2 10.0.0.3 ";
    wait_file(&by_config, "render with 3", |s| s == all).await?;
    wait_file(&by_func, "render with 3", |s| s == all).await?;

    deregister(&a, "web-3", "web-3").await;
    // Two left: the per-template guard holds, `minimum 2` renders.
    wait_file(&by_func, "render with 2", |s| s == "10.0.0.1 10.0.0.2 ").await?;
    let why = wait_check(
        &a,
        &by_config.display().to_string(),
        "critical",
        "min_instances 3",
    )
    .await?;
    assert!(why.contains("has 2 instances"), "{why}");
    assert_eq!(read(&by_config), all, "{}", t.log());

    deregister(&a, "web-2", "web-2").await;
    let why = wait_check(&a, &by_func.display().to_string(), "critical", "minimum 2").await?;
    assert!(why.contains("health.service(web"), "{why}");
    assert_eq!(read(&by_func), "10.0.0.1 10.0.0.2 ");
    Ok(())
}

#[tokio::test]
async fn a_failing_check_command_keeps_the_old_file() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "checkcmd", &[]).await?;
    put(&a.url("/v1/kv/nginx/conf"), b"ok 1").await?;
    let dest = root.path().join("nginx.conf");
    let cfg = json!({"template": [{
        "contents": "{{ key \"nginx/conf\" }}\n",
        "destination": dest.display().to_string(),
        "check_command": "grep -q '^ok' {{ .candidate }} || { echo 'syntax error' >&2; exit 1; }",
    }]});
    let cfg_path = write(root.path(), "t.json", &cfg.to_string());
    let t = spawn_template(&a, root.path(), &["-config", &cfg_path]);
    wait_file(&dest, "valid render", |s| s == "ok 1\n").await?;
    put(&a.url("/v1/kv/nginx/conf"), b"broken").await?;
    let why = wait_check(&a, &dest.display().to_string(), "critical", "syntax error").await?;
    assert!(why.contains("check_command"), "{why}");
    assert_eq!(read(&dest), "ok 1\n", "{}", t.log());
    put(&a.url("/v1/kv/nginx/conf"), b"ok 2").await?;
    wait_file(&dest, "valid render again", |s| s == "ok 2\n").await?;
    // No candidate files are left behind.
    let stray = std::fs::read_dir(root.path())?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(stray, 0);
    Ok(())
}

#[tokio::test]
async fn killing_every_server_keeps_the_last_file() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut s = single_server(root.path(), "ks-s1", &[]).await?;
    let join = s.serf.to_string();
    let c = Agent::start("ks-c1", &root.path().join("ks-c1"), &["-retry-join", &join])?;
    wait_until("client sees a leader", Duration::from_secs(15), || {
        leader_of(&c)
    })
    .await?;
    put(&s.url("/v1/kv/app/motd"), b"hello").await?;
    let (dest, spec) = template_spec(
        root.path(),
        "motd.ctmpl",
        "{{ key \"app/motd\" }}\n",
        "motd",
    );
    let t = spawn_template(&c, root.path(), &["-template", &spec]);
    wait_file(&dest, "render through the client", |s| s == "hello\n").await?;
    let dest_s = dest.display().to_string();
    wait_check(&c, &dest_s, "passing", "").await?;

    s.kill9();
    let why = wait_check(&c, &dest_s, "critical", "kv.get(app/motd)").await?;
    assert!(why.contains("keeping the last"), "{why}");
    assert_eq!(read(&dest), "hello\n", "{}", t.log());
    Ok(())
}

#[tokio::test]
async fn a_denied_read_names_the_403_and_renders_nothing() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = root.path().join("acl");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("acl.hcl"),
        "acl {\n  enabled = true\n  default_policy = \"deny\"\n  tokens {\n    initial_management = \"root\"\n  }\n}\n",
    )?;
    let dir_s = dir.display().to_string();
    let a = single_server(root.path(), "deny", &["-config-dir", &dir_s]).await?;
    wait_until("root token", Duration::from_secs(15), || {
        let url = a.url("/v1/acl/token/self");
        async move { (call("GET", &url, Some("root"), None).await.status == 200).then_some(()) }
    })
    .await?;
    let r = call(
        "PUT",
        &a.url("/v1/kv/secret"),
        Some("root"),
        Some(json!("s3cret")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A token that may read `public` only.
    let policy = json!({"Name": "public", "Rules": "key \"public\" { policy = \"read\" }"});
    let r = call("PUT", &a.url("/v1/acl/policy"), Some("root"), Some(policy)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tok = call(
        "PUT",
        &a.url("/v1/acl/token"),
        Some("root"),
        Some(json!({"Policies": [{"Name": "public"}]})),
    )
    .await;
    assert_eq!(tok.status, 200, "{}", tok.text());
    let secret = tok.json()["SecretID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (dest, spec) = template_spec(
        root.path(),
        "s.ctmpl",
        "{{ key \"secret\" }}\n",
        "secret.out",
    );
    let t = spawn_template(
        &a,
        root.path(),
        &["-template", &spec, "-token", &secret, "-once"],
    );
    let mut child = t;
    let status = wait_until("-once exits", Duration::from_secs(20), || {
        let s = child.child.try_wait().ok().flatten();
        async move { s }
    })
    .await?;
    assert_eq!(status.code(), Some(1));
    let log = child.log();
    assert!(
        log.contains("403") && log.contains("kv.get(secret)"),
        "{log}"
    );
    assert!(!dest.exists(), "a denied read rendered {:?}", read(&dest));
    child.child.wait()?;
    Ok(())
}

#[tokio::test]
async fn two_hundred_templates_share_watchers_and_only_users_rerender() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "many", &[]).await?;
    for s in 0..50 {
        register(
            &a,
            &format!("n{s}"),
            &format!("10.1.0.{s}"),
            &format!("svc{s}"),
            &format!("svc{s}"),
            &[],
        )
        .await;
    }
    let out = root.path().join("out");
    let templates: Vec<serde_json::Value> = (0..200)
        .map(|i| {
            json!({
                "contents": format!("{{{{ range service \"svc{}\" }}}}{{{{ .Address }}}} {{{{ .Tags }}}}{{{{ end }}}}\n", i % 50),
                "destination": out.join(format!("t{i}")).display().to_string(),
            })
        })
        .collect();
    let cfg_path = write(
        root.path(),
        "many.json",
        &json!({"template": templates}).to_string(),
    );
    let t = spawn_template(&a, root.path(), &["-config", &cfg_path]);
    wait_until("200 files", Duration::from_secs(60), || {
        let n = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
        async move { (n == 200).then_some(()) }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One watcher per distinct query, not per template.
    let watching = t
        .log()
        .lines()
        .rfind(|l| l.contains("watching "))
        .map(str::to_string);
    assert!(
        watching
            .as_deref()
            .is_some_and(|l| l.ends_with("watching 50 queries")),
        "{watching:?}"
    );
    let before = t.log().lines().filter(|l| l.contains("render ")).count();
    register(&a, "n7", "10.1.0.7", "svc7", "svc7", &["changed"]).await;
    let changed = out.join("t7");
    wait_file(&changed, "svc7 users re-render", |s| s.contains("changed")).await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let log = t.log();
    let after: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("render "))
        .skip(before)
        .collect();
    // svc7's users: t7, t57, t107, t157, and nobody else.
    let mut rendered: Vec<String> = after
        .iter()
        .filter_map(|l| l.rsplit("/out/").next())
        .map(str::to_string)
        .collect();
    rendered.sort();
    rendered.dedup();
    assert_eq!(rendered, ["t107", "t157", "t57", "t7"], "{after:?}");
    for i in [7, 57, 107, 157] {
        assert_eq!(read(&out.join(format!("t{i}"))), "10.1.0.7 [changed]\n");
    }
    Ok(())
}

#[tokio::test]
async fn exec_supervises_a_child_and_passes_its_exit_status() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "exec", &[]).await?;
    put(&a.url("/v1/kv/app/conf"), b"v1").await?;
    let (dest, spec) = template_spec(
        root.path(),
        "app.ctmpl",
        "{{ key \"app/conf\" }}\n",
        "app.conf",
    );
    // The child notes whether the file existed when it started, each SIGHUP, and exits 3
    // when asked to.
    let child = write(
        root.path(),
        "child.sh",
        "test -f app.conf && echo started-after-render >> events\n\
         trap 'echo hup >> events' HUP\n\
         while [ ! -f stop ]; do sleep 0.05; done\n\
         exit 3\n",
    );
    let exec = format!("sh {child}");
    let mut t = spawn_template(&a, root.path(), &["-template", &spec, "-exec", &exec]);
    let events = root.path().join("events");
    wait_file(&events, "child started", |s| s == "started-after-render\n").await?;
    put(&a.url("/v1/kv/app/conf"), b"v2").await?;
    wait_file(&events, "one SIGHUP per change", |s| {
        s == "started-after-render\nhup\n"
    })
    .await?;
    assert_eq!(read(&dest), "v2\n");
    std::fs::write(root.path().join("stop"), "")?;
    let status = wait_until(
        "renderer exits with the child",
        Duration::from_secs(15),
        || {
            let s = t.child.try_wait().ok().flatten();
            async move { s }
        },
    )
    .await?;
    assert_eq!(status.code(), Some(3), "{}", t.log());
    Ok(())
}

#[tokio::test]
async fn the_agent_renders_its_own_template_blocks() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = root.path().join("conf");
    std::fs::create_dir_all(&dir)?;
    let dest = root.path().join("motd");
    let ran = root.path().join("ran");
    std::fs::write(
        dir.join("templates.hcl"),
        format!(
            "template {{\n  contents = \"motd: {{{{ keyOrDefault \\\"motd\\\" \\\"none\\\" }}}}\\n\"\n  destination = \"{}\"\n  command = \"echo x >> {}\"\n  wait {{\n    min = \"50ms\"\n  }}\n}}\n",
            dest.display(),
            ran.display()
        ),
    )?;
    let dir_s = dir.display().to_string();
    let a = single_server(root.path(), "own", &["-config-dir", &dir_s]).await?;
    wait_file(&dest, "first render", |s| s == "motd: none\n").await?;
    put(&a.url("/v1/kv/motd"), b"hello").await?;
    wait_file(&dest, "render after PUT", |s| s == "motd: hello\n").await?;
    wait_check(&a, &dest.display().to_string(), "passing", "rendered").await?;
    assert_eq!(read(&ran).lines().count(), 2);

    // A broken template stops the start, naming the template's line and column.
    std::fs::write(
        dir.join("bad.hcl"),
        "template {\n  contents = \"ok\\n{{ range x }}\"\n  destination = \"/tmp/never\"\n}\n",
    )?;
    let out = Command::new(muster_bin())
        .args([
            "agent",
            "-dev",
            "-config-dir",
            &dir_s,
            "-http-port",
            "0",
            "-dns-port",
            "0",
        ])
        .args([
            "-serf-lan-port",
            "0",
            "-server-port",
            "0",
            "-bind",
            "127.0.0.1",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.hcl") && err.contains("2:1: unexpected EOF"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn sighup_reloads_templates_and_keeps_them_when_broken() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "hup", &[]).await?;
    put(&a.url("/v1/kv/name"), b"muster").await?;
    let (dest, spec) = template_spec(root.path(), "hi.ctmpl", "hello {{ key \"name\" }}\n", "hi");
    let t = spawn_template(&a, root.path(), &["-template", &spec]);
    wait_file(&dest, "first render", |s| s == "hello muster\n").await?;
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &t.child.id().to_string()])
            .status()
    };
    // A broken template: the running one stays, and the log says where it broke.
    write(root.path(), "hi.ctmpl", "bye {{ key \"name\" \n");
    hup()?;
    wait_until("reload refused", Duration::from_secs(10), || {
        let ok = t.log().contains("reload failed") && t.log().contains("hi.ctmpl:1:");
        async move { ok.then_some(()) }
    })
    .await?;
    put(&a.url("/v1/kv/name"), b"again").await?;
    wait_file(&dest, "the old template still renders", |s| {
        s == "hello again\n"
    })
    .await?;
    // Fixed: the new template replaces it.
    write(root.path(), "hi.ctmpl", "bye {{ key \"name\" }}\n");
    hup()?;
    wait_file(&dest, "reloaded template", |s| s == "bye again\n").await?;
    Ok(())
}

#[tokio::test]
async fn a_template_that_waits_forever_says_so() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "forever", &[]).await?;
    let (dest, spec) = template_spec(root.path(), "k.ctmpl", "{{ key \"never/written\" }}\n", "k");
    let t = spawn_template(&a, root.path(), &["-template", &spec]);
    // Silent during the startup grace (10 s), then critical with what it waits for.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(template_check(&a, &dest.display().to_string()).await, None);
    let why = wait_check(
        &a,
        &dest.display().to_string(),
        "critical",
        "waiting for data",
    )
    .await?;
    assert!(why.contains("kv.get(never/written)"), "{why}");
    assert!(t.log().contains("WARN"), "{}", t.log());
    assert!(!dest.exists());
    put(&a.url("/v1/kv/never/written"), b"now").await?;
    wait_file(&dest, "render once the key exists", |s| s == "now\n").await?;
    wait_check(&a, &dest.display().to_string(), "passing", "rendered").await?;
    Ok(())
}
