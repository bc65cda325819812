//! Putting a rendered file in place: only when its content changed, atomically (a temp file
//! in the destination's directory, fsynced, renamed over it, the directory fsynced), with
//! its mode, the previous file kept as `DEST.bak` on request, and the candidate validated by
//! `check_command` before it replaces anything. Also the shell commands a template runs,
//! each in its own process group, killed whole at its timeout, its output kept.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::{TemplateConfig, DEFAULT_COMMAND_TIMEOUT};

/// What became of a rendered file.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// The destination already held exactly this.
    Unchanged,
    /// The destination was replaced.
    Replaced,
    /// `check_command` refused the candidate; the old file stays. The reason and output.
    Refused(String),
}

/// Installs `contents` at the template's destination unless it already holds it.
pub async fn install(t: &TemplateConfig, contents: &str) -> Result<Written, String> {
    let dest = t.destination.clone();
    let old = tokio::fs::read(&dest).await.ok();
    if old.as_deref() == Some(contents.as_bytes()) {
        return Ok(Written::Unchanged);
    }
    let (perms, data) = (t.perms, contents.as_bytes().to_vec());
    let d = dest.clone();
    let tmp = tokio::task::spawn_blocking(move || candidate(&d, &data, perms))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("write {}: {e}", dest.display()))?;
    if let Some(check) = &t.check_command {
        let cmd = check_command_line(check, tmp.path())?;
        if let Err(e) = run(&cmd, t.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT)).await {
            return Ok(Written::Refused(format!(
                "check_command {cmd:?} failed: {e}"
            )));
        }
    }
    let backup = t.backup;
    tokio::task::spawn_blocking(move || replace(tmp, &dest, backup))
        .await
        .map_err(|e| e.to_string())?
        .map(|()| Written::Replaced)
}

/// The candidate: a temp file beside `dest` with the data, its mode set, fsynced.
fn candidate(
    dest: &Path,
    data: &[u8],
    perms: Option<u32>,
) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = parent(dest);
    std::fs::create_dir_all(&dir)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(&dir)?;
    tmp.write_all(data)?;
    let mode = perms
        .or_else(|| {
            std::fs::metadata(dest)
                .ok()
                .map(|m| m.permissions().mode() & 0o7777)
        })
        .unwrap_or(0o644);
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

fn parent(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Renames the candidate over `dest` (after copying the old file to `DEST.bak`), then
/// fsyncs the directory so the rename survives a crash.
fn replace(tmp: tempfile::NamedTempFile, dest: &Path, backup: bool) -> Result<(), String> {
    if backup && dest.exists() {
        let mut bak = dest.as_os_str().to_owned();
        bak.push(".bak");
        std::fs::copy(dest, &bak).map_err(|e| format!("backup {}: {e}", dest.display()))?;
    }
    tmp.persist(dest)
        .map_err(|e| format!("rename into {}: {}", dest.display(), e.error))?;
    std::fs::File::open(parent(dest))
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("fsync {}: {e}", parent(dest).display()))
}

/// `check_command` with `{{.candidate}}` (any spacing) replaced by the candidate's path,
/// shell-quoted.
pub fn check_command_line(check: &str, candidate: &Path) -> Result<String, String> {
    let path = candidate.display().to_string();
    let quoted = format!("'{}'", path.replace('\'', "'\\''"));
    let t = gotmpl::Template::new("check_command")
        .parse(check)
        .map_err(|e| e.to_string())?;
    let data = gotmpl::Value::Map(std::sync::Arc::new(
        [(
            std::sync::Arc::from("candidate"),
            gotmpl::Value::String(quoted.into()),
        )]
        .into_iter()
        .collect(),
    ));
    t.execute_to_string(&data).map_err(|e| e.to_string())
}

/// Runs `cmd` with `sh -c` in its own process group; its combined output on success, else
/// why it failed with that output. At `timeout` the whole group is killed.
pub async fn run(cmd: &str, timeout: Duration) -> Result<String, String> {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = c.spawn().map_err(|e| format!("start: {e}"))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            if out.status.success() {
                Ok(text)
            } else {
                Err(format!("{}; output: {:?}", out.status, text.trim_end()))
            }
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(format!("timed out after {timeout:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dest: &Path) -> TemplateConfig {
        TemplateConfig {
            destination: dest.to_path_buf(),
            ..TemplateConfig::default()
        }
    }

    #[tokio::test]
    async fn writes_only_changes_with_mode_and_backup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("sub/out.conf");
        let mut t = cfg(&dest);
        t.perms = Some(0o600);
        t.backup = true;
        assert_eq!(install(&t, "one").await, Ok(Written::Replaced));
        assert_eq!(install(&t, "one").await, Ok(Written::Unchanged));
        assert_eq!(install(&t, "two").await, Ok(Written::Replaced));
        assert_eq!(std::fs::read_to_string(&dest).expect("read"), "two");
        let bak = dir.path().join("sub/out.conf.bak");
        assert_eq!(std::fs::read_to_string(bak).expect("bak"), "one");
        let mode = std::fs::metadata(&dest).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temp files left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty());
    }

    #[tokio::test]
    async fn a_failing_check_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("nginx.conf");
        let mut t = cfg(&dest);
        t.check_command = Some("grep -q good {{ .candidate }}".into());
        assert_eq!(install(&t, "good\n").await, Ok(Written::Replaced));
        let r = install(&t, "bad\n").await.expect("install");
        assert!(
            matches!(r, Written::Refused(ref why) if why.contains("exit status: 1")),
            "{r:?}"
        );
        assert_eq!(std::fs::read_to_string(&dest).expect("read"), "good\n");
    }

    #[tokio::test]
    async fn commands_time_out_whole() {
        let e = run("sleep 5 & sleep 5", Duration::from_millis(200)).await;
        assert!(matches!(e, Err(ref m) if m.contains("timed out")), "{e:?}");
        assert_eq!(
            run("echo hi", Duration::from_secs(5)).await,
            Ok("hi\n".into())
        );
    }
}
