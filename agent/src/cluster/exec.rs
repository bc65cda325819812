//! Remote exec on the gossip layer, never through Raft or KV: the asking agent names the job
//! in a gossip packet ([`KIND_EXEC`]); a member matching its filters (Consul's event filters:
//! node, service, tag) connects back on a direct stream ([`super::direct`]), receives the
//! job, acknowledges, and streams its output and exit code as they come.
//!
//! A member runs nothing unless its agent sets `disable_remote_exec = false`; otherwise it
//! says so on the stream. Output is cut at [`OUTPUT_LIMIT`] per member, with a note; the
//! command still runs to its end and its exit code is still reported.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_api::serf::{ExecEvent, ExecRequest, NodeCheck};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::direct::{Conn, Heard, Msg, Session, Sessions};
use super::keyring::SharedCrypto;
use super::recent::Recent;
use super::user_events::{check_filters, UserEvents};

/// Kind byte of an exec request on the gossip socket.
pub(crate) const KIND_EXEC: u8 = 0x42;
/// Output a member sends per run; the rest is dropped, with a note.
pub(crate) const OUTPUT_LIMIT: usize = 1024 * 1024;
/// Output is sent when this much has gathered, or after [`FLUSH_EVERY`].
const CHUNK: usize = 4096;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// A running command says it is alive this often when it prints nothing.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Exec IDs remembered to drop a repeat.
const SEEN: usize = 1024;

/// An exec request as it travels: who is targeted and where to connect for the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Packet {
    id: String,
    secret: String,
    reply: SocketAddr,
    node: String,
    service: String,
    tag: String,
}

/// The job, sent on the direct stream (so a script may be any size).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Job {
    command: String,
    args: Vec<String>,
    script: String,
}

struct Inner {
    node: String,
    reply: SocketAddr,
    seen: Mutex<Recent<String>>,
    sessions: Sessions,
    crypto: SharedCrypto,
    enabled: AtomicBool,
    /// Its filters are the user events' (this agent's name and services).
    events: UserEvents,
}

/// One agent's remote exec, asked and run. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RemoteExec(Arc<Inner>);

/// An exec started: the packet to broadcast and the session answers arrive on.
pub(crate) struct Started {
    pub(crate) packet: Vec<u8>,
    pub(crate) session: Session,
    pub(crate) wait: Duration,
}

impl RemoteExec {
    pub(crate) fn new(
        node: &str,
        reply: SocketAddr,
        sessions: Sessions,
        crypto: SharedCrypto,
        events: UserEvents,
    ) -> RemoteExec {
        RemoteExec(Arc::new(Inner {
            node: node.to_string(),
            reply,
            seen: Mutex::new(Recent::new(SEEN)),
            sessions,
            crypto,
            enabled: AtomicBool::new(false),
            events,
        }))
    }

    /// Whether this agent runs what others ask (`disable_remote_exec = false`).
    pub(crate) fn set_enabled(&self, on: bool) {
        self.0.enabled.store(on, Ordering::Relaxed);
    }

