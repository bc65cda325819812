//! `muster lock`: run a command only while holding a lock (or one of `-n` semaphore slots) in
//! the KV store, as `consul lock` does, with two fixes operators asked for: SIGTERM/SIGINT are
//! passed on to the child, and a lost lock (session invalidated, key taken, or the agent gone
//! for `-monitor-retry` attempts) terminates the child within seconds: SIGTERM to its process
//! group, SIGKILL 5 s later.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use muster_api::go_duration;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use super::client::Client;
use super::error::{Error, Result};
use super::help::Flag;
use crate::flags::Parsed;

/// Consul's flag values marking lock and semaphore keys, so either tool recognizes the other's.
const LOCK_FLAG: u64 = 0x2ddc_cbc0_58a5_0c18;
const SEMAPHORE_FLAG: u64 = 0xe0f6_9a2b_aa41_4de0;
const SESSION_TTL: &str = "15s";
const RENEW_EVERY: Duration = Duration::from_secs(5);
const KILL_GRACE: Duration = Duration::from_secs(5);

struct Lock {
    client: Client,
    prefix: String,
    session: String,
    limit: usize,
}

impl Lock {
    fn mutex_key(&self) -> String {
        format!("{}/.lock", self.prefix)
    }

    fn contender_key(&self) -> String {
        format!("{}/{}", self.prefix, self.session)
    }

    /// GET that returns (status, index, body), blocking when `index` is given.
    async fn get(&self, path: &str, index: Option<u64>) -> Result<(u16, u64, Vec<u8>)> {
        let mut extra = Vec::new();
        if let Some(i) = index {
            extra.push(("index", i.to_string()));
            extra.push(("wait", "30s".to_string()));
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        let q = qs_from(&extra);
        let url = if q.is_empty() {
            path.to_string()
        } else {
            format!("{path}{sep}{q}")
        };
        self.client.send_indexed(&url).await
    }

    /// Takes the lock (or a slot), waiting as long as `timeout` allows.
    async fn acquire(&self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let expired = || deadline.is_some_and(|d| Instant::now() >= d);
        if self.limit > 1 {
            let key = self.contender_key();
            let ok = self
                .client
                .call(
                    reqwest::Method::PUT,
                    &format!(
                        "/v1/kv/{key}?acquire={}&flags={SEMAPHORE_FLAG}",
                        self.session
                    ),
                    Some(Vec::new()),
                )
                .await?;
            if !ok.starts_with(b"true") {
                return Err(Error::Contender(self.prefix.clone()));
            }
        }
        loop {
            let (got, index) = if self.limit > 1 {
                self.try_semaphore().await?
            } else {
                self.try_mutex().await?
            };
            if got {
                return Ok(true);
            }
            if expired() {
                return Ok(false);
            }
            // Wait for the holder to change something, then try again.
            let path = if self.limit > 1 {
                format!("/v1/kv/{}/?recurse", self.prefix)
            } else {
                format!("/v1/kv/{}", self.mutex_key())
            };
            let wait = async { self.get(&path, Some(index)).await };
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout(d.saturating_duration_since(Instant::now()), wait)
                        .await;
                }
                None => {
                    let _ = wait.await;
                }
            }
        }
    }

    async fn try_mutex(&self) -> Result<(bool, u64)> {
        let key = self.mutex_key();
        let r = self
            .client
            .call(
                reqwest::Method::PUT,
                &format!("/v1/kv/{key}?acquire={}&flags={LOCK_FLAG}", self.session),
                Some(Vec::new()),
            )
            .await?;
        if r.starts_with(b"true") {
            return Ok((true, 0));
        }
        let (_, index, _) = self.get(&format!("/v1/kv/{key}"), None).await?;
        Ok((false, index))
    }

    /// Reads the semaphore: the `.lock` document and the live contenders under the prefix.
    async fn read_semaphore(&self) -> Result<(u64, u64, BTreeMap<String, bool>, Vec<String>)> {
        let (code, index, body) = self
            .get(&format!("/v1/kv/{}/?recurse", self.prefix), None)
            .await?;
        let entries: Vec<Value> = if code == 200 {
            serde_json::from_slice(&body)?
        } else {
            Vec::new()
        };
        let mut lock_index = 0;
        let mut holders = BTreeMap::new();
        let mut live = Vec::new();
        for e in &entries {
            let key = e["Key"].as_str().unwrap_or("");
            if key == self.mutex_key() {
                lock_index = e["ModifyIndex"].as_u64().unwrap_or(0);
                if let Some(h) = semaphore_doc(e)["Holders"].as_object() {
                    holders = h.keys().map(|k| (k.clone(), true)).collect();
                }
            } else if let Some(s) = e["Session"].as_str() {
                live.push(s.to_string());
            }
        }
        Ok((index, lock_index, holders, live))
    }

    async fn try_semaphore(&self) -> Result<(bool, u64)> {
        let (index, lock_index, mut holders, live) = self.read_semaphore().await?;
        // Holders whose session died no longer count.
        holders.retain(|h, _| live.contains(h));
        if holders.contains_key(&self.session) {
            return Ok((true, index));
        }
        if holders.len() >= self.limit {
            return Ok((false, index));
        }
        holders.insert(self.session.clone(), true);
        let doc = json!({"Limit": self.limit, "Holders": holders})
            .to_string()
            .into_bytes();
        let r = self
            .client
            .call(
                reqwest::Method::PUT,
                &format!(
                    "/v1/kv/{}?cas={lock_index}&flags={SEMAPHORE_FLAG}",
                    self.mutex_key()
                ),
                Some(doc),
            )
            .await?;
        // A lost CAS race: read again at once.
        Ok((r.starts_with(b"true"), 0))
    }

    /// Whether we still hold the lock; `Err` when the agent could not be asked.
    async fn still_held(&self, index: &mut u64) -> Result<bool> {
        let (code, idx, body) = self
            .get(&format!("/v1/kv/{}", self.mutex_key()), Some(*index))
            .await?;
        *index = idx;
        if code != 200 {
            return Ok(false);
        }
        let v: Value = serde_json::from_slice(&body)?;
        if self.limit > 1 {
            return Ok(semaphore_doc(&v[0])["Holders"].get(&self.session).is_some());
        }
        Ok(v[0]["Session"].as_str() == Some(self.session.as_str()))
    }

    async fn release(&self) {
        if self.limit > 1 {
            for _ in 0..5 {
                let Ok((_, lock_index, mut holders, _)) = self.read_semaphore().await else {
                    break;
                };
                if holders.remove(&self.session).is_none() {
                    break;
                }
                let doc = json!({"Limit": self.limit, "Holders": holders})
                    .to_string()
                    .into_bytes();
                let path = format!(
                    "/v1/kv/{}?cas={lock_index}&flags={SEMAPHORE_FLAG}",
                    self.mutex_key()
                );
                if self
                    .client
                    .call(reqwest::Method::PUT, &path, Some(doc))
                    .await
                    .is_ok_and(|r| r.starts_with(b"true"))
                {
                    break;
                }
            }
            let _ = self
                .client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/kv/{}", self.contender_key()),
                    None,
                )
                .await;
        } else {
            let path = format!(
                "/v1/kv/{}?release={}&flags={LOCK_FLAG}",
                self.mutex_key(),
                self.session
            );
            let _ = self
                .client
                .call(reqwest::Method::PUT, &path, Some(Vec::new()))
                .await;
        }
        let _ = self
            .client
            .call(
                reqwest::Method::PUT,
                &format!("/v1/session/destroy/{}", self.session),
                None,
            )
            .await;
    }
}

