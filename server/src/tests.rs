//! The redb log store and state machine against openraft's storage test suite.

use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use crate::raft::log_store::LogStore;
use crate::raft::state_machine::StateMachine;
use crate::raft::types::{StorageError, TypeConfig};

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().map_err(crate::raft::types::sto_err)?;
        let open = |name: &str| {
            redb::Database::create(dir.path().join(name))
                .map(std::sync::Arc::new)
                .map_err(crate::raft::types::sto_err)
        };
        let log = LogStore::new(open("raft.redb")?, &dir.path().join("raft.redb"))?;
        let sm = StateMachine::new(
            open("state.redb")?,
            &dir.path().join("state.redb"),
            dir.path().join("snapshot.bin"),
        )?;
        Ok((dir, log, sm))
    }
}

#[test]
fn redb_stores_pass_openraft_suite() -> Result<(), StorageError> {
    Suite::test_all(RedbBuilder)
}

/// Destroying a session finds its locks through the `session_keys` index, which every KV
/// write path keeps in step and a restart rebuilds from the KV table.
#[test]
fn session_destroy_releases_exactly_the_locks_held() -> Result<(), StorageError> {
    use crate::codec::decode;
    use crate::model::{
        Command, KvEntry, KvVerb, LockOp, Node, Registration, Session, SessionBehavior, TxnOp,
    };
    use crate::store::mem::{Rows, Tables, WriteTxn};
    use crate::store::tables::{KV, SESSION_KEYS};
    use crate::store::{apply_command, rebuild_session_keys, Changes};

    let mut db = Tables::default();
    let mut index = 0;
    let mut apply = |db: &mut Tables, cmds: Vec<Command>| -> Result<Vec<bool>, StorageError> {
        index += 1;
        let txn = WriteTxn::new(db);
        let mut ch = Changes::default();
        let mut ok = Vec::new();
        for c in cmds {
            ok.push(apply_command(&txn, index, c, &mut ch)?.success);
        }
        *db = txn.finish(None, Default::default());
        Ok(ok)
    };
    let set = |key: &str, lock: Option<LockOp>| Command::KvSet {
        key: key.into(),
        value: b"v".to_vec(),
        flags: 0,
        cas: None,
        lock,
    };
    let session = |id: &str, behavior| {
        Command::SessionCreate(Box::new(Session {
            id: id.into(),
            node: "n1".into(),
            behavior,
            ..Session::default()
        }))
    };
    let node = Node {
        name: "n1".into(),
        ..Node::default()
    };
    let acquire = |s: &str| Some(LockOp::Acquire(s.into()));
    let ok = apply(
        &mut db,
        vec![
            Command::Register(Box::new(Registration {
                node,
                skip_node_update: false,
                service: None,
                checks: Vec::new(),
            })),
            session("a", SessionBehavior::Release),
            session("b", SessionBehavior::Delete),
            set("free", None),
            set("a/plain", acquire("a")),
            set("a/rewritten", acquire("a")),
            set("a/deleted", acquire("a")),
            set("a/tree/x", acquire("a")),
            set("b/held", acquire("b")),
        ],
    )?;
    assert!(ok.iter().all(|&o| o), "{ok:?}");
    let ok = apply(
        &mut db,
        vec![
            // A plain write keeps the holder; a delete (alone or in a tree) drops the lock.
            set("a/rewritten", None),
            Command::KvDelete {
                key: "a/deleted".into(),
                cas: None,
            },
            set("a/deleted", None),
            Command::KvDeleteTree {
                prefix: "a/tree/".into(),
            },
            Command::Txn(vec![TxnOp::Kv {
                verb: KvVerb::Lock,
                key: "a/txn".into(),
                value: b"t".to_vec(),
                flags: 0,
                index: 0,
                session: "a".into(),
            }]),
        ],
    )?;
    assert!(ok.iter().all(|&o| o), "{ok:?}");

    let held = |db: &Tables| -> Vec<String> {
        db.table(SESSION_KEYS)
            .keys()
            .map(|k| k.replace('\0', " "))
            .collect()
    };
    let expect = ["a a/plain", "a a/rewritten", "a a/txn", "b b/held"];
    assert_eq!(held(&db), expect);
    // A restart rebuilds the same index from the KV table.
    *db.table_mut(SESSION_KEYS) = Rows::new();
    rebuild_session_keys(&mut db)?;
    assert_eq!(held(&db), expect);

    apply(
        &mut db,
        vec![
            Command::SessionDestroy { id: "a".into() },
            Command::SessionDestroy { id: "b".into() },
        ],
    )?;
    let get = |k: &str| -> Result<Option<KvEntry>, StorageError> {
        db.table(KV)
            .get(k)
            .map(|v| decode::<KvEntry>(v))
            .transpose()
            .map_err(StorageError::from)
    };
    for k in ["a/plain", "a/rewritten", "a/txn", "a/deleted", "free"] {
        let e = get(k)?.unwrap_or_else(|| panic!("{k} kept"));
        assert_eq!(e.session, None, "{k} released");
    }
    assert_eq!(
        get("a/deleted")?.map(|e| e.modify_index),
        Some(2),
        "untouched"
    );
    assert!(
        get("b/held")?.is_none(),
        "a delete-behavior session deletes its keys"
    );
    assert_eq!(held(&db), Vec::<String>::new());
    Ok(())
}

