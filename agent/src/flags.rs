//! Command-line flags the way Go's `flag` package reads them, so Consul scripts work as they
//! are: `-flag`, `--flag`, `-flag=value`, `-flag value`; parsing stops at the first
//! positional argument or at `--`. Shared by the agent's start-up flags (`config`) and the
//! client commands (`cli`), so it sits beside both.

use std::collections::HashMap;

/// A flag the command line got wrong, worded as Go's `flag` package words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("flag provided but not defined: -{0}")]
    Undefined(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid boolean value {value:?} for -{name}")]
    NotABool { name: String, value: String },
    #[error("invalid value {value:?} for flag -{name}: not a number")]
    NotANumber { name: String, value: String },
}

/// Callers whose own errors are still strings take the message as it reads.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `-flag` or `-flag=true|false`.
    Bool,
    /// `-flag value` or `-flag=value`; the last one wins.
    Value,
    /// Like `Value`, but every occurrence is kept (`-retry-join a -retry-join b`).
    Multi,
}

#[derive(Debug, Default)]
pub struct Parsed {
    values: HashMap<String, Vec<String>>,
    pub positional: Vec<String>,
}

impl Parsed {
    pub fn bool(&self, name: &str) -> bool {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .is_some_and(|v| v == "true")
    }

    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    pub fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A numeric flag, with an error naming the flag.
    pub fn num<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, Error> {
        match self.value(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| Error::NotANumber {
                name: name.to_string(),
                value: v.to_string(),
            }),
        }
    }
}

/// Parses `args` against `spec`. Errors name the offending flag as Go's `flag` package does.
pub fn parse(args: &[String], spec: &[(&str, Kind)]) -> Result<Parsed, Error> {
    parse_with(args, |name| {
        spec.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    })
}

/// Parses `args`, asking `kind_of` how each flag named takes its value (`None`: undefined).
pub fn parse_with(
    args: &[String],
    kind_of: impl Fn(&str) -> Option<Kind>,
) -> Result<Parsed, Error> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            out.positional.extend(args[i + 1..].iter().cloned());
            break;
        }
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            out.positional.extend(args[i..].iter().cloned());
            break;
        };
        if body.is_empty() {
            // A lone "-" is a positional (stdin for `kv put`).
            out.positional.extend(args[i..].iter().cloned());
            break;
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(kind) = kind_of(name) else {
            return Err(Error::Undefined(name.to_string()));
        };
        let value = match (kind, inline) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(v)) => match v.as_str() {
                "true" | "1" | "t" | "T" | "TRUE" | "True" => "true".to_string(),
                "false" | "0" | "f" | "F" | "FALSE" | "False" => "false".to_string(),
                _ => {
                    return Err(Error::NotABool {
                        name: name.to_string(),
                        value: v,
                    })
                }
            },
            (_, Some(v)) => v,
            (_, None) => {
                i += 1;
                match args.get(i) {
                    Some(v) => v.clone(),
                    None => return Err(Error::MissingValue(name.to_string())),
                }
            }
        };
        let slot = out.values.entry(name.to_string()).or_default();
        if kind == Kind::Multi {
            slot.push(value);
        } else {
            *slot = vec![value];
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    const SPEC: &[(&str, Kind)] = &[
        ("enable", Kind::Bool),
        ("status", Kind::Value),
        ("retry-join", Kind::Multi),
    ];

    #[test]
    fn accepts_go_and_gnu_spellings() {
        let p = parse(
            &args("-enable --status=alive -retry-join a --retry-join=b x -y"),
            SPEC,
        )
        .expect("parses");
        assert!(p.bool("enable"));
        assert_eq!(p.value("status"), Some("alive"));
        assert_eq!(p.all("retry-join"), ["a", "b"]);
        assert_eq!(p.positional, ["x", "-y"]);
        let p = parse(&args("--enable=false -status alive"), SPEC).expect("parses");
        assert!(!p.bool("enable"));
        assert_eq!(p.value("status"), Some("alive"));
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(
            parse(&args("-bogus"), SPEC).unwrap_err().to_string(),
            "flag provided but not defined: -bogus"
        );
        assert_eq!(
            parse(&args("-status"), SPEC).unwrap_err().to_string(),
            "flag needs an argument: -status"
        );
        assert_eq!(
            parse(&args("-enable=maybe"), SPEC).unwrap_err().to_string(),
            "invalid boolean value \"maybe\" for -enable"
        );
    }
}
