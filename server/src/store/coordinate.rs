//! Reading network coordinates: every node's, for `/v1/coordinate/nodes` and `?near` sorting.

use super::catalog::Catalog;
use super::error::StoreError;
use super::tables::COORDINATES;
use crate::codec::decode;
use crate::model::NodeCoordinate;
use crate::Result;

impl Catalog {
    /// Every stored coordinate, by node name.
    pub fn coordinates(&self) -> Result<Vec<NodeCoordinate>> {
        let snap = self.read();
        let mut out = Vec::new();
        for (node, v) in snap.table(COORDINATES).iter() {
            out.push(NodeCoordinate {
                node: node.to_string(),
                coord: decode(v).map_err(StoreError::from)?,
            });
        }
        Ok(out)
    }
}
