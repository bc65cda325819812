//! Storage faults are loud, and nothing is lost silently: each damaged or missing file of a
//! server's data dir, and a full disk, against real `muster` processes.
//!
//! A damaged or missing `state.redb` (a checkpoint) is rebuilt from the Raft log and the
//! snapshot, serving every acknowledged write. A damaged or lost `raft.redb`, or files that
//! do not belong together, stop the agent with a non-zero status and a message naming the
//! file and the choices. A full disk stops the agent (never a zombie), and a restart after
//! space is freed serves every acknowledged write.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use muster_tests::{get, leader_of, muster_bin, put, single_server, wait_until, Agent};

const KEYS: usize = 120;

/// Snapshots every 50 entries and keeps no log behind them: the log is purged past its start,
/// so a state rebuilt from the log alone (without the snapshot) would miss writes.
fn compacting_config(root: &Path) -> anyhow::Result<String> {
    let path = root.join("compact.json");
    std::fs::write(
        &path,
        r#"{"raft_snapshot_threshold": 50, "raft_trailing_logs": 0}"#,
    )?;
    Ok(path.display().to_string())
}

/// A single server that acknowledged `KEYS` writes and took a snapshot, then was stopped.
async fn stopped_server(root: &Path) -> anyhow::Result<(Agent, String)> {
    let cfg = compacting_config(root)?;
    let mut a = single_server(root, "s1", &["-config-file", &cfg]).await?;
    for i in 0..KEYS {
        let r = put(
            &a.url(&format!("/v1/kv/k/{i:03}")),
            format!("v{i}").as_bytes(),
        )
        .await?;
        assert_eq!(r.text(), "true", "write {i}: {}", r.status);
    }
    let snap = a.data_dir.join("snapshot.bin");
    wait_until("a snapshot", Duration::from_secs(20), || async {
        snap.exists().then_some(())
    })
    .await?;
    a.terminate(Duration::from_secs(20))?;
    Ok((a, cfg))
}

/// Asserts `a` serves every one of the `KEYS` acknowledged writes. A consistent read: the
/// last entries are applied only once the new leader commits, a stale read may come first.
async fn assert_all_keys(a: &Agent) -> anyhow::Result<()> {
    let keys = get(&a.url("/v1/kv/k/?keys&consistent")).await?.json();
    assert_eq!(
        keys.as_array().map(Vec::len),
        Some(KEYS),
        "every acknowledged write is served; log:\n{}",
        a.logs()
    );
    for i in [0, 42, KEYS - 1] {
        let v = get(&a.url(&format!("/v1/kv/k/{i:03}?raw&consistent"))).await?;
        assert_eq!(v.text(), format!("v{i}"));
    }
    Ok(())
}

/// Starts the server of `dir` again and waits for it to lead.
async fn restart(root: &Path, cfg: &str) -> anyhow::Result<Agent> {
    single_server(root, "s1", &["-config-file", cfg]).await
}

