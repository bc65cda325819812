//! Rows in the formats of older data dirs, upgraded when tables are loaded from a checkpoint
//! or a snapshot, so everything past loading reads the current format only (the Raft log's
//! older commands are upgraded as they are applied: see `model::legacy`).

use super::error::Result;
use super::mem::{put_raw, Tables};
use super::tables::CHECKS;
use crate::codec::{decode, encode};
use crate::model::legacy::CheckV1;
use crate::model::Check;

/// Rewrites, in memory, every check row written before checks had a type. An old row is
/// shorter than any current one, so it never decodes as a current [`Check`]; a current row
/// always does.
pub(crate) fn upgrade_rows(t: &mut Tables) -> Result<()> {
    let mut upgraded = Vec::new();
    for (k, v) in t.table(CHECKS).iter() {
        if decode::<Check>(v).is_err() {
            let old: CheckV1 = decode(v)?;
            upgraded.push((k.clone(), encode(&Check::from(old))?));
        }
    }
    if !upgraded.is_empty() {
        tracing::info!(
            checks = upgraded.len(),
            "upgraded check rows to the current format"
        );
    }
    let rows = t.table_mut(CHECKS);
    for (k, v) in upgraded {
        put_raw(rows, &k, &v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HealthStatus;

    #[test]
    fn an_old_check_row_is_upgraded_and_a_current_one_left_alone() {
        let old = CheckV1 {
            node: "n1".into(),
            id: "web".into(),
            name: "web".into(),
            status: HealthStatus::Passing,
            service_id: "web1".into(),
            create_index: 3,
            modify_index: 4,
            ..Default::default()
        };
        let current = Check {
            node: "n1".into(),
            id: "disk".into(),
            kind: "script".into(),
            interval: "10s".into(),
            ..Default::default()
        };
        let mut t = Tables::default();
        put_raw(t.table_mut(CHECKS), "n1\0web", &encode(&old).unwrap());
        put_raw(t.table_mut(CHECKS), "n1\0disk", &encode(&current).unwrap());
        upgrade_rows(&mut t).unwrap();
        let row = |k: &str| decode::<Check>(t.table(CHECKS).get(k).unwrap()).unwrap();
        assert_eq!(row("n1\0web"), Check::from(old));
        assert_eq!(row("n1\0web").service_id, "web1");
        assert_eq!(row("n1\0disk"), current);
    }
}
