//! Running one handler: `/bin/sh -c SCRIPT` in its own process group, with the event's
//! environment and stdin, its stdout and stderr kept (the last `MAX_OUTPUT` bytes of each),
//! and the whole group killed at the timeout or when the run is dropped (agent shutdown).

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// How much of a handler's stdout and stderr is kept (Serf keeps 8 KiB).
pub(crate) const MAX_OUTPUT: usize = 8 * 1024;

/// How a handler run ended.
#[derive(Debug)]
pub(crate) enum Ending {
    Exited(ExitStatus),
    /// Killed, with its process group, at the timeout.
    TimedOut,
    /// It could not be started (or waited for).
    Error(std::io::Error),
}

#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) ending: Ending,
    /// The last `MAX_OUTPUT` bytes of stdout.
    pub(crate) stdout: Vec<u8>,
    /// The last `MAX_OUTPUT` bytes of stderr.
    pub(crate) stderr: Vec<u8>,
}

/// Kills the process group on drop, unless the run finished.
struct Group {
    pgid: Option<Pid>,
}

impl Group {
    fn kill(&mut self) {
        if let Some(g) = self.pgid.take() {
            let _ = killpg(g, Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `script` with `env` added to the agent's environment and `input` on stdin.
pub(crate) async fn run(
    script: &str,
    env: &[(String, String)],
    input: Vec<u8>,
    timeout: Duration,
) -> Outcome {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let ending = run_into(script, env, input, timeout, &mut stdout, &mut stderr).await;
    Outcome {
        ending,
        stdout,
        stderr,
    }
}

async fn run_into(
    script: &str,
    env: &[(String, String)],
    input: Vec<u8>,
    timeout: Duration,
    stdout: &mut Vec<u8>,
    stderr: &mut Vec<u8>,
) -> Ending {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ending::Error(e),
    };
    let mut group = Group {
        pgid: child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw),
    };
    let (stdin, out, err) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let feed = async move {
        if let Some(mut s) = stdin {
            // A handler that exits without reading its stdin closes the pipe: not an error.
            let _ = s.write_all(&input).await;
        }
    };
    let finished = tokio::time::timeout(timeout, async {
        let ((), (), (), status) =
            tokio::join!(feed, tail(out, stdout), tail(err, stderr), child.wait());
        status
    })
    .await;
    match finished {
        Ok(Ok(status)) => {
            // Whatever the handler left running in the background may stay.
            group.pgid = None;
            Ending::Exited(status)
        }
        Ok(Err(e)) => Ending::Error(e),
        Err(_) => {
            group.kill();
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            Ending::TimedOut
        }
    }
}

/// Reads `r` to its end, keeping its last `MAX_OUTPUT` bytes in `into`.
async fn tail(r: Option<impl AsyncRead + Unpin>, into: &mut Vec<u8>) {
    let Some(mut r) = r else { return };
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                if into.len() > 2 * MAX_OUTPUT {
                    into.drain(..into.len() - MAX_OUTPUT);
                }
            }
        }
    }
    if into.len() > MAX_OUTPUT {
        into.drain(..into.len() - MAX_OUTPUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn env_stdin_and_output() {
        let env = vec![("SERF_EVENT".to_string(), "member-join".to_string())];
        let o = run(
            "read line; echo \"$SERF_EVENT $line\"; echo oops >&2; exit 3",
            &env,
            b"node1\t127.0.0.1\n".to_vec(),
            Duration::from_secs(10),
        )
        .await;
        let Ending::Exited(s) = o.ending else {
            panic!("{o:?}")
        };
        assert_eq!(s.code(), Some(3));
        assert_eq!(o.stdout, b"member-join node1\t127.0.0.1\n");
        assert_eq!(o.stderr, b"oops\n");
    }

    #[tokio::test]
    async fn output_is_bounded_to_its_tail() {
        let o = run(
            "head -c 100000 /dev/zero; echo end",
            &[],
            Vec::new(),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(o.stdout.len(), MAX_OUTPUT);
        assert!(o.stdout.ends_with(b"\0end\n"));
    }

    #[tokio::test]
    async fn a_hanging_handler_and_its_children_are_killed() {
        let start = std::time::Instant::now();
        // The background child keeps stdout open: killing only the shell would not end it.
        let o = run(
            "sleep 30 & sleep 30",
            &[],
            Vec::new(),
            Duration::from_millis(300),
        )
        .await;
        assert!(matches!(o.ending, Ending::TimedOut), "{o:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
