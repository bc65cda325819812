//! Building and reading the engine's values: JSON in and out as Go's `encoding/json` does
//! for `interface{}` (numbers are float64, object keys sorted on output), and the small
//! constructors the data sources and helpers share.

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::Value;
use serde_json::Value as Json;

pub fn string(s: &str) -> Value {
    Value::String(Arc::from(s))
}

pub fn list(items: Vec<Value>) -> Value {
    Value::List(Arc::from(items))
}

pub fn map(m: BTreeMap<Arc<str>, Value>) -> Value {
    Value::Map(Arc::new(m))
}

/// JSON as Go's `json.Unmarshal` into `interface{}` gives it: every number a float64.
pub fn from_json(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => string(s),
        Json::Array(a) => list(a.iter().map(from_json).collect()),
        Json::Object(o) => map(o
            .iter()
            .map(|(k, v)| (Arc::from(k.as_str()), from_json(v)))
            .collect()),
    }
}

/// A value as JSON, as Go's `json.Marshal` writes it: map keys sorted, integral floats
/// without a fraction.
pub fn to_json(v: &Value) -> Result<Json, String> {
    Ok(match v {
        Value::Nil => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(n) => Json::from(*n),
        Value::Uint(n) => Json::from(*n),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => Json::from(*f as i64),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .ok_or_else(|| format!("json: unsupported value: {f}"))?,
        Value::String(s) => Json::String(s.to_string()),
        Value::List(items) => Json::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| Ok((k.to_string(), to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Function(_) => return Err("json: unsupported type: func".into()),
    })
}

/// Go's `json.Marshal` escapes `<`, `>` and `&` for HTML safety; consul-template's `toJSON`
/// keeps that.
pub fn go_json_escape(s: &str) -> String {
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The string in a value, as a Go function taking `string` would demand it.
pub fn want_str<'a>(func: &str, v: &'a Value) -> Result<&'a str, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(format!(
            "{func}: wrong type of argument: expected string, got {}",
            other.type_name()
        )),
    }
}

/// A list's items; `Nil` is an empty list, as a nil slice is in Go.
pub fn want_list<'a>(func: &str, v: &'a Value) -> Result<&'a [Value], String> {
    match v {
        Value::List(items) => Ok(items),
        Value::Nil => Ok(&[]),
        other => Err(format!(
            "{func}: wrong type of argument: expected a list, got {}",
            other.type_name()
        )),
    }
}

/// A map field of a record value (`.Key`, `.Tags`).
pub fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Map(m) => m.get(name),
        _ => None,
    }
}
