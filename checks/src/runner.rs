//! Runs checks on their intervals, each under its own cancellation token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use muster_model::HealthStatus;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Probe;

/// A check as the runner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    pub id: String,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes needed before reporting passing.
    pub success_before_passing: u32,
    /// Consecutive failures before reporting warning.
    pub failures_before_warning: u32,
    /// Consecutive failures before reporting critical.
    pub failures_before_critical: u32,
}

/// A check's new status and output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckUpdate {
    pub id: String,
    pub status: HealthStatus,
    pub output: String,
}

struct Running {
    cancel: CancellationToken,
    /// TTL checks: a message restarts the countdown.
    ttl_reset: Option<mpsc::UnboundedSender<()>>,
}

/// Owns every running check of an agent.
pub struct Runner {
    tx: mpsc::UnboundedSender<CheckUpdate>,
    running: Mutex<HashMap<String, Running>>,
    http: reqwest::Client,
    parent: CancellationToken,
}

/// Flap damping, as Consul's status handler.
struct Damper {
    successes: u32,
    failures: u32,
}

impl Damper {
    /// The status to report for a result, if any.
    fn feed(&mut self, spec: &CheckSpec, result: HealthStatus) -> Option<HealthStatus> {
        if result == HealthStatus::Passing {
            self.successes += 1;
            self.failures = 0;
            return (self.successes >= spec.success_before_passing)
                .then_some(HealthStatus::Passing);
        }
        self.failures += 1;
        self.successes = 0;
        if self.failures >= spec.failures_before_critical {
            Some(result)
        } else if self.failures >= spec.failures_before_warning {
            Some(HealthStatus::Warning)
        } else {
            None
        }
    }
}