    /// Checks a request (Consul's `rExecConf.validate`) and opens its session.
    pub(crate) fn start(&self, req: ExecRequest, may_run: NodeCheck) -> Result<Started, String> {
        check_filters(&req.node, &req.service, &req.tag)?;
        if req.command.is_empty() && req.args.is_empty() && req.script.is_empty() {
            return Err("Must specify a command to execute".into());
        }
        let wait = match req.wait.as_str() {
            "" => muster_api::serf::EXEC_DEFAULT_WAIT,
            w => muster_api::go_duration(w)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("Invalid wait {w:?}"))?,
        };
        let job = Job {
            command: req.command,
            args: req.args,
            script: req.script,
        };
        let spec = serde_json::to_vec(&job).map_err(|e| e.to_string())?;
        let session = self.0.sessions.open(Some((spec, may_run)));
        let packet = Packet {
            id: session.id.clone(),
            secret: session.secret.clone(),
            reply: self.0.reply,
            node: req.node,
            service: req.service,
            tag: req.tag,
        };
        let mut pkt = vec![KIND_EXEC];
        serde_json::to_writer(&mut pkt, &packet).map_err(|e| e.to_string())?;
        Ok(Started {
            packet: pkt,
            session,
            wait,
        })
    }

    /// A member's packet: whether it was new here (`None`: undecodable). A matching request
    /// runs on a task of its own.
    pub(crate) fn on_packet(&self, body: &[u8]) -> Option<bool> {
        let p: Packet = serde_json::from_slice(body).ok()?;
        if !muster_server::sync::lock(&self.0.seen).insert(p.id.clone()) {
            return Some(false);
        }
        if self.0.events.matches(&p.node, &p.service, &p.tag) {
            tokio::spawn(self.clone().run(p));
        }
        Some(true)
    }

    async fn run(self, p: Packet) {
        let hello = Msg::Hello {
            id: p.id.clone(),
            secret: p.secret.clone(),
            node: self.0.node.clone(),
        };
        let mut conn = match Conn::connect(p.reply, self.0.crypto.clone(), hello).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, reply = %p.reply, "cannot reach the agent asking for remote exec");
                return;
            }
        };
        // The job is read even to refuse it: closing with it unread would reset the
        // connection, and the refusal could be lost with it.
        let job = match tokio::time::timeout(Duration::from_secs(5), conn.recv()).await {
            Ok(Some(Msg::Job { spec })) => serde_json::from_slice::<Job>(&spec),
            _ => return,
        };
        if !self.0.enabled.load(Ordering::Relaxed) {
            tracing::info!(reply = %p.reply, "refused a remote exec: disable_remote_exec is set");
            let reason = "remote exec is disabled on this agent (disable_remote_exec = true)";
            let _ = conn
                .send(&Msg::Refused {
                    reason: reason.into(),
                })
                .await;
            return;
        }
        let Ok(job) = job else {
            let _ = conn
                .send(&Msg::Error {
                    reason: "unreadable job".into(),
                })
                .await;
            return;
        };
        tracing::info!(command = %job.command, args = ?job.args, "remote exec");
        if conn.send(&Msg::Ack).await.is_err() {
            return;
        }
        let code = match spawn(&job) {
            Ok((child, out)) => stream(child, out, &mut conn).await,
            Err(e) => {
                let _ = conn
                    .send(&Msg::Output {
                        data: format!("failed to start: {e}\n").into_bytes(),
                    })
                    .await;
                127
            }
        };
        let _ = conn.send(&Msg::Exit { code }).await;
    }
}

/// Starts the job, its stdout and stderr on one pipe (as Consul's agent does); the child
/// and that pipe's read end.
fn spawn(job: &Job) -> std::io::Result<(tokio::process::Child, tokio::process::ChildStdout)> {
    let (reader, writer) = std::io::pipe()?;
    let mut cmd = if let Some((prog, args)) = job.args.split_first() {
        let mut c = tokio::process::Command::new(prog);
        c.args(args);
        c
    } else {
        let mut c = tokio::process::Command::new("/bin/sh");
        // A script goes to the shell's stdin, a command to `-c`.
        if job.script.is_empty() {
            c.arg("-c").arg(&job.command);
        }
        c
    };
    let stdin = if job.script.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    };
    cmd.stdin(stdin)
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
    // `cmd` holds the pipe's write ends until it is dropped at the end of this function, so
    // the reader sees the end of output when the child (and its children) close theirs.
    let mut child = cmd.spawn()?;
    let reader = std::process::ChildStdout::from(std::os::fd::OwnedFd::from(reader));
    let reader = tokio::process::ChildStdout::from_std(reader)?;
    if let Some(mut stdin) = child.stdin.take() {
        let script = job.script.clone().into_bytes();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&script).await;
        });
    }
    Ok((child, reader))
}

/// Streams the child's output (up to [`OUTPUT_LIMIT`]) with heartbeats while it is quiet;
/// its exit code (128 + the signal when a signal ended it). Once the asker is gone the
/// command still runs to its end, unread output discarded. Output is read for at most
/// [`DRAIN_AFTER_EXIT`] after the command exits: a process it left in the background may
/// hold the pipe open for ever.
async fn stream(
    mut child: tokio::process::Child,
    mut out: tokio::process::ChildStdout,
    conn: &mut Conn,
) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    let mut sink = Sink {
        conn,
        buf: Vec::new(),
        sent: 0,
        cut: false,
        noted: false,
        connected: true,
        quiet: tokio::time::Instant::now(),
    };
    let mut chunk = [0u8; 4096];
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut status = None;
    let mut drain_until = None;
    loop {
        tokio::select! {
            r = out.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.take(&chunk[..n]).await,
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = flush.tick() => {
                if drain_until.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
                sink.tick().await;
            }
        }
    }
    sink.flush().await;
    let status = match status {
        Some(s) => s,
        None => child.wait().await,
    };
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => -1,
    }
}

