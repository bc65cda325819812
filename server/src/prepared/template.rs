//! Query templates: Consul's `name_prefix_match` with an optional `Regexp`, whose `Service`
//! strings are interpolated for each name looked up (HIL's `${...}` syntax, with the
//! variables and the one function Consul's templates offer: `${name.full}`,
//! `${name.prefix}`, `${name.suffix}`, `${agent.segment}` and `${match(N)}`).

use std::collections::BTreeMap;

use regex_lite::Regex;

use super::Definition;

/// Consul's one template type.
pub const NAME_PREFIX_MATCH: &str = "name_prefix_match";

/// A template checked once, ready to render for any name.
pub struct Compiled {
    def: Definition,
    re: Option<Regex>,
}

/// Checks a template as Consul's `Compile` does: a known type, a valid regexp, and strings
/// that render for the template's own name. Errors are Consul's texts.
pub fn compile(def: &Definition) -> Result<Compiled, String> {
    if def.template.r#type != NAME_PREFIX_MATCH {
        return Err(format!("Bad Template.Type '{}'", def.template.r#type));
    }
    let re = match def.template.regexp.as_str() {
        "" => None,
        r => Some(Regex::new(r).map_err(|e| format!("Bad Regexp: {e}"))?),
    };
    let c = Compiled {
        def: def.clone(),
        re,
    };
    c.render(&def.name, "")?;
    Ok(c)
}

/// What a template's strings may refer to.
struct Scope<'a> {
    full: &'a str,
    prefix: &'a str,
    segment: &'a str,
    matches: Vec<String>,
}