/// Servers that join after a recovery learn the retired Raft IDs from the log entry
/// `muster recover` writes, and also from a snapshot when the log was purged.
#[tokio::test]
async fn retired_servers_reach_joiners_through_the_log_and_snapshots() -> Result<(), StorageError> {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};

    use crate::model::Command;
    use crate::raft::types::{sto_err, Batch};

    let state_machine = |dir: &TempDir| -> Result<StateMachine, StorageError> {
        let db = redb::Database::create(dir.path().join("state.redb")).map_err(sto_err)?;
        StateMachine::new(
            std::sync::Arc::new(db),
            &dir.path().join("state.redb"),
            dir.path().join("snapshot.bin"),
        )
    };
    let retired = |sm: &StateMachine| {
        let ids = crate::sync::read(&sm.retired);
        ids.iter().copied().collect::<Vec<u64>>()
    };
    let (a_dir, b_dir) = (
        TempDir::new().map_err(sto_err)?,
        TempDir::new().map_err(sto_err)?,
    );
    let mut a = state_machine(&a_dir)?;
    assert!(retired(&a).is_empty());
    let entry = Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(3, 1), 7),
        payload: EntryPayload::Normal(Batch::new(vec![Command::RetireServers { ids: vec![5, 9] }])),
    };
    a.apply(vec![entry]).await?;
    assert_eq!(retired(&a), [5, 9], "applied from the log");

    let snap = a.build_snapshot().await?;
    let mut b = state_machine(&b_dir)?;
    b.install_snapshot(&snap.meta, snap.snapshot).await?;
    assert_eq!(retired(&b), [5, 9], "installed from a snapshot");
    drop(b);
    let b = state_machine(&b_dir)?;
    assert_eq!(retired(&b), [5, 9], "loaded at start");
    Ok(())
}

/// The commit hook rides on the leader's in-memory entry only: a batch is logged and sent as
/// its bare command list, so the log format is what it was before the hook existed.
#[test]
fn a_batch_is_logged_as_its_bare_commands() -> Result<(), StorageError> {
    use crate::codec::{decode, encode};
    use crate::model::Command;
    use crate::raft::types::{Batch, CommitHook};

    let cmds = vec![
        Command::KvSet {
            key: "a".into(),
            value: b"1".to_vec(),
            flags: 0,
            cas: None,
            lock: None,
        },
        Command::KvDeleteTree {
            prefix: "b/".into(),
        },
    ];
    let (hook, _rx) = CommitHook::new();
    let batch = Batch {
        cmds: cmds.clone(),
        on_commit: Some(hook),
    };
    let bytes = encode(&batch)?;
    assert_eq!(bytes, encode(&cmds)?);
    let back: Batch = decode(&bytes)?;
    assert_eq!(back.cmds, cmds);
    assert!(back.on_commit.is_none());
    Ok(())
}

