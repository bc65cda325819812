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
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("Muster v{}", env!("CARGO_PKG_VERSION"))
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
    let out = muster()
        .args(["members", "--no-such"])
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error: flag provided but not defined: -no-such"
    );
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
    assert!(
        err.starts_with(&format!(
            "Error: cannot reach the agent at http://127.0.0.1:{port}"
        )),
        "{err}"
    );
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