fn qs_from(extra: &[(&str, String)]) -> String {
    extra
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The semaphore's `.lock` document in a KV entry; `Null` when it is missing or unreadable.
fn semaphore_doc(entry: &Value) -> Value {
    use base64::Engine;
    let raw = entry["Value"]
        .as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default();
    serde_json::from_slice(&raw).unwrap_or(Value::Null)
}

fn signal_group(child: &Child, sig: Signal) {
    if let Some(pid) = child.id() {
        // The child leads its own process group: signal everything it started.
        let _ = killpg(Pid::from_raw(pid as i32), sig);
    }
}

/// SIGTERM to the child's group, SIGKILL after the grace period; returns its exit status.
async fn terminate(child: &mut Child) -> Option<std::process::ExitStatus> {
    signal_group(child, Signal::SIGTERM);
    match tokio::time::timeout(KILL_GRACE, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            signal_group(child, Signal::SIGKILL);
            child.wait().await.ok()
        }
    }
}

pub(crate) const LOCK_USAGE: &str = "
Usage: muster lock [options] prefix child...

  Acquires a lock or semaphore at a given path, and invokes a child process
  when successful. The child process can assume the lock is held while it
  executes. If the lock is lost or communication is disrupted the child
  process will be sent a SIGTERM signal and given time to gracefully exit.
  After the grace period expires the process will be hard terminated.

  When -n=1, only a single lock holder or leader exists providing mutual
  exclusion. Setting a higher value switches to a semaphore allowing multiple
  holders to coordinate.

  The prefix provided must have write privileges.
";

