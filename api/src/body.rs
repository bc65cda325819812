//! JSON request bodies read as Go's `encoding/json` reads them: a field name matches in any
//! case (`"node"` and `"NODE"` fill `Node`), so every body Consul accepts is accepted here.
//! Keys of user maps (`Meta`, `NodeMeta`, `TaggedAddresses`) and of the Connect fields kept as
//! sent (`Proxy`, `Connect`, a check's `Definition`) are data and stay as sent. The field
//! names come from [`crate::requests`], which holds every body type. A body that does not
//! parse gets the reason Go gives (`unexpected EOF`, `invalid character 'x' looking for
//! beginning of value`, `json: unknown field "X"`), which clients and scripts match on.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// Fields whose values are maps with keys of the caller's choosing, or kept as sent.
const USER_MAPS: [&str; 7] = [
    "Meta",
    "NodeMeta",
    "ServiceMeta",
    "TaggedAddresses",
    "Proxy",
    "Connect",
    "Definition",
];

/// Parses a JSON body into `T`, matching field names case-insensitively; serde's complaint
/// becomes a one-line 400.
pub(crate) fn body<T: DeserializeOwned>(b: &[u8]) -> ApiResult<T> {
    let fail = |e: serde_json::Error| {
        ApiError::BadRequest(format!("Request decode failed: {}", go_data_error(&e)))
    };
    let mut v = json_value(b)?;
    fold_keys(&mut v, crate::requests::field_names());
    serde_json::from_value(v).map_err(fail)
}

/// A decode error in Go's words where Go's are known: `json: unknown field "X"`.
fn go_data_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((field, _)) = rest.split_once('`') {
            return format!("json: unknown field {field:?}");
        }
    }
    msg
}

/// A syntax error in Go's words: `unexpected EOF` for a body cut short, `EOF` for an empty one,
/// `invalid character 'c' <where>` for a character out of place; `None` where serde's reason
/// has no Go counterpart.
fn go_syntax_error(b: &[u8], e: &serde_json::Error) -> Option<String> {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof if b.iter().all(u8::is_ascii_whitespace) => return Some("EOF".into()),
        Category::Eof => return Some("unexpected EOF".into()),
        Category::Syntax => {}
        _ => return None,
    }
    let msg = e.to_string();
    let place = [
        ("expected value", "looking for beginning of value"),
        (
            "key must be a string",
            "looking for beginning of object key string",
        ),
        ("expected `:`", "after object key"),
        ("expected `,` or `}`", "after object key:value pair"),
        ("expected `,` or `]`", "after array element"),
        ("trailing characters", "after top-level value"),
    ]
    .into_iter()
    .find_map(|(serde, go)| msg.starts_with(serde).then_some(go))?;
    // serde_json counts lines from 1 and the bytes of a line from 1.
    let line_start: usize = b
        .split(|c| *c == b'\n')
        .take(e.line().saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    let at = line_start + e.column().checked_sub(1)?;
    let c = std::str::from_utf8(b.get(at..)?).ok()?.chars().next()?;
    let quoted = match c {
        '\'' => r"'\''".to_string(),
        '"' => "'\"'".to_string(),
        c if c.is_ascii_graphic() || c == ' ' => format!("'{c}'"),
        c => format!("'{}'", c.escape_default()),
    };
    Some(format!("invalid character {quoted} {place}"))
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
            go_syntax_error(b, &e).unwrap_or_else(|| e.to_string())
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
    fn syntax_errors_read_as_go_writes_them() {
        let why = |b: &str| match json_value(b.as_bytes()) {
            Err(ApiError::BadRequest(e)) => e,
            other => panic!("{b}: {other:?}"),
        };
        for (body, go) in [
            ("", "EOF"),
            ("  \n", "EOF"),
            ("{\"Name\": ", "unexpected EOF"),
            ("[{", "unexpected EOF"),
            (
                "{nope",
                "invalid character 'n' looking for beginning of object key string",
            ),
            ("{\"a\" 1}", "invalid character '1' after object key"),
            (
                "{\"a\": 1 2}",
                "invalid character '2' after object key:value pair",
            ),
            ("[1 2]", "invalid character '2' after array element"),
            ("{}\n x", "invalid character 'x' after top-level value"),
            (
                "{\"a\": x}",
                "invalid character 'x' looking for beginning of value",
            ),
            (
                "{'a': 1}",
                r"invalid character '\'' looking for beginning of object key string",
            ),
        ] {
            assert_eq!(
                why(body),
                format!("Request decode failed: {go}"),
                "{body:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_read_as_go_writes_them() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Strict {
            #[serde(rename = "Node")]
            node: Option<String>,
        }
        let e = serde_json::from_str::<Strict>(r#"{"Bogus": 1}"#).unwrap_err();
        assert_eq!(go_data_error(&e), r#"json: unknown field "Bogus""#);
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
