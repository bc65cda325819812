//! The autopilot configuration: one row, replaced whole, with Consul's CAS rule.

use super::{get, put, Apply, Result};
use crate::model::AutopilotConfig;
use crate::store::tables::{AUTOPILOT, AUTOPILOT_ROW, IDX_AUTOPILOT};

impl Apply<'_> {
    /// Replaces the configuration; with `cas`, only if the stored ModifyIndex is that (0: only
    /// if none is stored). Fails, changing nothing, otherwise.
    pub(super) fn autopilot_set(
        &mut self,
        mut config: AutopilotConfig,
        cas: Option<u64>,
    ) -> Result<bool> {
        let old = get::<AutopilotConfig>(&*self.table(AUTOPILOT)?, AUTOPILOT_ROW)?;
        if let Some(cas) = cas {
            if old.as_ref().map_or(0, |o| o.modify_index) != cas {
                return Ok(false);
            }
        }
        config.create_index = old.map_or(self.index, |o| o.create_index);
        config.modify_index = self.index;
        put(&mut *self.table(AUTOPILOT)?, AUTOPILOT_ROW, &config)?;
        self.bump(IDX_AUTOPILOT)?;
        Ok(true)
    }
}
