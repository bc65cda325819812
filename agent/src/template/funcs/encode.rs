//! Encodings: `toJSON`/`toJSONPretty` (Go's `json.Marshal`: sorted keys, `<>&` escaped),
//! `toYAML` (yaml.v2's layout for maps, lists and scalars), base64, `sha256Hex`, and
//! `timestamp` with Go's reference-time layouts.

use gotmpl::{FuncMap, Value};

use super::{arity, func};
use crate::template::value::{go_json_escape, string, to_json, want_str};

pub(super) fn register(m: &mut FuncMap) {
    for (name, pretty) in [("toJSON", false), ("toJSONPretty", true)] {
        m.insert(
            name.into(),
            func(move |a| {
                arity(name, a, 1, 1)?;
                let j = to_json(&a[0]).map_err(|e| format!("{name}: {e}"))?;
                let s = if pretty {
                    serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?
                } else {
                    j.to_string()
                };
                Ok(string(&go_json_escape(&s)))
            }),
        );
    }
    m.insert(
        "toYAML".into(),
        func(|a| {
            arity("toYAML", a, 1, 1)?;
            let mut out = String::new();
            yaml(&a[0], 0, &mut out);
            Ok(string(out.trim()))
        }),
    );
    b64(
        m,
        "base64Encode",
        &base64::engine::general_purpose::STANDARD,
        true,
    );
    b64(
        m,
        "base64Decode",
        &base64::engine::general_purpose::STANDARD,
        false,
    );
    b64(
        m,
        "base64URLEncode",
        &base64::engine::general_purpose::URL_SAFE,
        true,
    );
    b64(
        m,
        "base64URLDecode",
        &base64::engine::general_purpose::URL_SAFE,
        false,
    );
    m.insert(
        "sha256Hex".into(),
        func(|a| {
            arity("sha256Hex", a, 1, 1)?;
            let d = ring::digest::digest(
                &ring::digest::SHA256,
                want_str("sha256Hex", &a[0])?.as_bytes(),
            );
            Ok(string(
                &d.as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            ))
        }),
    );
    m.insert(
        "timestamp".into(),
        func(|a| {
            arity("timestamp", a, 0, 1)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Ok(string(&match a.first() {
                None => go_format(now, "2006-01-02T15:04:05Z07:00"),
                Some(v) if want_str("timestamp", v)? == "unix" => now.as_secs().to_string(),
                Some(v) => go_format(now, want_str("timestamp", v)?),
            }))
        }),
    );
}

fn b64(
    m: &mut FuncMap,
    name: &'static str,
    engine: &'static base64::engine::GeneralPurpose,
    encode: bool,
) {
    use base64::Engine;
    m.insert(
        name.into(),
        func(move |a| {
            arity(name, a, 1, 1)?;
            let s = want_str(name, &a[0])?;
            if encode {
                return Ok(string(&engine.encode(s)));
            }
            let bytes = engine.decode(s).map_err(|e| format!("{name}: {e}"))?;
            Ok(string(&String::from_utf8_lossy(&bytes)))
        }),
    );
}

/// A scalar as yaml.v2 writes it: plain unless it would read back as something else.
fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Nil => "null".into(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && !matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~" | "y" | "n"
                )
                && s.parse::<f64>().is_err()
                && s.chars()
                    .all(|c| c.is_alphanumeric() || " _-./".contains(c))
                && !s.starts_with([' ', '-', '.'])
                && !s.ends_with(' ');
            if plain {
                s.to_string()
            } else {
                serde_json::Value::String(s.to_string()).to_string()
            }
        }
        other => match to_json(other) {
            Ok(j) => j.to_string(),
            Err(e) => e,
        },
    }
}

