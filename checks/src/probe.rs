//! One run of one check.

use std::process::Stdio;
use std::time::Duration;

use muster_model::HealthStatus;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

/// Check output kept, as Consul (4 KB).
pub const MAX_OUTPUT: usize = 4096;

/// What a check does each interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Runs `args`: exit 0 passing, 1 warning, anything else critical.
    Script { args: Vec<String> },
    /// 2xx passing, 429 warning, anything else critical.
    Http {
        url: String,
        method: String,
        headers: Vec<(String, String)>,
    },
    /// Passing when a TCP connection to `addr` succeeds.
    Tcp { addr: String },
    /// Passive: the service reports through the agent; critical when not updated within `ttl`.
    Ttl { ttl: Duration },
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_OUTPUT {
        let mut end = MAX_OUTPUT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("\n... (output truncated)");
    }
    s
}

impl Probe {
    /// Runs the probe once within `timeout`.
    pub async fn run(&self, timeout: Duration, http: &reqwest::Client) -> (HealthStatus, String) {
        match self {
            Probe::Script { args } => run_script(args, timeout).await,
            Probe::Http {
                url,
                method,
                headers,
            } => {
                let method =
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
                let mut req = http.request(method.clone(), url).timeout(timeout);
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                match req.send().await {
                    Ok(r) => {
                        let code = r.status().as_u16();
                        let body = r.text().await.unwrap_or_default();
                        let status = match code {
                            200..=299 => HealthStatus::Passing,
                            429 => HealthStatus::Warning,
                            _ => HealthStatus::Critical,
                        };
                        (
                            status,
                            cap(format!("HTTP {method} {url}: {code} Output: {body}")),
                        )
                    }
                    Err(e) => (
                        HealthStatus::Critical,
                        cap(format!("HTTP {method} {url}: {e}")),
                    ),
                }
            }
            Probe::Tcp { addr } => {
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                    Ok(Ok(_)) => (
                        HealthStatus::Passing,
                        format!("TCP connect {addr}: Success"),
                    ),
                    Ok(Err(e)) => (HealthStatus::Critical, format!("dial tcp {addr}: {e}")),
                    Err(_) => (
                        HealthStatus::Critical,
                        format!("dial tcp {addr}: i/o timeout"),
                    ),
                }
            }
            Probe::Ttl { .. } => (HealthStatus::Critical, "TTL expired".into()),
        }
    }
}

async fn run_script(args: &[String], timeout: Duration) -> (HealthStatus, String) {
    let Some((prog, rest)) = args.split_first() else {
        return (HealthStatus::Critical, "empty args".into());
    };
    // stdout and stderr share one pipe, so the output interleaves as on a terminal.
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return (HealthStatus::Critical, format!("cannot create pipe: {e}")),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return (HealthStatus::Critical, format!("cannot create pipe: {e}")),
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (HealthStatus::Critical, format!("cannot run {prog}: {e}")),
    };
    drop(cmd);
    let pgid = child.id().map(|p| Pid::from_raw(p as i32));
    let mut out = Vec::new();
    let read = async {
        let mut r =
            tokio::fs::File::from_std(std::fs::File::from(std::os::fd::OwnedFd::from(reader)));
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // Keep reading past the cap so the script never blocks on a full pipe.
                    if out.len() < MAX_OUTPUT + 1 {
                        out.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
    };
    let waited = tokio::time::timeout(timeout, async {
        read.await;
        child.wait().await
    })
    .await;
    let output = cap(String::from_utf8_lossy(&out).into_owned());
    match waited {
        Ok(Ok(status)) => {
            let s = match status.code() {
                Some(0) => HealthStatus::Passing,
                Some(1) => HealthStatus::Warning,
                _ => HealthStatus::Critical,
            };
            (s, output)
        }
        Ok(Err(e)) => (
            HealthStatus::Critical,
            format!("cannot wait for {prog}: {e}"),
        ),
        Err(_) => {
            // Kill the whole group: a script's children must not outlive it.
            if let Some(g) = pgid {
                let _ = killpg(g, Signal::SIGKILL);
            }
            let _ = child.wait().await;
            (
                HealthStatus::Critical,
                format!("Timed out ({timeout:?}) running check"),
            )
        }
    }
}
