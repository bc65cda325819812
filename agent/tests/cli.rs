//! The `muster` binary as an operator meets it: dev mode, flags, errors at start.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every listener on 127.0.0.1 with an ephemeral port: tests never collide on ports.
const LOOPBACK_EPHEMERAL: [&str; 10] = [
    "-bind",
    "127.0.0.1",
    "-http-port",
    "0",
    "-dns-port",
    "0",
    "-server-port",
    "0",
    "-serf-lan-port",
    "0",
];

fn muster() -> Command {
    Command::new(env!("CARGO_BIN_EXE_muster"))
}

#[test]
fn version_prints_a_plain_version() {
    let out = muster().arg("version").output().expect("run");
    assert!(out.status.success());
    // Muster's version, then the Consul API it implements, in Consul's layout.
    let out = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("Muster v{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(lines[1], "Consul API v1.10.9");
    assert!(
        lines[2].starts_with("Protocol 2 spoken by default"),
        "{out}"
    );
}

#[test]
fn unknown_flag_is_named() {
    let out = muster()
        .args(["agent", "-dev", "-bogus-flag"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error: flag provided but not defined: -bogus-flag"
    );
    // A client command words it as Go's flag package does (Consul's CLI prints that line,
    // then the command's usage) and exits 1.
    let out = muster()
        .args(["members", "--no-such"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().next(),
        Some("flag provided but not defined: -no-such"),
        "{err}"
    );
    assert!(err.contains("Usage: muster members [options]"), "{err}");
}

#[test]
fn unreachable_agent_is_a_clear_error() {
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let out = muster()
        .args(["members", "-http-addr", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // Consul's wording of the step, then the cause.
    assert!(
        err.starts_with(&format!(
            "Error retrieving members: cannot reach the agent at http://127.0.0.1:{port}"
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn port_in_use_is_one_line_and_nonzero() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = muster()
        .args(["agent", "-server", "-bootstrap-expect", "1", "-data-dir"])
        .arg(dir.path())
        .args([
            "-bind",
            "127.0.0.1",
            "-http-port",
            &port,
            "-dns-port",
            "0",
            "-server-port",
            "0",
            "-serf-lan-port",
            "0",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!("Error: cannot listen for HTTP on 127.0.0.1:{port}: Address already in use (os error 98)")
    );
}

#[test]
fn config_file_with_unknown_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("bad.json");
    std::fs::write(&f, r#"{"server": true, "bootstrap_expct": 3}"#).expect("write");
    let out = muster()
        .args(["agent", "-dev", "-config-file"])
        .arg(&f)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "Error: config file {}: unknown key \"bootstrap_expct\"",
            f.display()
        )
    );
}

/// A started agent, killed (by PID) when dropped, so a failing assertion leaks no process.
struct Guard(std::process::Child);

impl std::ops::Deref for Guard {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts an agent and returns it and its HTTP port once the banner is out.
fn start(args: &[&str], data_dir: &std::path::Path) -> (Guard, u16) {
    let mut child = muster()
        .args(["agent", "-node", "n1", "-data-dir"])
        .arg(data_dir)
        .args(LOOPBACK_EPHEMERAL)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut port = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(i) = line.find("HTTP: ") {
            port = line[i + 6..]
                .split(',')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
        }
        if line.starts_with("==> Log data") {
            break;
        }
    }
    (Guard(child), port)
}

#[test]
fn data_dir_of_another_node_is_refused_and_corrupt_files_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, port) = start(&["-server", "-bootstrap-expect", "1"], dir.path());
    assert_ne!(port, 0, "agent started");
    child.kill().expect("kill");
    child.wait().expect("wait");

    let out = muster()
        .args(["agent", "-node", "other", "-data-dir"])
        .arg(dir.path())
        .arg("-server")
        .args(LOOPBACK_EPHEMERAL)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belongs to node \"n1\" in datacenter \"dc1\", not to node \"other\""),
        "{err}"
    );

    std::fs::write(
        dir.path().join("raft.redb"),
        b"this is not a redb file at all, just junk bytes",
    )
    .expect("corrupt");
    let out = muster()
        .args(["agent", "-node", "n1", "-data-dir"])
        .arg(dir.path())
        .args(["-server", "-bootstrap-expect", "1"])
        .args(LOOPBACK_EPHEMERAL)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "Error: cannot open {}",
            dir.path().join("raft.redb").display()
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn sigterm_leaves_and_exits_and_state_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let (mut child, port) = start(&["-server", "-bootstrap-expect", "1"], dir.path());
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    // Ready: a leader, then an acknowledged write.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = client
            .put(format!("{base}/v1/kv/durable"))
            .body("yes")
            .send()
            .ok()
            .is_some_and(|r| r.status().as_u16() == 200);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "agent never accepted a write");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("agent ready for writes {:?} after spawn", started.elapsed());
    let self_info: serde_json::Value = client
        .get(format!("{base}/v1/agent/self"))
        .send()
        .expect("self")
        .json()
        .expect("json");
    // `Config.Version` is the Consul API version clients detect features by; Muster's own
    // version is beside it, in `Stats.build`.
    assert_eq!(self_info["Config"]["Version"], "1.10.9");
    assert_eq!(
        self_info["Stats"]["build"]["muster_version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(self_info["Config"]["NodeName"], "n1");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "agent did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // The HTTP port is released.
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port released");

    let (mut child, port) = start(&["-server", "-bootstrap-expect", "1"], dir.path());
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client.get(format!("{base}/v1/kv/durable?raw")).send().ok();
        if let Some(r) = r.filter(|r| r.status().as_u16() == 200) {
            assert_eq!(r.text().expect("body"), "yes");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "value did not survive the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, port) = start(&["-server", "-bootstrap-expect", "1"], dir.path());
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut acked = 0;
    while acked < 200 {
        let r = client
            .put(format!("{base}/v1/kv/k/{acked:04}"))
            .body(format!("v{acked}"))
            .send();
        if r.ok().is_some_and(|r| r.status().as_u16() == 200) {
            acked += 1;
        } else {
            assert!(Instant::now() < deadline, "agent never accepted writes");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let (mut child, port) = start(&["-server", "-bootstrap-expect", "1"], dir.path());
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let keys = loop {
        let r = client
            .get(format!("{base}/v1/kv/k/?keys"))
            .send()
            .ok()
            .filter(|r| r.status().as_u16() == 200);
        if let Some(r) = r {
            break r.json::<Vec<String>>().expect("keys");
        }
        assert!(Instant::now() < deadline, "no answer after restart");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(keys.len(), 200, "every acknowledged write is back");
    let last = client
        .get(format!("{base}/v1/kv/k/0199?raw"))
        .send()
        .expect("get")
        .text()
        .expect("body");
    assert_eq!(last, "v199");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn unusable_data_dir_is_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let out = muster()
        .args(["agent", "-server", "-bootstrap-expect", "1", "-data-dir"])
        .arg(&file)
        .args(LOOPBACK_EPHEMERAL)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "Error: data_dir {:?} is not a directory",
            file.display().to_string()
        )),
        "{err}"
    );
}

/// Every command, as `muster help` and Consul's CLI name them.
const COMMAND_NAMES: &[&str] = &[
    "agent",
    "catalog",
    "catalog datacenters",
    "catalog nodes",
    "catalog services",
    "force-leave",
    "join",
    "kv",
    "kv delete",
    "kv export",
    "kv get",
    "kv import",
    "kv put",
    "leave",
    "lock",
    "maint",
    "members",
    "recover",
    "reload",
    "services",
    "services deregister",
    "services register",
    "tls",
    "tls ca",
    "tls ca create",
    "tls cert",
    "tls cert create",
    "version",
];

#[test]
fn every_command_takes_help_flags_as_consul_does() {
    for name in COMMAND_NAMES {
        for flag in ["-h", "-help", "--help"] {
            let out = muster()
                .args(name.split(' '))
                .arg(flag)
                .output()
                .expect("run");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{name} {flag}: {err}");
            assert!(out.stdout.is_empty(), "{name} {flag}: help goes to stderr");
            assert!(
                err.starts_with(&format!("Usage: muster {name}")),
                "{name} {flag}: {err}"
            );
        }
    }
    // Anywhere before `--`, even after arguments; a client command lists the HTTP options.
    let out = muster()
        .args(["kv", "put", "some/key", "value", "-help"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    // Consul lists them alphabetically: the TLS flags come before -http-addr.
    assert!(
        err.contains("\nHTTP API Options\n\n  -ca-file=<value>\n"),
        "{err}"
    );
    assert!(err.contains("\n  -http-addr=<address>\n"), "{err}");
    assert!(err.contains("\nCommand Options\n\n  -acquire\n"), "{err}");
    // A family shows its subcommands; alone, it prints the same help and exits 1.
    let out = muster().args(["kv"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Subcommands:\n    delete    Removes data from the KV store\n"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = muster().args(["services", "bogus"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    // The command list: alone, with -h, and for an unknown command (127).
    let out = muster().arg("-h").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Available commands are:"));
    let out = muster().output().expect("run");
    assert_eq!(out.status.code(), Some(127));
    let out = muster().arg("bogus").output().expect("run");
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Usage: muster [--version] [--help] <command> [<args>]"),
        "{err}"
    );
    assert!(
        err.contains("\n    kv             Interact with the key-value store\n"),
        "{err}"
    );
}

/// One request the fake agent received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    token: Option<String>,
}

type Route = dyn Fn(&str, &str) -> (u16, String) + Send + Sync;

/// An HTTP server on 127.0.0.1 that answers as `route` says and records what it was asked:
/// the commands' side of the protocol, tested without an agent.
struct FakeAgent {
    addr: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl FakeAgent {
    fn start(route: impl Fn(&str, &str) -> (u16, String) + Send + Sync + 'static) -> FakeAgent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let route: std::sync::Arc<Route> = std::sync::Arc::new(route);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, route) = (log.clone(), route.clone());
                std::thread::spawn(move || serve_one(stream, &log, &*route));
            }
        });
        FakeAgent { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn clear(&self) {
        if let Ok(mut s) = self.seen.lock() {
            s.clear();
        }
    }

    /// `muster ARGS` against this agent, found through `CONSUL_HTTP_ADDR`.
    fn run(&self, args: &[&str]) -> std::process::Output {
        client_env(muster())
            .env("CONSUL_HTTP_ADDR", &self.addr)
            .args(args)
            .output()
            .expect("run")
    }
}

/// A command with none of the variables that point commands at an agent or carry a token.
fn client_env(mut cmd: Command) -> Command {
    for v in [
        "MUSTER_HTTP_ADDR",
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_TOKEN_FILE",
        "CONSUL_HTTP_SSL",
        "CONSUL_HTTP_AUTH",
    ] {
        cmd.env_remove(v);
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn serve_one(stream: std::net::TcpStream, log: &std::sync::Mutex<Vec<Seen>>, route: &Route) {
    use std::io::{Read, Write};
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let (mut length, mut token) = (0usize, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "x-consul-token" => token = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let (code, reply) = route(&method, &path);
    if let Ok(mut l) = log.lock() {
        l.push(Seen {
            method,
            path,
            token,
        });
    }
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{reply}",
        reply.len()
    );
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Answers every request with `200 true`, and the few reads the commands decode with
/// something they can read.
fn agreeable(method: &str, path: &str) -> (u16, String) {
    let p = path.split('?').next().unwrap_or("");
    let body = match (method, p) {
        ("GET", "/v1/agent/members") => {
            r#"[{"Name":"n1","Addr":"127.0.0.1","Port":8301,"Status":1,"Tags":{"role":"node"}}]"#
        }
        ("GET", "/v1/agent/self") => r#"{"Config":{"NodeName":"n1","Server":true}}"#,
        ("GET", "/v1/agent/checks") => "{}",
        ("GET", "/v1/catalog/datacenters") => r#"["dc1"]"#,
        ("GET", "/v1/catalog/services") => r#"{"consul":[]}"#,
        ("GET", "/v1/catalog/nodes") => "[]",
        ("GET", p) if p.starts_with("/v1/kv/") => {
            r#"[{"Key":"k","Value":"dg==","Flags":0,"CreateIndex":1,"ModifyIndex":1,"LockIndex":0}]"#
        }
        _ => "true",
    };
    (200, body.to_string())
}

#[test]
fn every_client_command_honours_the_http_address_and_token_settings() {
    let agent = FakeAgent::start(agreeable);
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "  from-file\n").expect("write");
    let token_file = token_file.display().to_string();
    let commands: &[&[&str]] = &[
        &["members"],
        &["join", "127.0.0.1:8301"],
        &["leave"],
        &["force-leave", "n2"],
        &["reload"],
        &["maint"],
        &["kv", "get", "k"],
        &["kv", "put", "k", "v"],
        &["kv", "delete", "k"],
        &["kv", "export"],
        &["kv", "import", r#"[{"key":"k","flags":0,"value":"dg=="}]"#],
        &["catalog", "datacenters"],
        &["catalog", "nodes"],
        &["catalog", "services"],
        &["services", "register", "-name", "web"],
        &["services", "deregister", "-id", "web"],
    ];
    // Bind and drop: an address nobody listens on, for the variable a flag overrides.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .to_string();
    for args in commands {
        let (cmd, rest) = args.split_at(
            if args[0] == "kv" || args[0] == "catalog" || args[0] == "services" {
                2
            } else {
                1
            },
        );
        // CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN.
        agent.clear();
        let out = client_env(muster())
            .env("CONSUL_HTTP_ADDR", &agent.addr)
            .env("CONSUL_HTTP_TOKEN", "from-env")
            .args(*args)
            .output()
            .expect("run");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let seen = agent.seen();
        assert!(!seen.is_empty(), "{args:?} asked nothing");
        for s in &seen {
            assert_eq!(s.token.as_deref(), Some("from-env"), "{args:?}: {s:?}");
        }
        // -http-addr and -token win over the variables; -token-file over -token.
        for (flags, want) in [
            (vec!["-token", "from-flag"], "from-flag"),
            (
                vec!["-token", "from-flag", "-token-file", token_file.as_str()],
                "from-file",
            ),
        ] {
            agent.clear();
            let out = client_env(muster())
                .env("CONSUL_HTTP_ADDR", &dead)
                .env("CONSUL_HTTP_TOKEN", "from-env")
                .args(cmd)
                .args(["-http-addr", &agent.addr])
                .args(&flags)
                .args(rest)
                .output()
                .expect("run");
            assert!(out.status.success(), "{args:?} {flags:?}: {}", stderr(&out));
            for s in agent.seen() {
                assert_eq!(s.token.as_deref(), Some(want), "{args:?} {flags:?}: {s:?}");
            }
        }
    }
    // CONSUL_HTTP_TOKEN_FILE; a missing token file is Consul's connection error.
    agent.clear();
    let out = client_env(muster())
        .env("CONSUL_HTTP_ADDR", format!("http://{}", agent.addr))
        .env("CONSUL_HTTP_TOKEN_FILE", &token_file)
        .args(["catalog", "services"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(agent.seen()[0].token.as_deref(), Some("from-file"));
    let out = agent.run(&["members", "-token-file", "/nonexistent/token"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("Error connecting to Consul agent: Error loading token file:"),
        "{}",
        stderr(&out)
    );
    // -datacenter goes on every request of the commands that take it.
    agent.clear();
    let out = agent.run(&["kv", "put", "-datacenter", "dc1", "k", "v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        agent.seen()[0].path.contains("dc=dc1"),
        "{:?}",
        agent.seen()
    );
}

/// A server with Consul's tags, a client without `vsn` (its protocol comes from
/// `ProtocolCur`), and a member of no known role.
const MEMBERS: &str = r#"[
 {"Name":"web1","Addr":"10.0.0.7","Port":8301,"Status":4,"ProtocolCur":2,
  "Tags":{"role":"node","dc":"dc1","build":"0.3.0"}},
 {"Name":"srv","Addr":"10.0.0.1","Port":8301,"Status":1,"ProtocolCur":2,
  "Tags":{"role":"consul","dc":"dc1","build":"1.10.12:muster","vsn":"2","port":"8300"}},
 {"Name":"odd","Addr":"::1","Port":8301,"Status":1,"Tags":{}}
]"#;

#[test]
fn members_prints_consuls_columns_and_filters() {
    let agent = FakeAgent::start(|method, path| match (method, path.split('?').next()) {
        ("GET", Some("/v1/agent/members")) => (200, MEMBERS.to_string()),
        ("GET", Some("/v1/agent/self")) => (200, r#"{"Config":{"Server":true}}"#.into()),
        _ => (404, String::new()),
    });
    let out = agent.run(&["members"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Consul's columnize pads every column but the last, so a row of empty cells keeps its
    // padding.
    let expected = [
        "Node  Address        Status  Type     Build    Protocol  DC   Segment".to_string(),
        "srv   10.0.0.1:8301  alive   server   1.10.12  2         dc1  <all>".to_string(),
        format!("odd   [::1]:8301     alive   unknown{}", " ".repeat(26)),
        "web1  10.0.0.7:8301  failed  client   0.3.0    2         dc1  <default>".to_string(),
    ];
    assert_eq!(stdout(&out), format!("{}\n", expected.join("\n")));
    assert!(
        agent.seen()[0].path.contains("segment=_all"),
        "{:?}",
        agent.seen()
    );
    let out = agent.run(&["members", "-detailed", "-status", "alive"]);
    assert_eq!(
        stdout(&out),
        "Node  Address        Status  Tags\n\
         srv   10.0.0.1:8301  alive   build=1.10.12:muster,dc=dc1,port=8300,role=consul,segment=<all>,vsn=2\n\
         odd   [::1]:8301     alive   segment=<default>\n"
    );
    // A segment filter: every member is in the default segment ("").
    let out = agent.run(&["members", "-segment", "alpha"]);
    assert_eq!(out.status.code(), Some(2), "no member matched");
    assert!(out.stdout.is_empty());
    let out = agent.run(&["members", "-segment="]);
    assert!(
        stdout(&out).contains(
            "\nsrv   10.0.0.1:8301  alive   server   1.10.12  2         dc1  <default>\n"
        ),
        "{}",
        stdout(&out)
    );
    let out = agent.run(&["members", "-status", "left"]);
    assert_eq!(out.status.code(), Some(2));
    // The WAN pool of a one-datacenter server: its servers, by their WAN names.
    agent.clear();
    let out = agent.run(&["members", "-wan"]);
    assert_eq!(
        stdout(&out),
        "Node     Address        Status  Type    Build    Protocol  DC   Segment\n\
         srv.dc1  10.0.0.1:8301  alive   server  1.10.12  2         dc1  <all>\n"
    );
    assert!(agent.seen()[0].path.contains("wan=1"), "{:?}", agent.seen());
    let out = agent.run(&["members", "-status", "("]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("Failed to compile status regexp: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn catalog_prints_consuls_tables_and_messages() {
    let agent = FakeAgent::start(|_, path| {
        let body = match path.split('?').next().unwrap_or("") {
            "/v1/catalog/nodes" => {
                r#"[{"ID":"3f0c2d1a-aaaa-bbbb-cccc-000000000001","Node":"alpha","Address":"10.0.0.1","Datacenter":"dc1",
                    "TaggedAddresses":{"wan":"10.0.0.1","lan":"10.0.0.1"},"Meta":{"rack":"r1","os":"linux"}},
                   {"ID":"","Node":"b","Address":"10.0.0.22","Datacenter":"dc1","TaggedAddresses":null,"Meta":null}]"#
            }
            "/v1/catalog/service/web" => {
                r#"[{"ID":"","Node":"web1","Address":"10.0.0.5","Datacenter":"dc1","ServiceID":"a"},
                   {"ID":"","Node":"web1","Address":"10.0.0.5","Datacenter":"dc1","ServiceID":"b"}]"#
            }
            "/v1/catalog/service/none" => "[]",
            "/v1/catalog/services" => r#"{"consul":[],"web":["v1","blue"]}"#,
            "/v1/catalog/node/web1" => {
                r#"{"Node":{"Node":"web1"},"Services":{"a":{"Service":"web","Tags":["b"]},"b":{"Service":"web","Tags":["a"]}}}"#
            }
            "/v1/catalog/node/ghost" => return (404, String::new()),
            _ => "null",
        };
        (200, body.to_string())
    });
    let out = agent.run(&["catalog", "nodes"]);
    assert_eq!(
        stdout(&out),
        "Node   ID        Address    DC\nalpha  3f0c2d1a  10.0.0.1   dc1\nb                10.0.0.22  dc1\n"
    );
    let out = agent.run(&["catalog", "nodes", "-detailed", "-node-meta", "rack=r1"]);
    assert_eq!(
        stdout(&out),
        format!(
            "Node   ID{id_pad}Address    DC   TaggedAddresses             Meta\n\
             alpha  3f0c2d1a-aaaa-bbbb-cccc-000000000001  10.0.0.1   dc1  \
             lan=10.0.0.1, wan=10.0.0.1  os=linux, rack=r1\n\
             b{b_pad}10.0.0.22  dc1{tail}\n",
            id_pad = " ".repeat(36),
            b_pad = " ".repeat(44),
            tail = " ".repeat(30),
        )
    );
    assert!(agent
        .seen()
        .last()
        .is_some_and(|s| s.path.contains("node-meta=rack%3Ar1")));
    // One row per instance, as Consul lists them.
    let out = agent.run(&["catalog", "nodes", "-service", "web"]);
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.starts_with("web1"))
            .count(),
        2
    );
    let out = agent.run(&["catalog", "nodes", "-service", "none"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr(&out),
        "No nodes match the given query - try expanding your search.\n"
    );
    let out = agent.run(&["catalog", "services", "-tags"]);
    assert_eq!(stdout(&out), "consul      \nweb         blue,v1\n");
    let out = agent.run(&["catalog", "services", "-node", "web1", "-tags"]);
    assert_eq!(stdout(&out), "web      a,b\n");
    let out = agent.run(&["catalog", "services", "-node", "ghost"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stderr(&out),
        "No services match the given query - try expanding your search.\n"
    );
    let out = agent.run(&["catalog", "services", "extra"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "Too many arguments (expected 0, got 1)\n");
    let out = agent.run(&["catalog", "nodes", "-node-meta", "rack"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn kv_prints_consuls_messages_and_exit_codes() {
    let agent = FakeAgent::start(|method, path| {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        match (method, p) {
            ("GET", "/v1/kv/missing") => (404, String::new()),
            ("GET", "/v1/kv/app/") => (
                200,
                r#"[{"Key":"app/a","Value":"MQ==","Flags":0,"CreateIndex":5,"ModifyIndex":6,"LockIndex":0},
                    {"Key":"app/b","Value":null,"Flags":3,"CreateIndex":7,"ModifyIndex":7,"LockIndex":1,"Session":"s1"}]"#
                    .to_string(),
            ),
            // Every conditional write loses.
            (m, _) if m != "GET" && (q.contains("acquire=") || q.contains("cas=")) => {
                (200, "false".into())
            }
            _ => (200, "true".into()),
        }
    });
    let cases: &[(&[&str], i32, &str, &str)] = &[
        (
            &["kv", "put", "a/b", "v"],
            0,
            "Success! Data written to: a/b\n",
            "",
        ),
        (
            &["kv", "put", "-acquire", "-session", "s1", "a/b"],
            1,
            "",
            "Error! Did not acquire lock\n",
        ),
        (
            &["kv", "put", "-release", "-session", "s1", "a/b"],
            0,
            "Success! Lock released on: a/b\n",
            "",
        ),
        (
            &["kv", "put", "-cas", "-modify-index", "4", "a/b", "v"],
            1,
            "",
            "Error! Did not write to a/b: CAS failed\n",
        ),
        (
            &["kv", "put", "-acquire", "a/b"],
            1,
            "",
            "Error! Missing -session (required with -acquire and -release)\n",
        ),
        (
            &["kv", "put", "-cas", "a/b"],
            1,
            "",
            "Must specify -modify-index with -cas!\n",
        ),
        (&["kv", "put"], 1, "", "Error! Missing KEY argument\n"),
        (
            &["kv", "put", "a", "b", "c"],
            1,
            "",
            "Error! Too many arguments (expected 1 or 2, got 3)\n",
        ),
        (&["kv", "get"], 1, "", "Error! Missing KEY argument\n"),
        (
            &["kv", "get", "missing"],
            1,
            "",
            "Error! No key exists at: missing\n",
        ),
        (&["kv", "get", "-recurse", "missing"], 0, "", ""),
        (
            &["kv", "get", "-recurse", "app/"],
            0,
            "app/a:1\napp/b:\n",
            "",
        ),
        (
            &["kv", "delete", "-recurse", "app/"],
            0,
            "Success! Deleted keys with prefix: app/\n",
            "",
        ),
        (
            &["kv", "delete", "a/b"],
            0,
            "Success! Deleted key: a/b\n",
            "",
        ),
        (
            &["kv", "delete", "-cas", "-modify-index", "3", "a/b"],
            1,
            "",
            "Error! Did not delete key a/b: CAS failed\n",
        ),
        (
            &["kv", "delete", "-modify-index", "3", "a/b"],
            1,
            "",
            "Cannot specify -modify-index without -cas!\n",
        ),
        (
            &[
                "kv",
                "delete",
                "-cas",
                "-recurse",
                "-modify-index",
                "3",
                "a",
            ],
            1,
            "",
            "Cannot specify both -cas and -recurse!\n",
        ),
        (&["kv", "import"], 1, "", "Error! Missing DATA argument\n"),
        (&["kv", "import", "{"], 1, "", ""),
    ];
    for (args, code, out_text, err_text) in cases {
        let out = agent.run(args);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), *out_text, "{args:?}");
        if !err_text.is_empty() {
            assert_eq!(stderr(&out), *err_text, "{args:?}");
        }
    }
    // -detailed: Consul's tabwriter layout, a blank line between entries.
    let out = agent.run(&["kv", "get", "-recurse", "-detailed", "app/"]);
    assert_eq!(
        stdout(&out),
        "CreateIndex      5\nFlags            0\nKey              app/a\nLockIndex        0\n\
         ModifyIndex      6\nSession          -\nValue            1\n\n\
         CreateIndex      7\nFlags            3\nKey              app/b\nLockIndex        1\n\
         ModifyIndex      7\nSession          s1\nValue            \n"
    );
    assert!(stderr(&agent.run(&["kv", "import", "{"])).starts_with("Cannot unmarshal data: "));
    let out = agent.run(&[
        "kv",
        "import",
        "-prefix",
        "p",
        r#"[{"key":"x/","flags":0,"value":""}]"#,
    ]);
    assert_eq!(stdout(&out), "Imported: p/x/\n");
}

#[test]
fn maint_prints_consuls_messages() {
    let agent = FakeAgent::start(|_, path| match path.split('?').next().unwrap_or("") {
        "/v1/agent/self" => (200, r#"{"Config":{"NodeName":"n1"}}"#.into()),
        "/v1/agent/checks" => (
            200,
            r#"{"_node_maintenance":{"Notes":"patching"},
                "_service_maintenance:web-1":{"Notes":"deploy","ServiceID":"web-1"}}"#
                .into(),
        ),
        _ => (200, String::new()),
    });
    let cases: &[(&[&str], i32, &str)] = &[
        (&["maint", "-enable"], 0, "Node maintenance is now enabled\n"),
        (&["maint", "-disable"], 0, "Node maintenance is now disabled\n"),
        (&["maint", "-enable", "-service", "web-1"], 0, "Service maintenance is now enabled for \"web-1\"\n"),
        (&["maint", "-disable", "-service", "web-1"], 0, "Service maintenance is now disabled for \"web-1\"\n"),
        (
            &["maint"],
            0,
            "Node:\n  Name:   n1\n  Reason: patching\n\nService:\n  ID:     web-1\n  Reason: deploy\n\n",
        ),
    ];
    for (args, code, text) in cases {
        let out = agent.run(args);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), *text, "{args:?}");
    }
    for (args, err) in [
        (
            &["maint", "-enable", "-disable"][..],
            "Only one of -enable or -disable may be provided\n",
        ),
        (
            &["maint", "-disable", "-reason", "x"][..],
            "Reason may only be provided with -enable\n",
        ),
        (
            &["maint", "-service", "web-1"][..],
            "Service requires either -enable or -disable\n",
        ),
    ] {
        let out = agent.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out), err, "{args:?}");
    }
}

#[test]
fn services_register_and_deregister_read_definition_files() {
    let agent = FakeAgent::start(|_, _| (200, String::new()));
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("web.json");
    std::fs::write(
        &json,
        r#"{"service": {"name": "web", "id": "web-1", "port": 80}}"#,
    )
    .expect("write");
    let hcl = dir.path().join("db.hcl");
    std::fs::write(
        &hcl,
        "service {\n  name = \"db\"\n}\nservice {\n  name = \"cache\"\n  id = \"cache-2\"\n}\n",
    )
    .expect("write");
    let files = [json.display().to_string(), hcl.display().to_string()];
    let out = agent.run(&["services", "register", &files[0], &files[1]]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "Registered service: web\nRegistered service: db\nRegistered service: cache\n"
    );
    agent.clear();
    let out = agent.run(&["services", "deregister", &files[0], &files[1]]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "Deregistered service: web-1\nDeregistered service: db\nDeregistered service: cache-2\n"
    );
    let calls: Vec<String> = agent
        .seen()
        .into_iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        calls,
        [
            "PUT /v1/agent/service/deregister/web-1",
            "PUT /v1/agent/service/deregister/db",
            "PUT /v1/agent/service/deregister/cache-2"
        ]
    );
    for (args, err) in [
        (
            &["services", "deregister"][..],
            "Service deregistration requires at least one argument or -id.\n",
        ),
        (
            &["services", "deregister", "-id", "x", "f.json"][..],
            "Service deregistration requires arguments or -id, not both.\n",
        ),
        (
            &["services", "register"][..],
            "Service registration requires at least one argument or flags.\n",
        ),
    ] {
        let out = agent.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out), err, "{args:?}");
    }
    let out = agent.run(&["services", "deregister", "/nonexistent/web.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("Error: "), "{}", stderr(&out));
}
