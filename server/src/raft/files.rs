//! The files of a server's data dir, checked at every start before Raft runs on them.
//!
//! | file | holds | if missing or damaged |
//! |---|---|---|
//! | `server.json` | the Raft ID (and agent node ID) this data dir belongs to | written from `raft.redb` |
//! | `raft.redb` | log, vote, identity | refuse to start: acknowledged writes may be gone |
//! | `state.redb` | a checkpoint of the applied state | set aside, rebuilt from the log and snapshot |
//! | `snapshot.bin` | the last snapshot | set aside, rebuilt from `state.redb` |
//!
//! `server.json` outlives a lost `raft.redb`: with it a server whose log was deleted or
//! emptied knows it was a member, and refuses to start rather than join as a new member or
//! form a new, empty cluster. A data dir without it and without `raft.redb` is new (or a
//! client agent's turning server), unless it holds `state.redb` or `snapshot.bin`.
//!
//! redb asserts on some damaged files instead of returning an error. Opens and start-up
//! reads run under [`guarded`], which turns such a panic into an error naming the file.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Once;

use serde::{Deserialize, Serialize};

use crate::Error;

pub(crate) const SERVER_FILE: &str = "server.json";
pub(crate) const LOG_FILE: &str = "raft.redb";
pub(crate) const STATE_FILE: &str = "state.redb";
pub(crate) const SNAPSHOT_FILE: &str = "snapshot.bin";
/// The agent's node ID, written by the agent before the server starts.
const NODE_ID_FILE: &str = "node-id";

/// What `server.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServerFile {
    pub(crate) raft_id: u64,
    /// The agent's `node-id` when this server's Raft identity was made, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node_id: Option<String>,
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic in it into an error naming `path`. The panic's default report
/// on stderr is left out: the error says it, once, with the file and what to do.
pub(crate) fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    res.unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        // Assertion messages span lines; an error message is one.
        let what = what.split_whitespace().collect::<Vec<_>>().join(" ");
        Err(Error::Damaged {
            path: path.to_path_buf(),
            reason: format!("redb failed on it ({what})"),
        })
    })
}

/// The size of `path`, or `None` when it does not exist.
pub(crate) fn size(path: &Path) -> Result<Option<u64>, Error> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

pub(crate) fn read_server_file(dir: &Path) -> Result<Option<ServerFile>, Error> {
    let path = dir.join(SERVER_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Open {
                path,
                reason: e.to_string(),
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Damaged {
            path,
            reason: format!("{e}; it should hold {{\"raft_id\": <this server's Raft ID>}}"),
        })
}

/// Writes `server.json` durably (temp file, fsync, rename, fsync of the dir).
pub(crate) fn write_server_file(dir: &Path, file: &ServerFile) -> Result<(), Error> {
    let path = dir.join(SERVER_FILE);
    let tmp = dir.join("server.json.tmp");
    let body = serde_json::to_vec(file).map_err(|e| Error::Storage(e.to_string()))?;
    let res = std::fs::write(&tmp, body)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| std::fs::File::open(dir)?.sync_all());
    res.map_err(|e| Error::Open {
        reason: describe_io(&e.to_string()),
        path,
    })
}

/// The agent's node ID, if the agent wrote one.
pub(crate) fn agent_node_id(dir: &Path) -> Option<String> {
    let s = std::fs::read_to_string(dir.join(NODE_ID_FILE)).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Moves a damaged file out of the way, to `<name>.damaged-<unix time>`, kept for
/// inspection. Returns where it went.
pub(crate) fn set_aside(path: &Path) -> Result<PathBuf, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".damaged-{secs}"));
    let to = path.with_file_name(name);
    std::fs::rename(path, &to).map_err(|e| Error::Open {
        path: path.to_path_buf(),
        reason: format!("cannot set the damaged file aside to {}: {e}", to.display()),
    })?;
    Ok(to)
}

/// Names a full disk as such: the OS says "No space left on device (os error 28)".
pub(crate) fn describe_io(msg: &str) -> String {
    if msg.contains("the disk is full") {
        msg.to_string()
    } else if msg.contains("os error 28")
        || msg.contains("No space left")
        || msg.contains("StorageFull")
    {
        format!("the disk is full ({msg})")
    } else {
        msg.to_string()
    }
}

/// Why a data dir cannot be served as it is, with the choices an operator has.
pub(crate) fn refuse(dir: &Path, problem: String) -> Error {
    Error::DataDirInconsistent {
        dir: dir.to_path_buf(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_the_file() {
        let r: Result<(), Error> = guarded(Path::new("/d/state.redb"), || panic!("boom"));
        let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("/d/state.redb") && msg.contains("boom"),
            "{msg}"
        );
    }

    #[test]
    fn a_full_disk_is_named() {
        let m = describe_io("No space left on device (os error 28)");
        assert!(m.starts_with("the disk is full"), "{m}");
        assert_eq!(describe_io("Permission denied"), "Permission denied");
    }
}
