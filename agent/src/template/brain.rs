//! The last answer to each query, shared by every template (consul-template's `Brain`), with
//! what consul-template does not keep: the failure of the last read, and the reset guard.
//!
//! The reset guard: when a query's `X-Consul-Index` goes backwards, the agent or cluster
//! answering lost its state (a wiped data dir, a rebuilt cluster) and its answers are no
//! longer a continuation of what was rendered. An empty answer then is not data: the query
//! is held (the templates using it keep their last file) until it answers with something
//! again or its index passes the one seen before.

use std::collections::HashMap;

use gotmpl::Value;

use super::deps::Dep;

#[derive(Debug, Default)]
struct Entry {
    /// The last answer the templates may use.
    value: Option<Value>,
    /// Why the last read failed, until one succeeds.
    error: Option<String>,
    /// Why the answer is held by the reset guard.
    hold: Option<String>,
    /// The highest index seen.
    high: u64,
}

/// Every query's last answer.
#[derive(Debug, Default)]
pub struct Brain {
    entries: HashMap<Dep, Entry>,
}

fn is_empty(v: &Value) -> bool {
    matches!(v, Value::Nil) || v.len() == Some(0)
}

impl Brain {
    /// What a template may render from `dep`: its answer, `None` before the first one, or
    /// the reason it may not be used (a failed read, a hold).
    pub fn state(&self, dep: &Dep) -> Result<Option<Value>, String> {
        let Some(e) = self.entries.get(dep) else {
            return Ok(None);
        };
        if let Some(err) = &e.error {
            return Err(err.clone());
        }
        if let Some(hold) = &e.hold {
            return Err(hold.clone());
        }
        Ok(e.value.clone())
    }

    /// Records a read of `dep` at `index` (0 when the source has no index); true when what
    /// templates see changed.
    pub fn record(&mut self, dep: &Dep, index: u64, result: Result<Value, String>) -> bool {
        let e = self.entries.entry(dep.clone()).or_default();
        let value = match result {
            Err(err) => {
                let changed = e.error.as_ref() != Some(&err);
                e.error = Some(err);
                return changed;
            }
            Ok(v) => v,
        };
        let was_error = e.error.take().is_some();
        let went_back = index != 0 && index < e.high;
        if went_back && is_empty(&value) {
            let hold = format!(
                "{}: the index went back from {} to {index} and the answer is empty: the \
                 agent or cluster may have lost its state; keeping the last file until the \
                 data is back",
                dep.display(),
                e.high
            );
            let changed = was_error || e.hold.is_none();
            e.hold = Some(hold);
            return changed;
        }
        let was_held = e.hold.take().is_some();
        // Data after a reset starts the new history.
        e.high = index;
        let changed = e.value.as_ref() != Some(&value);
        e.value = Some(value);
        changed || was_error || was_held
    }

    /// Forgets a query no template uses any more.
    pub fn forget(&mut self, dep: &Dep) {
        self.entries.remove(dep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::value::{list, string};

    #[test]
    fn an_empty_answer_after_the_index_went_back_is_held() {
        let mut b = Brain::default();
        let d = Dep::kv_list("hosts");
        assert!(b.record(&d, 50, Ok(list(vec![string("x")]))));
        assert!(b.record(&d, 3, Ok(list(Vec::new()))));
        let held = b.state(&d).expect_err("held");
        assert!(held.contains("went back from 50 to 3"), "{held}");
        // Data again: released, and the index restarts from there.
        assert!(b.record(&d, 4, Ok(list(vec![string("y")]))));
        assert_eq!(b.state(&d), Ok(Some(list(vec![string("y")]))));
    }

    #[test]
    fn a_failed_read_hides_the_old_answer() {
        let mut b = Brain::default();
        let d = Dep::kv_get("k");
        b.record(&d, 5, Ok(string("v")));
        assert!(b.record(&d, 0, Err("403 (Permission denied)".into())));
        assert!(b.state(&d).is_err());
        assert!(!b.record(&d, 0, Err("403 (Permission denied)".into())));
        assert!(b.record(&d, 6, Ok(string("v"))));
        assert_eq!(b.state(&d), Ok(Some(string("v"))));
    }
}
