//! String, list and key-pair helpers: `byKey`, `byTag`, `contains*`, `explode`, `in`,
//! `join`, `split`, `replaceAll`, `regex*`, case and trimming, `env`, `parse*`.

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::{FuncMap, Value};

use super::{arity, func};
use crate::template::value::{field, from_json, list, map, string, want_list, want_str};

pub(super) fn register(m: &mut FuncMap) {
    m.insert("byKey".into(), func(by_key));
    m.insert("byTag".into(), func(by_tag));
    m.insert(
        "contains".into(),
        func(|a| {
            arity("contains", a, 2, 2)?;
            Ok(Value::Bool(contained(&a[1], &a[0])))
        }),
    );
    for (name, ret_true, invert) in [
        ("containsAll", true, true),
        ("containsAny", false, false),
        ("containsNone", true, false),
        ("containsNotAll", false, true),
    ] {
        m.insert(
            name.into(),
            func(move |a| {
                arity(name, a, 2, 2)?;
                for v in want_list(name, &a[0])? {
                    if contained(&a[1], v) != invert {
                        return Ok(Value::Bool(!ret_true));
                    }
                }
                Ok(Value::Bool(ret_true))
            }),
        );
    }
    m.insert("explode".into(), func(explode));
    m.insert(
        "in".into(),
        func(|a| {
            arity("in", a, 2, 2)?;
            Ok(Value::Bool(contained(&a[0], &a[1])))
        }),
    );
    m.insert(
        "join".into(),
        func(|a| {
            arity("join", a, 2, 2)?;
            let sep = want_str("join", &a[0])?;
            let items = want_list("join", &a[1])?
                .iter()
                .map(|v| want_str("join", v))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(string(&items.join(sep)))
        }),
    );
    m.insert(
        "split".into(),
        func(|a| {
            arity("split", a, 2, 2)?;
            let (sep, s) = (want_str("split", &a[0])?, want_str("split", &a[1])?.trim());
            if s.is_empty() {
                return Ok(list(Vec::new()));
            }
            Ok(list(go_split(s, sep).map(string).collect()))
        }),
    );
    m.insert(
        "replaceAll".into(),
        func(|a| {
            arity("replaceAll", a, 3, 3)?;
            let [from, to, s] = strs3("replaceAll", a)?;
            Ok(string(&go_replace(s, from, to)))
        }),
    );
    m.insert(
        "regexMatch".into(),
        func(|a| {
            arity("regexMatch", a, 2, 2)?;
            let re = regex(want_str("regexMatch", &a[0])?)?;
            Ok(Value::Bool(re.is_match(want_str("regexMatch", &a[1])?)))
        }),
    );
    m.insert(
        "regexReplaceAll".into(),
        func(|a| {
            arity("regexReplaceAll", a, 3, 3)?;
            let [re, with, s] = strs3("regexReplaceAll", a)?;
            Ok(string(&regex(re)?.replace_all(s, with)))
        }),
    );
    str_fn(m, "toLower", |s| s.to_lowercase());
    str_fn(m, "toUpper", |s| s.to_uppercase());
    str_fn(m, "toTitle", title);
    str_fn(m, "trimSpace", |s| s.trim().to_string());
    for name in ["trim", "trimPrefix", "trimSuffix"] {
        m.insert(
            name.into(),
            func(move |a| {
                arity(name, a, 2, 2)?;
                let (cut, s) = (want_str(name, &a[0])?, want_str(name, &a[1])?);
                Ok(string(match name {
                    "trimPrefix" => s.strip_prefix(cut).unwrap_or(s),
                    "trimSuffix" => s.strip_suffix(cut).unwrap_or(s),
                    _ => s.trim_matches(|c| cut.contains(c)),
                }))
            }),
        );
    }
    m.insert(
        "env".into(),
        func(|a| {
            arity("env", a, 1, 1)?;
            Ok(string(
                &std::env::var(want_str("env", &a[0])?).unwrap_or_default(),
            ))
        }),
    );
    m.insert(
        "parseBool".into(),
        func(|a| {
            arity("parseBool", a, 1, 1)?;
            match want_str("parseBool", &a[0])? {
                "" => Ok(Value::Bool(false)),
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(Value::Bool(true)),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(Value::Bool(false)),
                s => Err(format!(
                    "parseBool: strconv.ParseBool: parsing {s:?}: invalid syntax"
                )),
            }
        }),
    );
    parse_num(m, "parseInt", "ParseInt", Value::Int);
    parse_num(m, "parseUint", "ParseUint", Value::Uint);
    parse_num(m, "parseFloat", "ParseFloat", Value::Float);
    m.insert(
        "parseJSON".into(),
        func(|a| {
            arity("parseJSON", a, 1, 1)?;
            match want_str("parseJSON", &a[0])? {
                "" => Ok(map(BTreeMap::new())),
                s => serde_json::from_str(s)
                    .map(|j| from_json(&j))
                    .map_err(|e| format!("parseJSON: {e}")),
            }
        }),
    );
}

