//! Prepared queries: set (create or replace) and delete, and the deletion of those bound to
//! a session when it is destroyed.

use super::{get, put, Apply};
use crate::codec::decode;
use crate::model::PreparedQuery;
use crate::prepared::check_set;
use crate::store::error::Result;
use crate::store::tables::*;

impl Apply<'_> {
    fn prepared_queries(&self) -> Result<Vec<PreparedQuery>> {
        let t = self.table(PREPARED_QUERIES)?;
        let mut out = Vec::new();
        for (_, v) in t.iter() {
            out.push(decode(v)?);
        }
        Ok(out)
    }

    /// Stores `q` if its name, template prefix and session allow it ([`check_set`]); keeps
    /// an existing query's create index.
    pub(super) fn prepared_set(&mut self, mut q: PreparedQuery) -> Result<bool> {
        let session_exists = q.session.is_empty() || self.session_exists(&q.session)?;
        if check_set(&self.prepared_queries()?, &q, session_exists).is_err() {
            return Ok(false);
        }
        let existing = get::<PreparedQuery>(&*self.table(PREPARED_QUERIES)?, &q.id)?;
        q.create_index = existing.map_or(self.index, |e| e.create_index);
        q.modify_index = self.index;
        put(&mut *self.table(PREPARED_QUERIES)?, &q.id.clone(), &q)?;
        self.bump(IDX_PREPARED)?;
        Ok(true)
    }

    pub(super) fn prepared_delete(&mut self, id: &str) -> Result<bool> {
        if self.table(PREPARED_QUERIES)?.remove(id).is_some() {
            self.bump(IDX_PREPARED)?;
        }
        Ok(true)
    }

    /// Deletes the queries bound to session `id`, which is being destroyed.
    pub(super) fn prepared_delete_for_session(&mut self, id: &str) -> Result<()> {
        for q in self.prepared_queries()? {
            if q.session == id {
                self.prepared_delete(&q.id)?;
            }
        }
        Ok(())
    }
}
