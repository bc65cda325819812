//! Exec mode (`-exec COMMAND`): one child process supervised by the renderer, as
//! consul-template's `exec` block runs it. The child starts once every template has
//! rendered, gets the reload signal (SIGHUP unless told otherwise) whenever a file changes,
//! and its exit status becomes the renderer's. A signal to the renderer is passed on as the
//! kill signal; a child still running after the kill timeout is killed.

use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::runner::Event;

/// The child and its signals.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    pub command: String,
    pub reload_signal: Signal,
    pub kill_signal: Signal,
    pub kill_timeout: Duration,
}

/// A signal name as consul-template takes it: `SIGHUP` or `HUP`.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let name = s.trim().to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse().map_err(|_| format!("unknown signal {s:?}"))
}

/// Signals the child's whole process group (a shell and what it started).
fn send(pid: Pid, sig: Signal) {
    if let Err(e) = killpg(pid, sig) {
        tracing::warn!("exec: cannot send {sig} to the child: {e}");
    }
}

/// The exit code a finished child passes on: its own, or 128 + the signal that ended it.
fn code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s
            .code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(1),
        Err(_) => 1,
    }
}

/// Starts the child; its pid, and its exit status when it ends.
fn start(command: &str) -> std::io::Result<(Pid, Exit)> {
    // A plain command line runs as its own process, so it gets the signals itself; one
    // with shell syntax runs under `sh -c`, and the signals go to its process group.
    let plain = !command.contains(|c: char| ";&|<>()$`\\\"'*?[]{}~#\n".contains(c));
    let mut c = if plain {
        let mut words = command.split_whitespace();
        let mut c = tokio::process::Command::new(words.next().unwrap_or("true"));
        c.args(words);
        c
    } else {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(command);
        c
    };
    let mut child = c.process_group(0).spawn()?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("the child has no pid"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(child.wait().await);
    });
    Ok((pid, rx))
}

type Exit = tokio::sync::oneshot::Receiver<std::io::Result<std::process::ExitStatus>>;

/// Waits for the child's exit, or forever when there is none yet.
async fn exited(exit: &mut Option<Exit>) -> i32 {
    match exit {
        Some(rx) => code(
            rx.await
                .unwrap_or_else(|_| Err(std::io::Error::other("lost"))),
        ),
        None => std::future::pending().await,
    }
}

/// Supervises the child until it exits (its code) or `shutdown` fires (the child is
/// stopped, its code returned). `stop` ends the renderer when the child is gone.
pub async fn supervise(
    cfg: ExecConfig,
    mut events: UnboundedReceiver<Event>,
    shutdown: CancellationToken,
    stop: CancellationToken,
) -> i32 {
    let mut pid: Option<Pid> = None;
    let mut exit: Option<Exit> = None;
    let result = loop {
        tokio::select! {
            ev = events.recv() => match (ev, pid) {
                (Some(Event::Ready), None) => match start(&cfg.command) {
                    Ok((p, rx)) => {
                        tracing::info!("exec: started {:?} (pid {p})", cfg.command);
                        pid = Some(p);
                        exit = Some(rx);
                    }
                    Err(e) => {
                        tracing::error!("exec: cannot start {:?}: {e}", cfg.command);
                        break 1;
                    }
                },
                (Some(Event::Changed), Some(p)) => {
                    tracing::info!("exec: sending {} to the child", cfg.reload_signal);
                    send(p, cfg.reload_signal);
                }
                (Some(_), _) => {}
                (None, _) => break 0,
            },
            code = exited(&mut exit) => {
                tracing::info!("exec: the child exited with {code}");
                break code;
            }
            _ = shutdown.cancelled() => {
                let (Some(p), Some(rx)) = (pid, exit.take()) else { break 0 };
                send(p, cfg.kill_signal);
                break match tokio::time::timeout(cfg.kill_timeout, rx).await {
                    Ok(status) => code(status.unwrap_or_else(|_| Err(std::io::Error::other("lost")))),
                    Err(_) => {
                        tracing::warn!("exec: the child outlived the kill timeout; killing it");
                        send(p, Signal::SIGKILL);
                        128 + Signal::SIGKILL as i32
                    }
                };
            }
        }
    };
    stop.cancel();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("SIGHUP"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("usr1"), Ok(Signal::SIGUSR1));
        assert!(parse_signal("NOPE").is_err());
    }
}
