//! Reading the autopilot configuration.

use super::catalog::Catalog;
use super::error::StoreError;
use super::tables::{AUTOPILOT, AUTOPILOT_ROW};
use crate::codec::decode;
use crate::model::AutopilotConfig;
use crate::Result;

impl Catalog {
    /// The stored autopilot configuration; `None` until a leader has seeded it.
    pub fn autopilot_config(&self) -> Result<Option<AutopilotConfig>> {
        match self.read().table(AUTOPILOT).get(AUTOPILOT_ROW) {
            Some(v) => Ok(Some(decode(v).map_err(StoreError::from)?)),
            None => Ok(None),
        }
    }
}