/// Writes answered at commit (`Command::succeeds_unconditionally`) must succeed whatever state
/// their apply meets: absent, present, tombstoned and lock-held keys alike.
#[test]
fn unconditional_writes_succeed_on_every_state_they_can_meet() -> Result<(), StorageError> {
    use crate::model::{Command, LockOp, Node, Registration, Session};
    use crate::store::mem::{Tables, WriteTxn};
    use crate::store::{apply_command, Changes};

    let set = |key: &str, lock: Option<LockOp>| Command::KvSet {
        key: key.into(),
        value: b"v".to_vec(),
        flags: 7,
        cas: None,
        lock,
    };
    let del = |key: &str| Command::KvDelete {
        key: key.into(),
        cas: None,
    };
    let tree = |prefix: &str| Command::KvDeleteTree {
        prefix: prefix.into(),
    };
    let setup = vec![
        Command::Register(Box::new(Registration {
            node: Node {
                name: "n1".into(),
                ..Node::default()
            },
            skip_node_update: false,
            service: None,
            checks: Vec::new(),
        })),
        Command::SessionCreate(Box::new(Session {
            id: "s".into(),
            node: "n1".into(),
            ..Session::default()
        })),
        set("present", None),
        set("held", Some(LockOp::Acquire("s".into()))),
        set("gone", None),
        del("gone"),
    ];
    // Each unconditional command, on a key absent, present, held by a session, tombstoned,
    // and again on what the previous one left.
    let writes = vec![
        set("absent", None),
        set("present", None),
        set("held", None),
        set("gone", None),
        del("never"),
        del("present"),
        del("held"),
        del("present"),
        tree("nothing/"),
        tree("absent"),
        tree(""),
        set("held", None),
    ];
    let tables = Tables::default();
    let txn = WriteTxn::new(&tables);
    let mut ch = Changes::default();
    for c in setup {
        assert!(apply_command(&txn, 1, c, &mut ch)?.success);
    }
    for (i, c) in writes.into_iter().enumerate() {
        assert!(c.succeeds_unconditionally(), "{c:?}");
        let shown = format!("{c:?}");
        assert!(
            apply_command(&txn, 2 + i as u64, c, &mut ch)?.success,
            "{shown}"
        );
    }
    let conditional = [
        Command::KvSet {
            key: "k".into(),
            value: Vec::new(),
            flags: 0,
            cas: Some(0),
            lock: None,
        },
        set("k", Some(LockOp::Release("s".into()))),
        Command::KvDelete {
            key: "k".into(),
            cas: Some(3),
        },
    ];
    assert!(conditional.iter().all(|c| !c.succeeds_unconditionally()));
    Ok(())
}

