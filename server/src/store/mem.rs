//! The state machine's tables in memory: persistent ordered maps, so a read or a snapshot
//! holds a consistent copy of every table for the price of a few reference counts, and a
//! batch is applied to a copy that replaces the live tables only once the whole batch has
//! gone in (a failed batch leaves nothing behind).
//!
//! `state.redb` holds a checkpoint of these tables (see `raft::state_machine`): a write is
//! one map insert here instead of a copy-on-write B-tree page in a file, and the file gets
//! only what changed between checkpoints.

use std::cell::{RefCell, RefMut};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use openraft::{BasicNode, LogId, StoredMembership};

use super::error::{Result, StoreError};

/// One table: keys to encoded rows. Keys are shared, not owned: applying a write copies the
/// map nodes on its path, and a copied node then shares its keys rather than allocating them
/// anew.
pub(crate) type Rows = imbl::OrdMap<Arc<str>, Arc<[u8]>>;
/// The per-table and per-service modification indexes (see [`super::tables::INDEXES`]).
pub(crate) type Indexes = imbl::OrdMap<String, u64>;

/// A table of the state machine: its slot here, and its name in `state.redb`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TableId {
    pub(crate) slot: usize,
    pub(crate) name: &'static str,
}

pub(crate) const TABLE_COUNT: usize = 20;

/// Every table at one applied index. Cloning is cheap: the maps share their nodes.
#[derive(Clone, Default)]
pub(crate) struct Tables {
    rows: [Rows; TABLE_COUNT],
    pub(crate) indexes: Indexes,
    /// The Raft position these tables reflect, and the membership applied with it: openraft's
    /// own types, as the store knows the log only as far as where it has applied it.
    pub(crate) last_applied: Option<LogId<u64>>,
    pub(crate) membership: StoredMembership<u64, BasicNode>,
}

impl Tables {
    pub(crate) fn table(&self, t: TableId) -> &Rows {
        &self.rows[t.slot]
    }

    pub(crate) fn table_mut(&mut self, t: TableId) -> &mut Rows {
        &mut self.rows[t.slot]
    }

    /// The index recorded under `name` in [`super::tables::INDEXES`], 0 if none.
    pub(crate) fn index(&self, name: &str) -> u64 {
        self.indexes.get(name).copied().unwrap_or(0)
    }
}

/// A batch being applied: a copy of the tables, each of which can be borrowed on its own so
/// that the apply code can hold two tables (say, KV and its session index) at once.
pub(crate) struct WriteTxn {
    rows: [RefCell<Rows>; TABLE_COUNT],
    indexes: RefCell<Indexes>,
    /// The Raft term of the entry being applied: a restore's chunks belong to one term.
    term: std::cell::Cell<u64>,
}

impl WriteTxn {
    pub(crate) fn new(from: &Tables) -> Self {
        WriteTxn {
            rows: from.rows.clone().map(RefCell::new),
            indexes: RefCell::new(from.indexes.clone()),
            term: Default::default(),
        }
    }

    /// Sets the term of the entry applied next.
    pub(crate) fn set_term(&self, term: u64) {
        self.term.set(term);
    }

    pub(crate) fn term(&self) -> u64 {
        self.term.get()
    }

    /// Borrows one table for writing. A table already borrowed is an error, as redb's
    /// `open_table` on a table that is open.
    pub(crate) fn open_table(&self, t: TableId) -> Result<RefMut<'_, Rows>> {
        self.rows[t.slot]
            .try_borrow_mut()
            .map_err(|_| StoreError::TableOpen(t.name))
    }

    pub(crate) fn indexes(&self) -> Result<RefMut<'_, Indexes>> {
        self.indexes
            .try_borrow_mut()
            .map_err(|_| StoreError::IndexesOpen)
    }

    /// The tables as this batch left them, to be published.
    pub(crate) fn finish(
        self,
        last_applied: Option<LogId<u64>>,
        membership: StoredMembership<u64, BasicNode>,
    ) -> Tables {
        Tables {
            rows: self.rows.map(RefCell::into_inner),
            indexes: self.indexes.into_inner(),
            last_applied,
            membership,
        }
    }
}

/// The rows with keys from `lo` (inclusive) to `hi` (exclusive; the end of the table if none).
pub(crate) fn span<'a>(
    rows: &'a Rows,
    lo: &str,
    hi: Option<&str>,
) -> impl Iterator<Item = (&'a Arc<str>, &'a Arc<[u8]>)> + 'a {
    let end = match hi {
        Some(hi) => Bound::Excluded(hi),
        None => Bound::Unbounded,
    };
    rows.range::<_, str>((Bound::Included(lo), end))
}

/// Inserts a row.
pub(crate) fn put_raw(rows: &mut Rows, key: &str, value: &[u8]) {
    rows.insert(Arc::from(key), Arc::from(value));
}

/// Removes the rows in `lo..hi` (or `lo..` without `hi`) for which `keep` says false.
pub(crate) fn retain_in(
    rows: &mut Rows,
    lo: &str,
    hi: Option<&str>,
    mut keep: impl FnMut(&str, &[u8]) -> bool,
) {
    let gone: Vec<Arc<str>> = span(rows, lo, hi)
        .filter(|(k, v)| !keep(k, v))
        .map(|(k, _)| k.clone())
        .collect();
    for k in gone {
        rows.remove(&*k);
    }
}

/// The tables as last applied, shared by the state machine, which replaces them after each
/// batch, and every reader, which takes a snapshot.
#[derive(Default)]
pub(crate) struct Live(RwLock<Tables>);

impl Live {
    pub(crate) fn snapshot(&self) -> Tables {
        crate::sync::read(&self.0).clone()
    }

    /// The index of one table, read without a snapshot.
    pub(crate) fn index(&self, name: &str) -> u64 {
        crate::sync::read(&self.0).index(name)
    }

    pub(crate) fn publish(&self, tables: Tables) {
        let old = std::mem::replace(&mut *crate::sync::write(&self.0), tables);
        // Freed outside the lock: the nodes only the old tables held go with them.
        drop(old);
    }
}