/// Read after the command exits, at most.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Output on its way to the asker: gathered into chunks, cut at the limit (said once).
struct Sink<'a> {
    conn: &'a mut Conn,
    buf: Vec<u8>,
    sent: usize,
    cut: bool,
    noted: bool,
    /// False once a send failed: the asker is gone.
    connected: bool,
    /// When something was last sent.
    quiet: tokio::time::Instant,
}

impl Sink<'_> {
    async fn take(&mut self, data: &[u8]) {
        if !self.connected || self.cut {
            return;
        }
        let room = OUTPUT_LIMIT - self.sent - self.buf.len();
        if data.len() > room {
            self.buf.extend_from_slice(&data[..room]);
            self.cut = true;
        } else {
            self.buf.extend_from_slice(data);
        }
        if self.buf.len() >= CHUNK || self.cut {
            self.flush().await;
        }
    }

    /// Sends what is gathered, then the note if output was cut.
    async fn flush(&mut self) {
        if !self.connected {
            return;
        }
        if !self.buf.is_empty() {
            let data = std::mem::take(&mut self.buf);
            self.sent += data.len();
            self.send(Msg::Output { data }).await;
        }
        if self.cut && !self.noted {
            self.noted = true;
            self.send(Msg::Truncated {
                limit: OUTPUT_LIMIT,
            })
            .await;
        }
    }

    /// On each flush tick: the gathered output, or a heartbeat after a quiet second.
    async fn tick(&mut self) {
        if !self.buf.is_empty() {
            self.flush().await;
        } else if self.connected && self.quiet.elapsed() >= HEARTBEAT {
            self.send(Msg::Heartbeat).await;
        }
    }

    async fn send(&mut self, m: Msg) {
        self.connected &= self.conn.send(&m).await.is_ok();
        self.quiet = tokio::time::Instant::now();
    }
}

/// Relays an exec's answers onto `out` until nothing has been heard for the quiet period
/// (twice that while a member that acknowledged has not finished, as Consul's CLI waits),
/// then reports the members that acknowledged and never finished, and the summary.
pub(crate) async fn gather(started: Started, out: mpsc::Sender<ExecEvent>) {
    let Started {
        mut session, wait, ..
    } = started;
    // `finished`: exited or lost; nobody there is waited for any more.
    let (mut acked, mut finished, mut exits) = (BTreeSet::new(), BTreeSet::new(), 0);
    loop {
        let idle = if acked.len() > finished.len() {
            wait * 2
        } else {
            wait
        };
        let heard = tokio::select! {
            _ = tokio::time::sleep(idle) => break,
            _ = out.closed() => return,
            h = session.rx.recv() => h,
        };
        let Some((node, heard)) = heard else { break };
        let ev = match heard {
            Heard::Msg(Msg::Ack) if acked.insert(node.clone()) => ExecEvent::Ack { node },
            Heard::Msg(Msg::Output { data }) => ExecEvent::Output {
                node,
                output: String::from_utf8_lossy(&data).into_owned(),
            },
            Heard::Msg(Msg::Truncated { limit }) => ExecEvent::Truncated { node, limit },
            Heard::Msg(Msg::Exit { code }) if finished.insert(node.clone()) => {
                exits += 1;
                ExecEvent::Exit { node, code }
            }
            Heard::Msg(Msg::Refused { reason }) => ExecEvent::Refused { node, reason },
            Heard::Msg(Msg::Error { reason }) => ExecEvent::Refused { node, reason },
            Heard::Closed if acked.contains(&node) && finished.insert(node.clone()) => {
                ExecEvent::Lost {
                    node,
                    reason: "its stream closed before it reported an exit code".into(),
                }
            }
            _ => continue,
        };
        if out.send(ev).await.is_err() {
            return;
        }
    }
    for node in acked.difference(&finished) {
        let reason = format!("nothing heard from it for {idle:?}", idle = wait * 2);
        let lost = ExecEvent::Lost {
            node: node.clone(),
            reason,
        };
        if out.send(lost).await.is_err() {
            return;
        }
    }
    let _ = out
        .send(ExecEvent::Done {
            acks: acked.len(),
            exits,
        })
        .await;
}