impl Compiled {
    /// The query for `name`: every string of its `Service` interpolated, and empty tags
    /// removed if the template asks for it.
    pub fn render(&self, name: &str, segment: &str) -> Result<Definition, String> {
        let matches = self
            .re
            .as_ref()
            .and_then(|re| re.captures(name))
            .map(|c| {
                c.iter()
                    .map(|m| m.map_or(String::new(), |m| m.as_str().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let scope = Scope {
            full: name,
            prefix: &self.def.name,
            segment,
            matches,
        };
        let mut d = self.def.clone();
        let s = &mut d.service;
        eval_at(&scope, ".Service", &mut s.service)?;
        if let Some(dcs) = &mut s.failover.datacenters {
            eval_list(&scope, ".Failover.Datacenters", dcs)?;
        }
        if let Some(ids) = &mut s.ignore_check_ids {
            eval_list(&scope, ".IgnoreCheckIDs", ids)?;
        }
        eval_at(&scope, ".Near", &mut s.near)?;
        if let Some(tags) = &mut s.tags {
            eval_list(&scope, ".Tags", tags)?;
        }
        if let Some(m) = &mut s.node_meta {
            eval_map(&scope, ".NodeMeta", m)?;
        }
        if let Some(m) = &mut s.service_meta {
            eval_map(&scope, ".ServiceMeta", m)?;
        }
        if self.def.template.remove_empty_tags {
            let tags = s.tags.take().unwrap_or_default();
            s.tags = Some(tags.into_iter().filter(|t| !t.is_empty()).collect());
        }
        Ok(d)
    }
}

fn eval_list(scope: &Scope<'_>, path: &str, items: &mut [String]) -> Result<(), String> {
    for (i, v) in items.iter_mut().enumerate() {
        eval_at(scope, &format!("{path}[{i}]"), v)?;
    }
    Ok(())
}

fn eval_map(scope: &Scope<'_>, path: &str, m: &mut BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in m.iter_mut() {
        eval_at(scope, &format!("{path}[{k}]"), v)?;
    }
    Ok(())
}

/// Interpolates one string in place; errors name it by its path under `Service`.
fn eval_at(scope: &Scope<'_>, path: &str, v: &mut String) -> Result<(), String> {
    *v = interpolate(v, scope).map_err(|e| match e {
        Error::Parse(why) => format!("Bad format '{v}' in Service{path}: {why}"),
        Error::Eval(why) => format!("Bad evaluation for '{v}' in Service{path}: {why}"),
    })?;
    Ok(())
}

enum Error {
    Parse(String),
    Eval(String),
}

/// HIL's interpolation: `${expr}` is replaced by its value, `$${` stands for a literal `${`.
fn interpolate(s: &str, scope: &Scope<'_>) -> Result<String, Error> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let body = &rest[at + 2..];
        let end = body
            .find('}')
            .ok_or_else(|| Error::Parse("unterminated interpolation: expected \"}\"".into()))?;
        out.push_str(&eval(body[..end].trim(), scope)?);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One expression: a variable, or `match(N)` with an integer literal.
fn eval(expr: &str, scope: &Scope<'_>) -> Result<String, Error> {
    if let Some(open) = expr.find('(') {
        let func = expr[..open].trim();
        let arg = expr[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| Error::Parse(format!("expected \")\" in {expr:?}")))?
            .trim();
        if func != "match" {
            return Err(Error::Eval(format!("unknown function called: {func}")));
        }
        let i: i64 = arg.parse().map_err(|_| {
            Error::Eval(format!("match: argument 1 should be type int, got {arg:?}"))
        })?;
        let matched = usize::try_from(i)
            .ok()
            .and_then(|i| scope.matches.get(i))
            .cloned()
            .unwrap_or_default();
        return Ok(matched);
    }
    let valid = !expr.is_empty()
        && expr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(Error::Parse(format!("invalid expression {expr:?}")));
    }
    Ok(match expr {
        "name.full" => scope.full.to_string(),
        "name.prefix" => scope.prefix.to_string(),
        "name.suffix" => scope
            .full
            .strip_prefix(scope.prefix)
            .unwrap_or(scope.full)
            .to_string(),
        "agent.segment" => scope.segment.to_string(),
        other => return Err(Error::Eval(format!("unknown variable accessed: {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(name: &str, regexp: &str, service: &str, tags: &[&str]) -> Definition {
        let mut d = Definition {
            name: name.into(),
            ..Definition::default()
        };
        d.template.r#type = NAME_PREFIX_MATCH.into();
        d.template.regexp = regexp.into();
        d.service.service = service.into();
        d.service.tags = Some(tags.iter().map(|t| t.to_string()).collect());
        d
    }

    #[test]
    fn renders_names_and_regexp_matches() {
        let d = template(
            "geo-db",
            r"^geo-db-(.*?)-([^\-]+?)$",
            "mysql-${match(1)}",
            &[
                "${match(2)}",
                "${name.suffix}",
                "${name.prefix}",
                "$${x}",
                "${match(9)}",
            ],
        );
        let c = compile(&d).expect("compiles");
        let r = c.render("geo-db-customer-primary", "").expect("renders");
        assert_eq!(r.service.service, "mysql-customer");
        assert_eq!(
            r.service.tags.as_deref(),
            Some(
                &[
                    "primary".to_string(),
                    "-customer-primary".into(),
                    "geo-db".into(),
                    "${x}".into(),
                    String::new()
                ][..]
            )
        );
        let full = template("", "", "${name.full}", &[]);
        let r = compile(&full).expect("compiles").render("web", "seg");
        assert_eq!(r.expect("renders").service.service, "web");
    }

    #[test]
    fn removes_empty_tags_when_asked() {
        let mut d = template("x", "^x-(.*)$", "svc", &["${match(1)}", "a"]);
        d.template.remove_empty_tags = true;
        let r = compile(&d)
            .expect("compiles")
            .render("x", "")
            .expect("renders");
        assert_eq!(r.service.tags, Some(vec!["a".to_string()]));
    }

    #[test]
    fn refuses_what_consul_refuses() {
        let mut d = template("x", "", "svc", &[]);
        d.template.r#type = "prefix".into();
        assert_eq!(
            compile(&d).err().as_deref(),
            Some("Bad Template.Type 'prefix'")
        );
        let d = template("x", "(", "svc", &[]);
        assert!(compile(&d)
            .err()
            .is_some_and(|e| e.starts_with("Bad Regexp: ")));
        let d = template("x", "", "${nope}", &[]);
        assert_eq!(
            compile(&d).err().as_deref(),
            Some(
                "Bad evaluation for '${nope}' in Service.Service: unknown variable accessed: nope"
            )
        );
        let d = template("x", "", "svc", &["${name.full"]);
        assert!(compile(&d)
            .err()
            .is_some_and(|e| e.starts_with("Bad format '${name.full' in Service.Tags[0]: ")));
    }
}