pub(crate) const LOCK_FLAGS: &[Flag] = &[
    Flag::bool(
        "child-exit-code",
        "Exit 2 if the child process exited with an error if this is true, otherwise this \
         doesn't propagate an error from the child. The default value is false.",
    ),
    Flag::value(
        "monitor-retry",
        "int",
        "Number of times to retry if the agent returns a 500 error while monitoring the \
         lock. The default value is 3, with a 1s wait between retries.",
    ),
    Flag::value(
        "n",
        "int",
        "Optional limit on the number of concurrent lock holders. The underlying \
         implementation switches from a lock to a semaphore when the value is greater than \
         1. The default value is 1.",
    ),
    Flag::value(
        "name",
        "string",
        "Optional name to associate with the lock session. It not provided, one is \
         generated based on the provided child command.",
    ),
    Flag::bool("pass-stdin", "Pass stdin to the child process."),
    Flag::bool(
        "shell",
        "Use a shell to run the command (can set a custom shell via the SHELL environment \
         variable). The default value is true.",
    ),
    Flag::value(
        "timeout",
        "duration",
        "Maximum amount of time to wait to acquire the lock, specified as a duration like \
         \"1s\" or \"3h\". The default value is 0.",
    ),
    Flag::bool("verbose", "Enable verbose (debugging) output."),
];

/// `muster lock [options] PREFIX COMMAND`: runs COMMAND while holding the lock.
pub(crate) async fn run(p: &Parsed) -> Result<i32> {
    const USAGE: &str = "usage: muster lock [options] PREFIX COMMAND";
    let [prefix, command @ ..] = p.positional.as_slice() else {
        return Err(Error::usage(USAGE));
    };
    if command.is_empty() {
        return Err(Error::usage(USAGE));
    }
    let limit: usize = p.num("n")?.unwrap_or(1);
    if limit == 0 {
        return Err(Error::usage("-n must be at least 1"));
    }
    let monitor_retry: u32 = p.num("monitor-retry")?.unwrap_or(3);
    let timeout = match p.value("timeout") {
        Some(t) => match go_duration(t) {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => {
                return Err(Error::InvalidFlag {
                    flag: "timeout",
                    value: t.to_string(),
                })
            }
        },
        None => None,
    };
    let shell = !p.has("shell") || p.bool("shell");
    let client = Client::new(p)?;
    let prefix = prefix.trim_matches('/').to_string();
    let name = p.value("name").unwrap_or("Muster lock").to_string();
    let behavior = if limit > 1 { "delete" } else { "release" };
    let body = json!({"Name": name, "TTL": SESSION_TTL, "Behavior": behavior})
        .to_string()
        .into_bytes();
    let created = client
        .call(reqwest::Method::PUT, "/v1/session/create", Some(body))
        .await
        .map_err(|e| Error::CreateSession(Box::new(e)))?;
    let session = serde_json::from_slice::<Value>(&created)?["ID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let lock = Lock {
        client,
        prefix,
        session,
        limit,
    };

    // Keep the session alive while we wait and while the child runs.
    let renew = {
        let client = Client::new(p)?;
        let id = lock.session.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let _ = client
                    .call(
                        reqwest::Method::PUT,
                        &format!("/v1/session/renew/{id}"),
                        None,
                    )
                    .await;
            }
        })
    };
    let acquired = tokio::select! {
        r = lock.acquire(timeout) => r,
        _ = crate::signal::shutdown() => Ok(false),
    };
    let acquired = match acquired {
        Ok(a) => a,
        Err(e) => {
            lock.release().await;
            renew.abort();
            return Err(e);
        }
    };
    if !acquired {
        lock.release().await;
        renew.abort();
        eprintln!("Lock acquisition failed: timed out or interrupted");
        return Ok(1);
    }
    if p.bool("verbose") {
        eprintln!("Lock acquisition successful");
    }

    let mut cmd = if shell {
        let mut c = Command::new("sh");
        c.arg("-c").arg(command.join(" "));
        c
    } else {
        let mut c = Command::new(&command[0]);
        c.args(&command[1..]);
        c
    };
    cmd.env("CONSUL_LOCK_HELD", "true")
        .env("MUSTER_LOCK_HELD", "true")
        .process_group(0);
    if !p.bool("pass-stdin") {
        cmd.stdin(Stdio::null());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            lock.release().await;
            renew.abort();
            return Err(Error::Spawn {
                command: command.join(" "),
                reason: e,
            });
        }
    };

    // Watch the lock; give up on it after `monitor_retry` failed attempts to reach the agent.
    let lost = async {
        let mut index = 0;
        let mut failures = 0;
        loop {
            match lock.still_held(&mut index).await {
                Ok(true) => failures = 0,
                Ok(false) => return "lock was released or taken",
                Err(_) => {
                    failures += 1;
                    if failures > monitor_retry {
                        return "the agent stopped answering";
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    tokio::pin!(lost);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let (status, lost_lock) = loop {
        tokio::select! {
            s = child.wait() => break (s.ok(), false),
            why = &mut lost => {
                eprintln!("Lock lost ({why}); terminating child");
                break (terminate(&mut child).await, true);
            }
            _ = term.recv() => signal_group(&child, Signal::SIGTERM),
            _ = int.recv() => signal_group(&child, Signal::SIGINT),
        }
    };
    renew.abort();
    lock.release().await;
    if lost_lock {
        return Ok(1);
    }
    let failed = status.is_none_or(|s| !s.success());
    Ok(if p.bool("child-exit-code") && failed {
        2
    } else {
        0
    })
}
