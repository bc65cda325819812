//! Test harness for Muster's integration tests: starts real `muster` processes on 127.0.0.1
//! with ephemeral ports and temp data dirs, reads their ports from the startup banner, and
//! kills what it started (by PID) on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

pub mod bench;
pub mod linearizability;

/// The `muster` binary: `MUSTER_BIN`, else next to the test executable's `deps/` folder.
pub fn muster_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MUSTER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("muster")
}

/// A running agent process.
pub struct Agent {
    child: Option<Child>,
    pub name: String,
    pub http: SocketAddr,
    /// The HTTPS listener, when `ports.https` is set.
    pub https: Option<SocketAddr>,
    pub dns: Option<SocketAddr>,
    pub serf: SocketAddr,
    pub rpc: Option<String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    /// The group the process runs as (kept across restarts), so firewall rules can match
    /// its packets by owner whatever source address they leave from.
    gid: Option<u32>,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let i = line.find(key)? + key.len();
    let rest = &line[i..];
    let end = rest.find([',', ')']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

impl Agent {
    /// Starts `muster agent -node NAME -data-dir DIR ARGS...` with every port ephemeral.
    pub fn start(name: &str, data_dir: &Path, args: &[&str]) -> anyhow::Result<Agent> {
        Self::spawn(name, data_dir, Self::agent_args(name, data_dir, args), None)
    }

    /// [`Agent::start`], with the process (and its restarts) running as group `gid`, which
    /// needs root. iptables' `-m owner --gid-owner` then matches every packet it sends,
    /// whatever source address it leaves from.
    pub fn start_in_group(
        name: &str,
        data_dir: &Path,
        args: &[&str],
        gid: u32,
    ) -> anyhow::Result<Agent> {
        Self::spawn(
            name,
            data_dir,
            Self::agent_args(name, data_dir, args),
            Some(gid),
        )
    }

    /// The arguments [`Agent::start`] runs `muster` with: ephemeral ports on 127.0.0.1, debug
    /// logs, then `args`. For tests that run the agent themselves (to see it exit).
    pub fn agent_args(name: &str, data_dir: &Path, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = [
            "agent",
            "-node",
            name,
            "-data-dir",
            &data_dir.display().to_string(),
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
            "-http-port",
            "0",
            "-dns-port",
            "0",
            "-server-port",
            "0",
            "-serf-lan-port",
            "0",
            "-log-level",
            "debug",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(args.iter().map(|s| s.to_string()));
        all
    }

    fn spawn(
        name: &str,
        data_dir: &Path,
        args: Vec<String>,
        gid: Option<u32>,
    ) -> anyhow::Result<Agent> {
        std::fs::create_dir_all(data_dir)?;
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = Command::new(muster_bin());
        if let Some(gid) = gid {
            std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        }
        let mut child = cmd
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("spawn {}", muster_bin().display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut banner = Vec::new();
            for l in lines.by_ref() {
                let Ok(l) = l else { break };
                let done = l.starts_with("==> Log data");
                banner.push(l);
                if done {
                    break;
                }
            }
            let _ = tx.send(banner);
            // Keep draining so the agent never blocks on a full pipe.
            for _ in lines {}
        });
        let mut agent = Agent {
            child: Some(child),
            name: name.to_string(),
            http: "0.0.0.0:0".parse()?,
            https: None,
            dns: None,
            serf: "0.0.0.0:0".parse()?,
            rpc: None,
            data_dir: data_dir.to_path_buf(),
            log: log.clone(),
            args,
            gid,
        };
        let banner = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let client = banner.iter().find(|l| l.contains("Client Addr:"));
        let cluster = banner.iter().find(|l| l.contains("Cluster Addr:"));
        let (Some(client), Some(cluster)) = (client, cluster) else {
            let logs = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("agent {name} did not start; banner {banner:?}; log:\n{logs}");
        };
        // "Client Addr: [127.0.0.1] (HTTP: 8500, DNS: 8600)", "Cluster Addr: 127.0.0.1 (LAN: ..."
        let host = client
            .split(['[', ']'])
            .nth(1)
            .unwrap_or("127.0.0.1")
            .to_string();
        let chost = cluster
            .split("Addr: ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or("127.0.0.1");
        agent.http = format!("{host}:{}", field(client, "HTTP: ").unwrap_or("0")).parse()?;
        agent.https = field(client, "HTTPS: ").and_then(|p| format!("{host}:{p}").parse().ok());
        agent.dns = field(client, "DNS: ").and_then(|p| format!("{host}:{p}").parse().ok());
        agent.serf = format!("{chost}:{}", field(cluster, "LAN: ").unwrap_or("0")).parse()?;
        agent.rpc = field(cluster, "Server RPC: ")
            .filter(|s| *s != "-")
            .map(str::to_string);
        Ok(agent)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM to the agent's PID and waits up to `timeout` for it to exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("not running")
        };
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!("agent did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let Some(c) = self.child.as_mut() else {
            bail!("not running")
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = c.try_wait()? {
                self.child = None;
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("agent did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same agent again (same name, flags and data dir); ports are new.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        let fresh = Self::spawn(
            &self.name,
            &self.data_dir.clone(),
            self.args.clone(),
            self.gid,
        )?;
        *self = fresh;
        Ok(())
    }

    /// Stops the agent with SIGTERM (its graceful leave), waiting up to `timeout`, then starts
    /// it again with the same name, flags and data dir, as an operator's rolling restart does.
    pub fn restart_graceful(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.terminate(timeout)?;
        let fresh = Self::spawn(
            &self.name,
            &self.data_dir.clone(),
            self.args.clone(),
            self.gid,
        )?;
        *self = fresh;
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// The agent's log so far (for failure messages).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a CLI command against this agent.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(muster_bin())
            .args(args)
            .env("MUSTER_HTTP_ADDR", self.http.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run muster cli")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A response reduced to what tests look at.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

pub async fn req(
    method: reqwest::Method,
    url: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<Resp> {
    let mut r = http().request(method, url);
    if let Some(b) = body {
        r = r.body(b);
    }
    let resp = r.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await?.to_vec();
    Ok(Resp {
        status,
        headers,
        body,
    })
}

pub async fn get(url: &str) -> anyhow::Result<Resp> {
    req(reqwest::Method::GET, url, None).await
}

pub async fn put(url: &str, body: &[u8]) -> anyhow::Result<Resp> {
    req(reqwest::Method::PUT, url, Some(body.to_vec())).await
}

/// A request with `token` in `X-Consul-Token` (none: no header) and a JSON body.
pub async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut r = http().request(method, url);
    if let Some(t) = token {
        r = r.header("X-Consul-Token", t);
    }
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let resp = r.send().await.expect("request");
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

/// Polls `f` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server's applied Raft index, from `/v1/agent/self`.
pub async fn raft_applied_index(a: &Agent) -> anyhow::Result<u64> {
    let me = get(&a.url("/v1/agent/self")).await?.json();
    let idx = me["Stats"]["raft"]["applied_index"]
        .as_str()
        .and_then(|s| s.parse().ok());
    idx.ok_or_else(|| anyhow!("no applied_index in {me}"))
}

/// A server's applied index once it has not moved for 2 s (a new cluster's first
/// anti-entropy and reconciliation writes done), for tests asserting that something does
/// not go through Raft.
pub async fn settled_raft_index(a: &Agent) -> anyhow::Result<u64> {
    let mut before = raft_applied_index(a).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = raft_applied_index(a).await?;
        if now == before {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("the Raft index kept moving for 30 s (last {now})");
        }
        before = now;
    }
}

/// The leader address an agent reports, if any.
pub async fn leader_of(a: &Agent) -> Option<String> {
    let r = get(&a.url("/v1/status/leader")).await.ok()?;
    let l = r.json().as_str()?.to_string();
    (!l.is_empty()).then_some(l)
}

/// Starts a single server (`-server -bootstrap-expect 1` plus `extra`) in `root/name` and
/// waits until it leads.
pub async fn single_server(root: &Path, name: &str, extra: &[&str]) -> anyhow::Result<Agent> {
    let mut args = vec!["-server", "-bootstrap-expect", "1"];
    args.extend_from_slice(extra);
    let a = Agent::start(name, &root.join(name), &args)?;
    wait_until("leader", Duration::from_secs(10), || leader_of(&a)).await?;
    Ok(a)
}

/// Starts `n` servers with `-bootstrap-expect n`, joined through the first one's gossip port,
/// and waits until all agree on a leader.
pub async fn start_servers(root: &Path, n: usize, extra: &[&str]) -> anyhow::Result<Vec<Agent>> {
    let expect = n.to_string();
    let mut agents: Vec<Agent> = Vec::new();
    for i in 0..n {
        let name = format!("s{}", i + 1);
        let mut args: Vec<String> =
            vec!["-server".into(), "-bootstrap-expect".into(), expect.clone()];
        if let Some(first) = agents.first() {
            args.push("-retry-join".into());
            args.push(first.serf.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        agents.push(Agent::start(&name, &root.join(&name), &refs)?);
    }
    wait_for_agreed_leader(&agents, Duration::from_secs(30)).await?;
    Ok(agents)
}

/// Waits until every given agent reports the same leader; returns its index among them when
/// it is one of them.
pub async fn wait_for_agreed_leader(
    agents: &[Agent],
    timeout: Duration,
) -> anyhow::Result<Option<usize>> {
    let leader = wait_until("a leader all servers agree on", timeout, || async {
        let mut seen = None;
        for a in agents {
            let l = leader_of(a).await?;
            if seen.get_or_insert_with(|| l.clone()) != &l {
                return None;
            }
        }
        seen
    })
    .await?;
    Ok(agents
        .iter()
        .position(|a| a.rpc.as_deref() == Some(leader.as_str())))
}

/// A loopback port free for TCP and UDP both (dnsmasq binds the two), at the moment of asking.
pub fn free_port() -> std::io::Result<u16> {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

/// A tiny upstream DNS server on 127.0.0.1 answering every query with an A record of
/// 192.0.2.7, for recursion tests. Its thread lives as long as the test process.
pub fn tiny_upstream() -> SocketAddr {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::{rdata::A, RData, Record};
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = s.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_recursion_available(true);
            for query in q.queries() {
                r.add_query(query.clone());
                let a = A("192.0.2.7".parse().expect("ip"));
                r.add_answer(Record::from_rdata(query.name().clone(), 60, RData::A(a)));
            }
            if let Ok(b) = r.to_vec() {
                let _ = s.send_to(&b, from);
            }
        }
    });
    addr
}

/// `/v1/operator/raft/configuration` as `a` answers it (a 200, or an error).
pub async fn raft_configuration(a: &Agent) -> anyhow::Result<serde_json::Value> {
    let r = get(&a.url("/v1/operator/raft/configuration")).await?;
    anyhow::ensure!(r.status == 200, "configuration: {} {}", r.status, r.text());
    Ok(r.json())
}

/// A Raft configuration's entry for the server at `rpc`.
pub fn raft_entry<'a>(config: &'a serde_json::Value, rpc: &str) -> Option<&'a serde_json::Value> {
    config["Servers"]
        .as_array()?
        .iter()
        .find(|s| s["Address"] == rpc)
}