/// The state machine lives in memory and reaches `state.redb` through checkpoints: a
/// restart loads the last checkpoint and reports its applied index, so openraft re-applies
/// the log after it; a write that no checkpoint took is not half there.
#[tokio::test]
async fn a_restart_loads_the_last_checkpoint_and_no_more() -> Result<(), StorageError> {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};

    use crate::model::Command;
    use crate::raft::types::{sto_err, Batch};

    let dir = TempDir::new().map_err(sto_err)?;
    let open = || -> Result<StateMachine, StorageError> {
        let db = redb::Database::create(dir.path().join("state.redb")).map_err(sto_err)?;
        StateMachine::new(
            std::sync::Arc::new(db),
            &dir.path().join("state.redb"),
            dir.path().join("snapshot.bin"),
        )
    };
    let put = |index: u64, keys: std::ops::Range<u32>| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Batch::new(
            keys.map(|k| Command::KvSet {
                key: format!("k/{k:03}"),
                value: format!("v{index}").into_bytes(),
                flags: 0,
                cas: None,
                lock: None,
            })
            .collect(),
        )),
    };
    let del = |index: u64, prefix: &str| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Batch::new(vec![Command::KvDeleteTree {
            prefix: prefix.into(),
        }])),
    };

    let mut sm = open()?;
    sm.apply(vec![put(1, 0..300), put(2, 100..200), del(3, "k/0")])
        .await?;
    // A snapshot checkpoints the state it describes.
    let snap = sm.build_snapshot().await?;
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(3));
    // Applied, not checkpointed: a crash now loses these from the state machine (the log
    // still has them).
    sm.apply(vec![put(4, 0..10), del(5, "k/2")]).await?;
    let live = sm.catalog().kv_list("k/").map_err(sto_err)?;
    assert_eq!(live.len(), 110, "applied in memory");
    drop(sm);

    let mut sm = open()?;
    let (applied, _) = sm.applied_state().await?;
    assert_eq!(applied.map(|l| l.index), Some(3), "the checkpoint's index");
    let c = sm.catalog();
    let keys = c.kv_keys("k/", None).map_err(sto_err)?;
    assert_eq!(
        keys.len(),
        200,
        "k/100..k/299 and nothing of entries 4 and 5"
    );
    assert_eq!(keys.first().map(String::as_str), Some("k/100"));
    let e = c
        .kv_get("k/150")
        .map_err(sto_err)?
        .ok_or_else(|| sto_err("k/150 lost"))?;
    assert_eq!((e.value.as_slice(), e.modify_index), (&b"v2"[..], 2));
    assert_eq!(
        c.kv_get("k/250").map_err(sto_err)?.map(|e| e.value),
        Some(b"v1".to_vec())
    );
    // The index of a deleted prefix survives through its tombstones.
    assert_eq!(
        c.query(&crate::model::Query::KvGet {
            key: "k/050".into()
        })
        .map_err(sto_err)?
        .1,
        3
    );

    // Re-applying the log from there gives the state before the restart.
    sm.apply(vec![put(4, 0..10), del(5, "k/2")]).await?;
    assert_eq!(sm.catalog().kv_list("k/").map_err(sto_err)?, live);
    Ok(())
}

/// A registration as a log written before checks had a type holds it (postcard, spelled out
/// byte by byte so no type of today's can make the test agree with itself) still decodes and
/// applies, its check with an empty type.
#[test]
fn a_registration_from_an_older_log_still_applies() -> Result<(), StorageError> {
    use crate::codec::decode;
    use crate::model::{Check, Command, HealthStatus};
    use crate::store::mem::{Tables, WriteTxn};
    use crate::store::tables::{CHECKS, NODES};
    use crate::store::{apply_command, Changes};

    let s = |t: &str| [&[t.len() as u8], t.as_bytes()].concat();
    let bytes = [
        vec![3], // Command::Register, as it was numbered
        s("n1"),
        s(""),
        s("10.0.0.1"),
        s("dc1"),
        vec![0, 0, 0, 0], // no tagged addresses, no meta, create and modify index 0
        vec![0, 0, 1],    // skip_node_update false, no service, one check
        s("n1"),
        s("disk"),
        s("disk usage"),
        vec![0], // passing
        s("no notes"),
        s(""),
        s(""),
        s(""),
        vec![0, 0],
    ]
    .concat();
    let cmd: Command = decode(&bytes).map_err(StorageError::from)?;
    let db = Tables::default();
    let txn = WriteTxn::new(&db);
    assert!(apply_command(&txn, 5, cmd, &mut Changes::default())?.success);
    let db = txn.finish(None, Default::default());
    assert!(db.table(NODES).get("n1").is_some());
    let row = db.table(CHECKS).get("n1\0disk").expect("check stored");
    let check: Check = decode(row).map_err(StorageError::from)?;
    assert_eq!(
        (check.name.as_str(), check.status, check.notes.as_str()),
        ("disk usage", HealthStatus::Passing, "no notes")
    );
    assert_eq!((check.kind.as_str(), check.create_index), ("", 5));
    Ok(())
}
