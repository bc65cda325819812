//! Network coordinates: the leader's batched updates, and a node's coordinate leaving with
//! the node. As Consul's state store, an update for a node the catalog does not hold is
//! dropped: coordinates are cleaned up only by deregistering their node.

use super::{put, Apply, Result};
use crate::model::NodeCoordinate;
use crate::store::tables::{COORDINATES, IDX_COORDINATES, NODES};

impl Apply<'_> {
    pub(super) fn coordinate_batch_update(&mut self, updates: Vec<NodeCoordinate>) -> Result<bool> {
        let mut changed = false;
        for u in updates {
            if !u.coord.is_valid() || !self.table(NODES)?.contains_key(u.node.as_str()) {
                continue;
            }
            put(&mut *self.table(COORDINATES)?, &u.node, &u.coord)?;
            changed = true;
        }
        if changed {
            self.bump(IDX_COORDINATES)?;
        }
        Ok(true)
    }

    /// Removes a deregistered node's coordinate.
    pub(super) fn remove_coordinate(&mut self, node: &str) -> Result<()> {
        if self.table(COORDINATES)?.remove(node).is_some() {
            self.bump(IDX_COORDINATES)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Command, Coordinate, Node, NodeCoordinate, Registration};
    use crate::store::apply::acl::tests::apply as apply_ok;
    use crate::store::mem::Tables;
    use crate::store::tables::{COORDINATES, IDX_COORDINATES};

    fn apply(db: &mut Tables, index: u64, cmd: Command) {
        assert!(apply_ok(db, index, cmd));
    }

    fn update(node: &str) -> Command {
        Command::CoordinateBatchUpdate(vec![NodeCoordinate {
            node: node.into(),
            coord: Coordinate::origin(8, 1.5, 10.0e-6),
        }])
    }

    #[test]
    fn updates_need_the_node_and_leave_with_it() {
        let mut db = Tables::default();
        apply(&mut db, 1, update("n1"));
        assert!(db.table(COORDINATES).is_empty(), "unknown node dropped");
        assert_eq!(db.index(IDX_COORDINATES), 0);

        let node = Node {
            name: "n1".into(),
            ..Node::default()
        };
        let reg = Registration {
            node,
            skip_node_update: false,
            service: None,
            checks: Vec::new(),
        };
        apply(&mut db, 2, Command::Register(Box::new(reg)));
        apply(&mut db, 3, update("n1"));
        assert!(db.table(COORDINATES).contains_key("n1"));
        assert_eq!(db.index(IDX_COORDINATES), 3);

        let dereg = Command::Deregister {
            node: "n1".into(),
            service_id: None,
            check_id: None,
        };
        apply(&mut db, 4, dereg);
        assert!(db.table(COORDINATES).is_empty(), "removed with its node");
        assert_eq!(db.index(IDX_COORDINATES), 4);
    }
}
