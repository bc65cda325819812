//! JSON request bodies read as Go's `encoding/json` reads them: a field name matches in any
//! case (`"node"` and `"NODE"` fill `Node`), so every body Consul accepts is accepted here.
//! Keys of user maps (`Meta`, `NodeMeta`, `TaggedAddresses`) are data and stay as sent. The
//! field names come from [`crate::requests`], which holds every body type.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// Fields whose values are maps with keys of the caller's choosing.
const USER_MAPS: [&str; 3] = ["Meta", "NodeMeta", "TaggedAddresses"];

/// Parses a JSON body into `T`, matching field names case-insensitively; serde's complaint
/// becomes a one-line 400.
pub(crate) fn body<T: DeserializeOwned>(b: &[u8]) -> ApiResult<T> {
    let fail = |e: serde_json::Error| ApiError::BadRequest(format!("Request decode failed: {e}"));
    let mut v = json_value(b)?;
    fold_keys(&mut v, crate::requests::field_names());
    serde_json::from_value(v).map_err(fail)
}

/// Deepest nesting of arrays and objects a request body may have: serde_json's own limit,
/// which keeps parsing, and every walk over the parsed value, off the end of the stack.
pub(crate) const MAX_JSON_DEPTH: usize = 127;

/// Parses a JSON request body; the 400 says where it failed, and names the depth limit when
/// that is what it met.
pub(crate) fn json_value(b: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(b).map_err(|e| {
        let why = if e.to_string().starts_with("recursion limit exceeded") {
            format!(
                "JSON nests deeper than {MAX_JSON_DEPTH} levels of arrays and objects (at line {} \
                 column {})",
                e.line(),
                e.column()
            )
        } else {
            e.to_string()
        };
        ApiError::BadRequest(format!("Request decode failed: {why}"))
    })
}

/// Renames every object key that matches a known field name but for case to that name.
fn fold_keys(v: &mut Value, names: &HashMap<String, &'static str>) {
    match v {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let Some(&canon) = names.get(&k.to_ascii_lowercase()) else {
                    continue;
                };
                // A key spelled exactly as the field wins over one that matches but for case.
                if canon != k && !map.contains_key(canon) {
                    if let Some(val) = map.remove(&k) {
                        map.insert(canon.to_string(), val);
                    }
                }
            }
            for (k, val) in map.iter_mut() {
                if !USER_MAPS.contains(&k.as_str()) {
                    fold_keys(val, names);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| fold_keys(i, names)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_field_names_but_not_user_map_keys() {
        let names: HashMap<String, &'static str> = ["Node", "Service", "Meta", "Port"]
            .into_iter()
            .map(|n| (n.to_ascii_lowercase(), n))
            .collect();
        let mut v = serde_json::json!({
            "node": "n1", "Node": "exact", "SERVICE": {"port": 80, "meta": {"node": "x"}},
            "other": 1
        });
        fold_keys(&mut v, &names);
        assert_eq!(
            v,
            serde_json::json!({
                "node": "n1", "Node": "exact", "Service": {"Port": 80, "Meta": {"node": "x"}},
                "other": 1
            })
        );
    }

    #[test]
    fn names_the_depth_limit() {
        let deep = format!("{}{}", "[".repeat(128), "]".repeat(128));
        let Err(ApiError::BadRequest(e)) = json_value(deep.as_bytes()) else {
            panic!("accepted");
        };
        assert!(e.contains("deeper than 127 levels"), "{e}");
        let ok = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(json_value(ok.as_bytes()).is_ok());
    }
}