impl Runner {
    pub fn new(parent: CancellationToken) -> (Runner, mpsc::UnboundedReceiver<CheckUpdate>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let http = reqwest::Client::builder().build().unwrap_or_default();
        (
            Runner {
                tx,
                running: Mutex::default(),
                http,
                parent,
            },
            rx,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts (or restarts) a check.
    pub fn start(&self, spec: CheckSpec) {
        self.stop(&spec.id);
        let id = spec.id.clone();
        let cancel = self.parent.child_token();
        let tx = self.tx.clone();
        let mut ttl_reset = None;
        match spec.probe.clone() {
            Probe::Ttl { ttl } => {
                let (reset_tx, mut reset_rx) = mpsc::unbounded_channel::<()>();
                ttl_reset = Some(reset_tx);
                let (c, id) = (cancel.clone(), spec.id.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = c.cancelled() => return,
                            r = reset_rx.recv() => if r.is_none() { return },
                            _ = tokio::time::sleep(ttl) => {
                                let output = format!("TTL expired (not updated within {ttl:?})");
                                let _ = tx.send(CheckUpdate { id: id.clone(), status: HealthStatus::Critical, output });
                                // Wait for the next update before counting again.
                                tokio::select! {
                                    _ = c.cancelled() => return,
                                    r = reset_rx.recv() => if r.is_none() { return },
                                }
                            }
                        }
                    }
                });
            }
            _ => {
                let (c, http) = (cancel.clone(), self.http.clone());
                tokio::spawn(async move {
                    // Spread first runs over the interval: no thundering herd after a restart.
                    let first =
                        rand::rng().random_range(0..spec.interval.as_millis().max(1) as u64);
                    let mut next = tokio::time::Instant::now() + Duration::from_millis(first);
                    let mut damper = Damper {
                        successes: 0,
                        failures: 0,
                    };
                    loop {
                        tokio::select! {
                            _ = c.cancelled() => return,
                            _ = tokio::time::sleep_until(next) => {}
                        }
                        next += spec.interval;
                        let (status, output) = tokio::select! {
                            _ = c.cancelled() => return,
                            // Boxed: the probe's state lives only while it runs, so each of
                            // thousands of idle check tasks stays small.
                            r = Box::pin(spec.probe.run(spec.timeout, &http)) => r,
                        };
                        if let Some(status) = damper.feed(&spec, status) {
                            let _ = tx.send(CheckUpdate {
                                id: spec.id.clone(),
                                status,
                                output,
                            });
                        }
                        let now = tokio::time::Instant::now();
                        if next < now {
                            next = now + spec.interval;
                        }
                    }
                });
            }
        }
        self.lock().insert(id, Running { cancel, ttl_reset });
    }

    /// Stops a check at once (its probe is cancelled mid-run).
    pub fn stop(&self, id: &str) {
        if let Some(r) = self.lock().remove(id) {
            r.cancel.cancel();
        }
    }

    /// Restarts a TTL check's countdown. False when `id` is not a running TTL check.
    pub fn ttl_touch(&self, id: &str) -> bool {
        self.lock()
            .get(id)
            .and_then(|r| r.ttl_reset.as_ref())
            .is_some_and(|t| t.send(()).is_ok())
    }

    /// IDs of the running checks.
    pub fn running(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_OUTPUT;

    fn spec(probe: Probe, interval_ms: u64) -> CheckSpec {
        CheckSpec {
            id: "c".into(),
            probe,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_secs(5),
            success_before_passing: 0,
            failures_before_warning: 0,
            failures_before_critical: 0,
        }
    }

    fn script(s: &str) -> Probe {
        Probe::Script {
            args: vec!["sh".into(), "-c".into(), s.into()],
        }
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<CheckUpdate>) -> CheckUpdate {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("update in time")
            .expect("open")
    }

    #[tokio::test]
    async fn script_exit_codes_map_to_statuses() {
        let http = reqwest::Client::new();
        for (code, want) in [
            (0, HealthStatus::Passing),
            (1, HealthStatus::Warning),
            (2, HealthStatus::Critical),
            (127, HealthStatus::Critical),
        ] {
            let (s, out) = script(&format!(
                "echo out-{code}; echo err-{code} >&2; exit {code}"
            ))
            .run(Duration::from_secs(5), &http)
            .await;
            assert_eq!(s, want, "exit {code}");
            assert_eq!(out, format!("out-{code}\nerr-{code}\n"));
        }
        let (s, out) = script("head -c 10000 /dev/zero | tr '\\\\0' x")
            .run(Duration::from_secs(5), &http)
            .await;
        assert_eq!(s, HealthStatus::Passing);
        assert!(
            out.len() < MAX_OUTPUT + 64 && out.ends_with("(output truncated)"),
            "{}",
            out.len()
        );
        let (s, out) = Probe::Script {
            args: vec!["/no/such/binary".into()],
        }
        .run(Duration::from_secs(5), &http)
        .await;
        assert_eq!(s, HealthStatus::Critical);
        assert!(out.starts_with("cannot run /no/such/binary"), "{out}");
    }

    #[tokio::test]
    async fn a_hanging_script_is_killed_with_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("child.pid");
        let cmd = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let t = std::time::Instant::now();
        let (s, out) = script(&cmd)
            .run(Duration::from_millis(500), &reqwest::Client::new())
            .await;
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(s, HealthStatus::Critical);
        assert!(out.starts_with("Timed out"), "{out}");
        let pid = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .to_string();
        // The grandchild is gone too (or a zombie about to be reaped by init).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .unwrap_or("");
            if stat.is_empty() || state == "Z" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {pid} outlived its check: {state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn http_and_tcp_probes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // A tiny HTTP server: /ok 200, /busy 429, anything else 500.
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let code = if req.starts_with("GET /ok") {
                        "200 OK"
                    } else if req.starts_with("GET /busy") {
                        "429 Too Many"
                    } else {
                        "500 Boom"
                    };
                    let body = "hello";
                    let _ = s.write_all(format!("HTTP/1.1 {code}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes()).await;
                });
            }
        });
        let http = reqwest::Client::new();
        let probe = |path: &str| Probe::Http {
            url: format!("http://{addr}{path}"),
            method: "GET".into(),
            headers: vec![],
        };
        let (s, out) = probe("/ok").run(Duration::from_secs(5), &http).await;
        assert_eq!(s, HealthStatus::Passing);
        assert!(out.contains("200") && out.ends_with("hello"), "{out}");
        assert_eq!(
            probe("/busy").run(Duration::from_secs(5), &http).await.0,
            HealthStatus::Warning
        );
        assert_eq!(
            probe("/fail").run(Duration::from_secs(5), &http).await.0,
            HealthStatus::Critical
        );
        assert_eq!(
            Probe::Tcp {
                addr: addr.to_string()
            }
            .run(Duration::from_secs(5), &http)
            .await
            .0,
            HealthStatus::Passing
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let (s, out) = Probe::Tcp {
            addr: closed.to_string(),
        }
        .run(Duration::from_secs(5), &http)
        .await;
        assert_eq!(s, HealthStatus::Critical, "{out}");
    }

    #[tokio::test]
    async fn flap_damping_counts_consecutive_results() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("ok");
        let (runner, mut rx) = Runner::new(CancellationToken::new());
        let mut s = spec(script(&format!("test -e {} || exit 2", flag.display())), 30);
        s.success_before_passing = 3;
        s.failures_before_warning = 2;
        s.failures_before_critical = 4;
        runner.start(s);
        // Failing: warning after 2 failures, critical after 4.
        assert_eq!(next(&mut rx).await.status, HealthStatus::Warning);
        assert_eq!(
            next(&mut rx).await.status,
            HealthStatus::Warning,
            "3rd failure"
        );
        assert_eq!(
            next(&mut rx).await.status,
            HealthStatus::Critical,
            "4th failure"
        );
        std::fs::write(&flag, b"").expect("flag");
        // Passing only after 3 consecutive successes: no update before that.
        let t = std::time::Instant::now();
        loop {
            let u = next(&mut rx).await;
            if u.status == HealthStatus::Passing {
                break;
            }
        }
        assert!(
            t.elapsed() >= Duration::from_millis(60),
            "passed too early: {:?}",
            t.elapsed()
        );
        runner.stop("c");
        assert!(runner.running().is_empty());
    }

    #[tokio::test]
    async fn ttl_checks_expire_unless_touched() {
        let (runner, mut rx) = Runner::new(CancellationToken::new());
        runner.start(spec(
            Probe::Ttl {
                ttl: Duration::from_millis(300),
            },
            0,
        ));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(runner.ttl_touch("c"));
        }
        assert!(rx.try_recv().is_err(), "touched checks do not expire");
        let u = next(&mut rx).await;
        assert_eq!(u.status, HealthStatus::Critical);
        assert!(u.output.starts_with("TTL expired"));
        assert!(!runner.ttl_touch("nope"));
    }
}
