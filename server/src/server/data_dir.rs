//! The data dir: opening its files, checking that they belong together and to this server
//! (its [`Identity`]), and setting aside the Raft data of a server retired by
//! `muster recover`.

use std::path::Path;
use std::sync::Arc;

use redb::Database;

use crate::raft::files::{
    self, guarded, ServerFile, LOG_FILE, SERVER_FILE, SNAPSHOT_FILE, STATE_FILE,
};
use crate::raft::log_store::{get_meta, put_meta, scan, LogStore, IDENTITY, RETIRED_BY};
use crate::raft::state_machine::{check_snapshot_file, StateMachine};
use crate::raft::types::NodeId;
use crate::{Error, Result, ServerConfig};

/// A Raft server's identity, stored in `raft.redb` and checked at every start.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Identity {
    pub(crate) node_name: String,
    pub(crate) datacenter: String,
    pub(crate) node_id: u64,
}

/// Opens a redb file with a bounded page cache (redb's default is 1 GiB). redb panics on
/// some damaged files: callers at start run this under [`files::guarded`].
pub(crate) fn open_db(path: &Path, cache_bytes: usize) -> Result<Arc<Database>> {
    match Database::builder().set_cache_size(cache_bytes).create(path) {
        Ok(db) => Ok(Arc::new(db)),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::DataDirInUse(
            path.parent().unwrap_or(path).to_path_buf(),
        )),
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => Err(Error::Open {
            path: path.to_path_buf(),
            reason: files::describe_io(&e.to_string()),
        }),
        Err(e) => Err(Error::Damaged {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// The Raft files of a data dir, which a retired server sets aside.
const RAFT_FILES: [&str; 4] = [LOG_FILE, STATE_FILE, SNAPSHOT_FILE, SERVER_FILE];

/// For a server another one refused as retired (see [`Server::retired`]): moves its Raft
/// files, closed, into `superseded-<unix time>/` in the data dir, kept for inspection, so
/// that it starts with no Raft state and rejoins the cluster as a new member with the data
/// that cluster holds.
fn set_aside_retired(dir: &Path, why: &str) -> Result<()> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = dir.join(format!("superseded-{secs}"));
    let moved = std::fs::create_dir_all(&aside).and_then(|()| {
        for f in RAFT_FILES {
            match std::fs::rename(dir.join(f), aside.join(f)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    });
    moved.map_err(|e| Error::Open {
        path: aside.clone(),
        reason: format!("cannot set aside the Raft data of a retired server: {e}"),
    })?;
    tracing::warn!(
        reason = %why,
        moved_to = %aside.display(),
        "this server was retired by a recovery elsewhere; its old Raft data is set aside and it \
         rejoins as a new member"
    );
    Ok(())
}

/// Opens the data dir's files, checking that they belong together (see [`files`]): the Raft
/// ID, the log store and the state machine. A lost or damaged `state.redb` or `snapshot.bin`
/// is set aside and rebuilt; a lost or damaged `raft.redb` refuses the start.
pub(super) fn open_data_dir(
    config: &ServerConfig,
) -> Result<(NodeId, Arc<Database>, LogStore, StateMachine)> {
    let dir = &config.data_dir;
    let raft_path = dir.join(LOG_FILE);
    let sm_path = dir.join(STATE_FILE);
    let snap_path = dir.join(SNAPSHOT_FILE);
    let st = |path: &Path| {
        let path = path.to_path_buf();
        move |e: openraft::StorageError<u64>| Error::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        }
    };
    let open_log = || -> Result<(Arc<Database>, Option<String>)> {
        guarded(&raft_path, || {
            let db = open_db(&raft_path, 4 << 20)?;
            let retired = get_meta::<String>(&db, RETIRED_BY).map_err(st(&raft_path))?;
            Ok((db, retired))
        })
    };

    let mut marker = files::read_server_file(dir)?;
    let log_held = files::size(&raft_path)?.is_some_and(|n| n > 0);
    if !log_held {
        // An emptied file is as good as a missing one: redb would make a new log of it.
        let what = match files::size(&raft_path)? {
            Some(_) => "raft.redb is empty",
            None => "raft.redb is missing",
        };
        if let Some(m) = &marker {
            return Err(files::refuse(
                dir,
                format!(
                    "{what}, but {SERVER_FILE} says this data dir belongs to Raft server {}: \
                     its Raft log, and any acknowledged write only it held, are gone",
                    m.raft_id
                ),
            ));
        }
        let beside: Vec<&str> = [STATE_FILE, SNAPSHOT_FILE]
            .into_iter()
            .filter(|f| dir.join(f).exists())
            .collect();
        if !beside.is_empty() {
            return Err(files::refuse(
                dir,
                format!(
                    "{what} beside {}: the Raft log, and the writes after the last \
                     checkpoint, are gone",
                    beside.join(" and ")
                ),
            ));
        }
    }

    let (mut log_db, retired) = open_log()?;
    if let Some(why) = retired {
        drop(log_db);
        set_aside_retired(dir, &why)?;
        marker = None;
        log_db = open_log()?.0;
    }
    let scan = guarded(&raft_path, || {
        let scan = scan(&log_db).map_err(st(&raft_path))?;
        let ident = get_meta::<Identity>(&log_db, IDENTITY).map_err(st(&raft_path))?;
        Ok((scan, ident))
    });
    let (scan, ident) = scan?;
    let agent_id = files::agent_node_id(dir);
    let id = match ident {
        Some(found) => {
            if found.node_name != config.node_name || found.datacenter != config.datacenter {
                return Err(Error::DataDirMismatch {
                    dir: dir.clone(),
                    found_node: found.node_name,
                    found_dc: found.datacenter,
                    node: config.node_name.clone(),
                    dc: config.datacenter.clone(),
                });
            }
            match &marker {
                Some(m) if m.raft_id != found.node_id => {
                    return Err(files::refuse(
                        dir,
                        format!(
                            "{SERVER_FILE} says Raft server {}, but raft.redb belongs to Raft \
                             server {}: the files come from two different servers",
                            m.raft_id, found.node_id
                        ),
                    ));
                }
                Some(ServerFile {
                    node_id: Some(was), ..
                }) if agent_id.as_ref().is_some_and(|a| a != was) => {
                    return Err(files::refuse(
                        dir,
                        format!(
                            "node-id holds {}, but this server's Raft data was made with node \
                             ID {was}: if node-id was lost, write {was} back into it",
                            agent_id.unwrap_or_default()
                        ),
                    ));
                }
                Some(_) => {}
                // A data dir from before server.json existed.
                None => files::write_server_file(
                    dir,
                    &ServerFile {
                        raft_id: found.node_id,
                        node_id: agent_id,
                    },
                )?,
            }
            found.node_id
        }
        None => {
            if let Some(m) = &marker {
                return Err(files::refuse(
                    dir,
                    format!(
                        "raft.redb holds no Raft identity (it was replaced or emptied), but \
                         {SERVER_FILE} says this data dir belongs to Raft server {}",
                        m.raft_id
                    ),
                ));
            }
            if sm_path.exists() || snap_path.exists() {
                return Err(files::refuse(
                    dir,
                    "raft.redb holds no Raft identity (it was replaced or emptied) beside \
                     state.redb or snapshot.bin"
                        .into(),
                ));
            }
            let ident = Identity {
                node_name: config.node_name.clone(),
                datacenter: config.datacenter.clone(),
                node_id: rand::random::<u64>() >> 1,
            };
            // The identity first: a crash before server.json is written is caught up above.
            put_meta(&log_db, IDENTITY, &ident).map_err(|e| Error::Open {
                path: raft_path.clone(),
                reason: files::describe_io(&e.to_string()),
            })?;
            files::write_server_file(
                dir,
                &ServerFile {
                    raft_id: ident.node_id,
                    node_id: agent_id,
                },
            )?;
            ident.node_id
        }
    };
    let log_store = LogStore::new(log_db.clone(), &raft_path)
        .map_err(st(&raft_path))?
        .for_node(id);

    // The snapshot is rebuilt from state.redb when missing, so a damaged one is set aside.
    if let Err(e) = check_snapshot_file(&snap_path) {
        let to = files::set_aside(&snap_path)?;
        tracing::warn!(
            error = %e,
            moved_to = %to.display(),
            "{} is damaged: set aside; it is rebuilt from state.redb",
            snap_path.display()
        );
    }
    // Written only by checkpoints, and read only at start: a small cache does.
    let open_state = || {
        guarded(&sm_path, || {
            let db = open_db(&sm_path, 1 << 20)?;
            StateMachine::new(db, &sm_path, snap_path.clone()).map_err(st(&sm_path))
        })
    };
    let state_existed = sm_path.exists();
    let sm = match open_state() {
        Ok(sm) => sm,
        Err(e @ Error::Damaged { .. }) => {
            let to = files::set_aside(&sm_path)?;
            tracing::warn!(
                error = %e,
                moved_to = %to.display(),
                "{} is damaged: set aside; rebuilding the state from the Raft log and snapshot",
                sm_path.display()
            );
            open_state()?
        }
        Err(e) => return Err(e),
    };
    if !state_existed && scan.last.is_some() {
        tracing::warn!(
            "{} is missing: rebuilding the state from the Raft log and snapshot",
            sm_path.display()
        );
    }
    // The log before `last_purged` is gone: the state must start at least there.
    let applied = sm.last_applied();
    if applied.map(|l| l.index) < scan.last_purged.map(|l| l.index) {
        return Err(Error::Damaged {
            path: sm_path,
            reason: format!(
                "it was lost and cannot be rebuilt: it reaches log index {}, snapshot.bin is \
                 missing or behind, and raft.redb was compacted up to index {}",
                applied.map_or(0, |l| l.index),
                scan.last_purged.map_or(0, |l| l.index)
            ),
        });
    }
    Ok((id, log_db, log_store, sm))
}

/// Records, for the next start, that another server refused this one as retired: why.
pub(super) async fn record_retired(db: Arc<Database>, why: String) {
    let put = move || put_meta(&db, RETIRED_BY, &why).map_err(|e| e.to_string());
    let done = tokio::task::spawn_blocking(put).await;
    if let Err(e) = done.map_err(|e| e.to_string()).and_then(|r| r) {
        tracing::error!(error = %e, "cannot record the retirement");
    }
}
