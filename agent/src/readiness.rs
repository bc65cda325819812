//! What the agent tells its supervisor: the PID file (`-pid-file`, written at start and
//! removed at exit) and systemd's readiness notification (`READY=1` on `$NOTIFY_SOCKET`, sent
//! once the agent serves, for units with `Type=notify`). The notification is one datagram on a
//! Unix socket, written here rather than through libsystemd.

use std::path::{Path, PathBuf};

/// The PID file, removed when this is dropped.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's PID (and a newline) to `path`, replacing what was there. Its
    /// directory is made if missing: Consul writes the file after making the data dir, so a
    /// PID file beside the data dir (`<dir>/pid` with `-data-dir <dir>/data`, as node-consul's
    /// tests start agents) works there, and does here too.
    pub fn create(path: &Path) -> std::io::Result<PidFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the pid file");
        }
    }
}

/// Tells systemd the agent is ready, when it runs under a unit that asks (`NOTIFY_SOCKET`
/// set: a path, or an abstract socket name after `@`). Failures are logged, never fatal.
pub(crate) fn notify_ready() {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket, b"READY=1\n") {
        tracing::warn!(socket = ?socket, error = %e, "cannot notify systemd of readiness");
    } else {
        tracing::debug!("notified systemd: READY=1");
    }
}

fn send(socket: &std::ffi::OsStr, msg: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(Path::new(socket))?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(msg, &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_notify_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        send(path.as_os_str(), b"READY=1\n").expect("send");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    #[test]
    fn pid_file_is_made_with_its_directory_and_holds_the_pid_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("not-yet").join("muster.pid");
        let f = PidFile::create(&path).expect("create");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(f);
        assert!(!path.exists());
    }
}