/// `parseInt`, `parseUint`, `parseFloat`: the empty string is 0, as consul-template has it.
fn parse_num<T: std::str::FromStr + Default + 'static>(
    m: &mut FuncMap,
    name: &'static str,
    go: &'static str,
    make: fn(T) -> Value,
) {
    m.insert(
        name.into(),
        func(move |a| {
            arity(name, a, 1, 1)?;
            match want_str(name, &a[0])? {
                "" => Ok(make(T::default())),
                s => s
                    .parse()
                    .map(make)
                    .map_err(|_| format!("{name}: strconv.{go}: parsing {s:?}: invalid syntax")),
            }
        }),
    );
}

fn str_fn(m: &mut FuncMap, name: &'static str, f: fn(&str) -> String) {
    m.insert(
        name.into(),
        func(move |a| {
            arity(name, a, 1, 1)?;
            Ok(string(&f(want_str(name, &a[0])?)))
        }),
    );
}

fn strs3<'a>(name: &str, a: &'a [Value]) -> Result<[&'a str; 3], String> {
    Ok([
        want_str(name, &a[0])?,
        want_str(name, &a[1])?,
        want_str(name, &a[2])?,
    ])
}

fn regex(re: &str) -> Result<regex_lite::Regex, String> {
    regex_lite::Regex::new(re).map_err(|e| format!("error parsing regexp: {e}"))
}

/// Go's `strings.Split`: an empty separator splits into characters.
fn go_split<'a>(s: &'a str, sep: &'a str) -> Box<dyn Iterator<Item = &'a str> + 'a> {
    if sep.is_empty() {
        Box::new(s.char_indices().map(move |(i, c)| &s[i..i + c.len_utf8()]))
    } else {
        Box::new(s.split(sep))
    }
}

/// Go's `strings.Replace(s, from, to, -1)`: an empty `from` inserts `to` around every rune.
fn go_replace(s: &str, from: &str, to: &str) -> String {
    if !from.is_empty() {
        return s.replace(from, to);
    }
    let mut out = String::from(to);
    for c in s.chars() {
        out.push(c);
        out.push_str(to);
    }
    out
}

/// `cases.Title(language.Und, cases.NoLower)`: the first letter of each word upper-cased,
/// the rest left alone; an apostrophe does not start a word.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_start = true;
    for c in s.chars() {
        if at_start && c.is_alphanumeric() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_start = !(c.is_alphanumeric() || c == '\'' || c == '’');
    }
    out
}

/// consul-template's `in(l, v)`: an element of a list (ints with ints, floats with floats,
/// strings with strings), or a substring of a string.
fn contained(l: &Value, v: &Value) -> bool {
    match l {
        Value::List(items) => items.iter().any(|x| match (x, v) {
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            _ => false,
        }),
        Value::String(s) => matches!(v, Value::String(sub) if s.contains(&**sub)),
        _ => false,
    }
}