/// yaml.v2's block layout: maps `key: value` with nested blocks indented two spaces, list
/// items `- ` at their parent's indentation, empty collections as `{}` and `[]`.
fn yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Map(m) if !m.is_empty() => {
            for (k, item) in m.iter() {
                out.push_str(&format!("{pad}{}:", yaml_scalar(&string(k))));
                match item {
                    Value::Map(n) if !n.is_empty() => {
                        out.push('\n');
                        yaml(item, indent + 2, out);
                    }
                    Value::List(l) if !l.is_empty() => {
                        out.push('\n');
                        yaml(item, indent, out);
                    }
                    _ => {
                        out.push(' ');
                        yaml(item, 0, out);
                    }
                }
            }
        }
        Value::List(l) if !l.is_empty() => {
            for item in l.iter() {
                out.push_str(&format!("{pad}-"));
                match item {
                    Value::Map(n) if !n.is_empty() => {
                        let mut inner = String::new();
                        yaml(item, indent + 2, &mut inner);
                        out.push(' ');
                        out.push_str(inner.trim_start());
                    }
                    Value::List(n) if !n.is_empty() => {
                        out.push('\n');
                        yaml(item, indent + 2, out);
                    }
                    _ => {
                        out.push(' ');
                        yaml(item, 0, out);
                    }
                }
            }
        }
        Value::Map(_) => out.push_str(&format!("{pad}{{}}\n")),
        Value::List(_) => out.push_str(&format!("{pad}[]\n")),
        scalar => out.push_str(&format!("{pad}{}\n", yaml_scalar(scalar))),
    }
}

/// Days since 1970-01-01 into (year, month, day) (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];

/// A UTC time in a Go layout (`2006-01-02 15:04:05`, `Jan`, `Mon`, `MST`, `Z07:00`, …).
fn go_format(since_epoch: std::time::Duration, layout: &str) -> String {
    let secs = since_epoch.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let (y, mo, d) = civil(days);
    let tod = secs.rem_euclid(86_400);
    let (h, mi, s) = (tod / 3600, tod / 60 % 60, tod % 60);
    let month = MONTHS[(mo - 1) as usize];
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let tokens: [(&str, String); 23] = [
        ("January", month.into()),
        ("Monday", weekday.into()),
        ("2006", format!("{y:04}")),
        ("Z07:00", "Z".into()),
        ("-07:00", "+00:00".into()),
        ("Z0700", "Z".into()),
        ("-0700", "+0000".into()),
        ("Jan", month[..3].into()),
        ("Mon", weekday[..3].into()),
        ("MST", "UTC".into()),
        (".000", format!(".{:03}", since_epoch.subsec_millis())),
        ("15", format!("{h:02}")),
        ("06", format!("{:02}", y % 100)),
        ("01", format!("{mo:02}")),
        ("02", format!("{d:02}")),
        ("_2", format!("{d:>2}")),
        ("03", format!("{:02}", (h + 11) % 12 + 1)),
        ("04", format!("{mi:02}")),
        ("05", format!("{s:02}")),
        ("PM", if h >= 12 { "PM" } else { "AM" }.into()),
        ("pm", if h >= 12 { "pm" } else { "am" }.into()),
        ("1", mo.to_string()),
        ("2", d.to_string()),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (tok, val) in &tokens {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::value::{list, map};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[test]
    fn go_layouts() {
        let t = std::time::Duration::from_secs(1_136_214_245); // 2006-01-02T15:04:05Z
        assert_eq!(
            go_format(t, "2006-01-02T15:04:05Z07:00"),
            "2006-01-02T15:04:05Z"
        );
        assert_eq!(go_format(t, "Mon Jan _2 03:04PM"), "Mon Jan  2 03:04PM");
    }

    #[test]
    fn yaml_layout_is_yaml_v2s() {
        let v = map(BTreeMap::from([
            (Arc::from("b"), list(vec![string("x"), string("true")])),
            (
                Arc::from("a"),
                map(BTreeMap::from([(Arc::from("c"), string("1"))])),
            ),
            (Arc::from("e"), map(BTreeMap::new())),
        ]));
        let mut out = String::new();
        yaml(&v, 0, &mut out);
        assert_eq!(out, "a:\n  c: \"1\"\nb:\n- x\n- \"true\"\ne: {}\n");
    }
}