/// Runs `muster agent` on `dir` as [`Agent::start`] would, expecting it to stop by itself:
/// its exit status and log.
fn run_to_exit(name: &str, dir: &Path, cfg: &str) -> anyhow::Result<(Option<i32>, String)> {
    let log = dir.with_extension("log");
    let _ = std::fs::remove_file(&log);
    let log_file = std::fs::File::create(&log)?;
    let args = Agent::agent_args(
        name,
        dir,
        &["-server", "-bootstrap-expect", "1", "-config-file", cfg],
    );
    let mut child = Command::new(muster_bin())
        .args(&args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .context("spawn muster")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let logs = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("the agent kept running on a data dir it must refuse; log:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((status.code(), std::fs::read_to_string(&log)?))
}

/// The agent refused to start: exit status 1 (an error, not a panic's 101), and the log
/// holds each of `says`.
fn assert_refused(code: Option<i32>, log: &str, says: &[&str]) {
    assert_eq!(code, Some(1), "exit status; log:\n{log}");
    for s in says {
        assert!(log.contains(s), "the message says {s:?}; log:\n{log}");
    }
    assert!(!log.contains("panicked"), "no panic; log:\n{log}");
}

fn truncate_to_half(path: &Path) -> anyhow::Result<()> {
    let len = std::fs::metadata(path)?.len();
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(len / 2)?;
    Ok(())
}

/// Flips every bit past the file's first page (redb's header): every table page is garbage.
fn flip_bytes(path: &Path) -> anyhow::Result<()> {
    let mut b = std::fs::read(path)?;
    for x in b.iter_mut().skip(4096) {
        *x ^= 0xa5;
    }
    std::fs::write(path, b)?;
    Ok(())
}

/// The files set aside as damaged, by name prefix.
fn set_aside(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_deleted_state_redb_is_rebuilt_from_the_log_and_snapshot() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (a, cfg) = stopped_server(root.path()).await?;
    std::fs::remove_file(a.data_dir.join("state.redb"))?;
    let a = restart(root.path(), &cfg).await?;
    assert_all_keys(&a).await?;
    assert!(a.logs().contains("state.redb is missing"), "{}", a.logs());
    Ok(())
}

#[tokio::test]
async fn a_truncated_state_redb_is_set_aside_and_rebuilt() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (a, cfg) = stopped_server(root.path()).await?;
    truncate_to_half(&a.data_dir.join("state.redb"))?;
    let a = restart(root.path(), &cfg).await?;
    assert_all_keys(&a).await?;
    assert_eq!(set_aside(&a.data_dir, "state.redb.damaged-").len(), 1);
    assert!(a.logs().contains("state.redb is damaged"), "{}", a.logs());
    Ok(())
}

#[tokio::test]
async fn a_state_redb_with_flipped_bytes_is_set_aside_and_rebuilt() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (a, cfg) = stopped_server(root.path()).await?;
    flip_bytes(&a.data_dir.join("state.redb"))?;
    let a = restart(root.path(), &cfg).await?;
    assert_all_keys(&a).await?;
    assert_eq!(set_aside(&a.data_dir, "state.redb.damaged-").len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_damaged_snapshot_is_set_aside_and_rebuilt() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (a, cfg) = stopped_server(root.path()).await?;
    truncate_to_half(&a.data_dir.join("snapshot.bin"))?;
    let a = restart(root.path(), &cfg).await?;
    assert_all_keys(&a).await?;
    assert_eq!(set_aside(&a.data_dir, "snapshot.bin.damaged-").len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_truncated_raft_redb_stops_the_agent_naming_it() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (a, cfg) = stopped_server(root.path()).await?;
    truncate_to_half(&a.data_dir.join("raft.redb"))?;
    let (code, log) = run_to_exit("s1", &a.data_dir, &cfg)?;
    assert_refused(
        code,
        &log,
        &["raft.redb is damaged", "backup", "move its data dir aside"],
    );
    Ok(())
}

#[tokio::test]
async fn a_deleted_raft_redb_beside_state_redb_refuses_to_start() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (a, cfg) = stopped_server(root.path()).await?;
    std::fs::remove_file(a.data_dir.join("raft.redb"))?;
    let (code, log) = run_to_exit("s1", &a.data_dir, &cfg)?;
    assert_refused(
        code,
        &log,
        &[
            "raft.redb is missing",
            "backup",
            "muster recover",
            "data dir aside",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn an_emptied_raft_redb_beside_state_redb_refuses_to_start() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (a, cfg) = stopped_server(root.path()).await?;
    std::fs::File::create(a.data_dir.join("raft.redb"))?;
    let (code, log) = run_to_exit("s1", &a.data_dir, &cfg)?;
    assert_refused(code, &log, &["raft.redb is empty", "muster recover"]);
    Ok(())
}

#[tokio::test]
async fn both_redb_files_deleted_with_node_id_kept_refuses_to_start() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (a, cfg) = stopped_server(root.path()).await?;
    for f in ["raft.redb", "state.redb", "snapshot.bin"] {
        std::fs::remove_file(a.data_dir.join(f))?;
    }
    assert!(a.data_dir.join("node-id").exists());
    let (code, log) = run_to_exit("s1", &a.data_dir, &cfg)?;
    assert_refused(
        code,
        &log,
        &["raft.redb is missing", "Raft server", "data dir aside"],
    );
    Ok(())
}

/// Whether this process may mount a tmpfs.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

const IN_NAMESPACE: &str = "MUSTER_TEST_IN_MOUNT_NS";

/// A full disk: a write fails cleanly, the agent exits non-zero naming the full disk (no
/// zombie answering `No cluster leader` forever), and a restart once space is freed serves
/// every acknowledged write. The data dir is a small tmpfs, mounted in a private mount
/// namespace (this test re-runs itself under `unshare --mount`) so that nothing outlives it
/// on the host.
#[tokio::test]
async fn a_full_disk_stops_the_agent_and_a_restart_serves_every_acknowledged_write(
) -> anyhow::Result<()> {
    if std::env::var_os(IN_NAMESPACE).is_none() {
        if !is_root() {
            println!("SKIPPED: mounting a tmpfs data dir needs root");
            return Ok(());
        }
        let me = std::env::current_exe()?;
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private"])
            .arg(&me)
            .args([
                "--exact",
                "a_full_disk_stops_the_agent_and_a_restart_serves_every_acknowledged_write",
                "--nocapture",
            ])
            .env(IN_NAMESPACE, "1")
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{text}");
        assert!(out.status.success(), "in the mount namespace: {text}");
        assert!(text.contains("1 passed"), "the test ran: {text}");
        return Ok(());
    }

    let root = tempfile::tempdir()?;
    let dir = root.path().join("s1");
    std::fs::create_dir_all(&dir)?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12m", "tmpfs"])
        .arg(&dir)
        .status()?;
    assert!(mounted.success(), "mount a tmpfs");
    // Room to free later: a restart needs some to open its files.
    let filler = dir.join("filler");
    std::fs::write(&filler, vec![1u8; 3 << 20])?;

    let mut a = single_server(root.path(), "s1", &[]).await?;
    let value = vec![b'x'; 32 << 10];
    let mut acked = Vec::new();
    let mut failed = None;
    for i in 0..2000 {
        let url = a.url(&format!("/v1/kv/full/{i:04}"));
        match put(&url, &value).await {
            Ok(r) if r.status == 200 && r.text() == "true" => acked.push(i),
            Ok(r) => {
                failed = Some(format!("{} {}", r.status, r.text()));
                break;
            }
            // The agent exited between two writes (a checkpoint found the disk full first).
            Err(e) => {
                failed = Some(format!("{e:#}"));
                break;
            }
        }
    }
    let failed = failed.context("the disk never filled")?;
    println!("{} writes acknowledged, then: {failed}", acked.len());
    assert!(!acked.is_empty());
    let status = a.wait_exit(Duration::from_secs(30)).map_err(|e| {
        anyhow::anyhow!(
            "{e}: a zombie, still running on a full disk; log:\n{}",
            a.logs()
        )
    })?;
    let log = a.logs();
    assert!(!status.success(), "a non-zero exit; log:\n{log}");
    assert!(
        log.contains("the disk is full")
            && (log.contains("raft.redb") || log.contains("state.redb")),
        "the full disk is named with the file; log:\n{log}"
    );

    std::fs::remove_file(&filler)?;
    let a = single_server(root.path(), "s1", &[]).await?;
    let keys = get(&a.url("/v1/kv/full/?keys&consistent")).await?.json();
    let served = keys.as_array().map(Vec::len).unwrap_or(0);
    assert!(
        served >= acked.len(),
        "{served} keys served of {} acknowledged; log:\n{}",
        acked.len(),
        a.logs()
    );
    for i in acked {
        let v = get(&a.url(&format!("/v1/kv/full/{i:04}?raw"))).await?;
        assert_eq!(v.body.len(), value.len(), "key {i}");
    }
    assert!(leader_of(&a).await.is_some());
    let r = put(&a.url("/v1/kv/after"), b"ok").await?;
    assert_eq!(r.text(), "true", "writes work again");
    drop(a);
    let _ = Command::new("umount").arg(&dir).status();
    Ok(())
}