/// `byTag`: instances grouped by each of their tags (`Tags`, or a catalog service's
/// `ServiceTags`), in the order they came.
fn by_tag(a: &[Value]) -> Result<Value, String> {
    arity("byTag", a, 1, 1)?;
    let mut m: BTreeMap<Arc<str>, Vec<Value>> = BTreeMap::new();
    for item in want_list("byTag", &a[0])? {
        let tags = field(item, "Tags")
            .or_else(|| field(item, "ServiceTags"))
            .ok_or_else(|| format!("byTag: wrong argument type {}", item.type_name()))?;
        for t in want_list("byTag", tags)? {
            let t = want_str("byTag", t)?;
            m.entry(Arc::from(t)).or_default().push(item.clone());
        }
    }
    Ok(map(m.into_iter().map(|(k, v)| (k, list(v))).collect()))
}

/// A key pair's `Key` and `Value`.
fn pair_parts(p: &Value) -> Result<(&str, &Value), String> {
    let key = field(p, "Key")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("wrong argument type {}: want key pairs", p.type_name()))?;
    Ok((key, field(p, "Value").unwrap_or(&Value::Nil)))
}

/// `byKey`: pairs grouped by the first segment of their key, which is stripped; pairs with
/// nothing left after it are dropped.
fn by_key(a: &[Value]) -> Result<Value, String> {
    arity("byKey", a, 1, 1)?;
    let mut m: BTreeMap<Arc<str>, BTreeMap<Arc<str>, Value>> = BTreeMap::new();
    for p in want_list("byKey", &a[0])? {
        let (key, _) = pair_parts(p).map_err(|e| format!("byKey: {e}"))?;
        let (top, rest) = key.split_once('/').unwrap_or((key, ""));
        if rest.is_empty() {
            continue;
        }
        let mut fields = match p {
            Value::Map(f) => (**f).clone(),
            _ => BTreeMap::new(),
        };
        fields.insert(Arc::from("Key"), string(rest));
        m.entry(Arc::from(top))
            .or_default()
            .insert(Arc::from(rest), map(fields));
    }
    Ok(map(m.into_iter().map(|(k, v)| (k, map(v))).collect()))
}

/// `explode`: pairs into a nested map by their `/`-separated keys.
fn explode(a: &[Value]) -> Result<Value, String> {
    arity("explode", a, 1, 1)?;
    let mut root: BTreeMap<Arc<str>, Value> = BTreeMap::new();
    for p in want_list("explode", &a[0])? {
        let (key, value) = pair_parts(p).map_err(|e| format!("explode: {e}"))?;
        insert_path(&mut root, key, value.clone(), key)?;
    }
    Ok(map(root))
}

fn insert_path(
    m: &mut BTreeMap<Arc<str>, Value>,
    k: &str,
    v: Value,
    whole: &str,
) -> Result<(), String> {
    let Some((top, rest)) = k.split_once('/') else {
        if !k.is_empty() {
            m.insert(Arc::from(k), v);
        }
        return Ok(());
    };
    let entry = m
        .entry(Arc::from(top))
        .or_insert_with(|| map(BTreeMap::new()));
    let Value::Map(nested) = entry else {
        return Err(format!(
            "explode: not a map: {whole:?}: {top:?} already has value {:?}",
            entry.to_string()
        ));
    };
    let mut nested = (**nested).clone();
    insert_path(&mut nested, rest, v, k)?;
    *entry = map(nested);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_keeps_the_rest_of_each_word() {
        assert_eq!(title("hello wORLD it's-me"), "Hello WORLD It's-Me");
    }

    #[test]
    fn replace_with_an_empty_pattern_is_gos() {
        assert_eq!(go_replace("ab", "", "-"), "-a-b-");
    }
}
