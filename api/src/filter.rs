//! Consul's `?filter=` expressions, evaluated against each result's JSON:
//! `Sel == "v"`, `Sel != "v"`, `"v" in Sel`, `"v" not in Sel`, `Sel contains "v"`,
//! `Sel not contains "v"`, `Sel is empty`, `Sel is not empty`, joined with `and`, `or`, `not`
//! and parentheses. Selectors are dotted field paths (`Service.Tags`, `NodeMeta.env`); a path
//! through a list (`Checks.Status`) selects that field of every element.
//!
//! The expression comes from the network, so it is parsed with explicit limits: at most
//! [`MAX_LEN`] bytes and [`MAX_DEPTH`] levels of parentheses and `not`. `and`/`or` chains are
//! flat lists, so neither parsing, evaluating nor dropping an expression recurses deeper than
//! that. Selectors are checked against the shape of the endpoint's results, as go-bexpr checks
//! them against Consul's Go types: an unknown field is a 400, not an empty answer.

use serde::Serialize;
use serde_json::Value;

/// Longest filter expression accepted, in bytes.
pub(crate) const MAX_LEN: usize = 16 * 1024;
/// Deepest nesting of parentheses and `not` accepted.
pub(crate) const MAX_DEPTH: usize = 32;

const PREFIX: &str = "Failed to create boolean expression evaluator";

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Op(&'static str),
    Open,
    Close,
}

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Eq(Vec<String>, String, bool),
    Contains(Vec<String>, String, bool),
    Empty(Vec<String>, bool),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            ' ' | '\t' | '\n' => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '=' if c.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op("=="));
                i += 2;
            }
            '!' if c.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op("!="));
                i += 2;
            }
            q @ ('"' | '`') => {
                let mut v = String::new();
                i += 1;
                while i < c.len() && c[i] != q {
                    if c[i] == '\\' && q == '"' && i + 1 < c.len() {
                        i += 1;
                    }
                    v.push(c[i]);
                    i += 1;
                }
                if i >= c.len() {
                    return Err("unterminated string".into());
                }
                out.push(Tok::Str(v));
                i += 1;
            }
            _ => {
                let start = i;
                while i < c.len()
                    && !matches!(c[i], ' ' | '\t' | '\n' | '(' | ')' | '"' | '`' | '=' | '!')
                {
                    i += 1;
                }
                if start == i {
                    return Err(format!("unexpected character {:?}", c[i]));
                }
                out.push(Tok::Word(c[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

/// A token as the 400 names it.
fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "the end of the expression".into(),
        Some(Tok::Word(w)) => format!("{w:?}"),
        Some(Tok::Str(s)) => format!("the string {s:?}"),
        Some(Tok::Op(o)) => format!("{o:?}"),
        Some(Tok::Open) => "\"(\"".into(),
        Some(Tok::Close) => "\")\"".into(),
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Word(x)) if x == w)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// Enters one level of parentheses or `not`, refusing past [`MAX_DEPTH`].
    fn descend(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "expression nests deeper than {MAX_DEPTH} levels of parentheses and 'not'"
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut terms = vec![self.and()?];
        while self.peek_word("or") {
            self.pos += 1;
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut terms = vec![self.not()?];
        while self.peek_word("and") {
            self.pos += 1;
            terms.push(self.not()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.peek_word("not") {
            self.pos += 1;
            self.descend()?;
            let e = Expr::Not(Box::new(self.not()?));
            self.depth -= 1;
            return Ok(e);
        }
        self.primary()
    }

    fn value(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Str(s)) | Some(Tok::Word(s)) => Ok(s),
            t => Err(format!("expected a value, found {}", describe(t.as_ref()))),
        }
    }

    fn selector(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Open) => {
                self.descend()?;
                let e = self.or()?;
                self.depth -= 1;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err("missing )".into()),
                }
            }
            Some(Tok::Str(v)) => {
                // "v" in Sel / "v" not in Sel
                let negate = self.peek_word("not");
                if negate {
                    self.pos += 1;
                }
                if !self.peek_word("in") {
                    return Err(format!("expected 'in' after {v:?}"));
                }
                self.pos += 1;
                let sel = self.value()?;
                Ok(Expr::Contains(Self::selector(&sel), v, negate))
            }
            Some(Tok::Word(w)) => {
                let sel = Self::selector(&w);
                match self.next() {
                    Some(Tok::Op("==")) => Ok(Expr::Eq(sel, self.value()?, false)),
                    Some(Tok::Op("!=")) => Ok(Expr::Eq(sel, self.value()?, true)),
                    Some(Tok::Word(op)) if op == "contains" => {
                        Ok(Expr::Contains(sel, self.value()?, false))
                    }
                    Some(Tok::Word(op)) if op == "not" && self.peek_word("contains") => {
                        self.pos += 1;
                        Ok(Expr::Contains(sel, self.value()?, true))
                    }
                    // An unquoted value, as bexpr takes it: `primary in ServiceTags`.
                    Some(Tok::Word(op)) if op == "in" => {
                        Ok(Expr::Contains(Self::selector(&self.value()?), w, false))
                    }
                    Some(Tok::Word(op)) if op == "not" && self.peek_word("in") => {
                        self.pos += 1;
                        Ok(Expr::Contains(Self::selector(&self.value()?), w, true))
                    }
                    Some(Tok::Word(op)) if op == "is" => {
                        let negate = self.peek_word("not");
                        if negate {
                            self.pos += 1;
                        }
                        if !self.peek_word("empty") {
                            return Err("expected 'empty'".into());
                        }
                        self.pos += 1;
                        Ok(Expr::Empty(sel, negate))
                    }
                    t => Err(format!(
                        "expected an operator after {w}, found {}",
                        describe(t.as_ref())
                    )),
                }
            }
            t => Err(format!("unexpected {}", describe(t.as_ref()))),
        }
    }
}

/// Parses a filter expression; the error is the 400 reason.
pub(crate) fn parse(s: &str) -> Result<Expr, String> {
    if s.len() > MAX_LEN {
        return Err(format!(
            "{PREFIX}: expression is {} bytes, over the limit of {MAX_LEN}",
            s.len()
        ));
    }
    let mut p = Parser {
        toks: lex(s).map_err(|e| format!("{PREFIX}: {e}"))?,
        pos: 0,
        depth: 0,
    };
    let e = p.or().map_err(|e| format!("{PREFIX}: {e}"))?;
    if let Some(t) = p.toks.get(p.pos) {
        return Err(format!("{PREFIX}: unexpected {}", describe(Some(t))));
    }
    Ok(e)
}

/// A type whose JSON the filter runs on, with a sample that shows its shape: every struct
/// field present, maps empty (their keys are data), and one element in lists of structs.
pub(crate) trait Filterable: Serialize {
    fn sample() -> Self;
}

/// Parses `?filter=` for results of type `T` and checks every selector against `T`'s shape.
pub(crate) fn parse_for<T: Filterable>(s: &str) -> Result<Expr, String> {
    let e = parse(s)?;
    let shape = serde_json::to_value(T::sample()).map_err(|e| format!("{PREFIX}: {e}"))?;
    e.check_selectors(&shape)?;
    Ok(e)
}

/// Whether `sel` names a field of `shape` (a [`Filterable::sample`] as JSON).
fn selector_ok(shape: &Value, sel: &[String]) -> bool {
    let mut cur = shape;
    let mut segs = sel.iter().peekable();
    while let Some(seg) = segs.peek() {
        match cur {
            // A map (`null` when empty, as Consul shows some): the next segment is a key, and
            // its values are plain text.
            Value::Null => {
                segs.next();
                return segs.peek().is_none();
            }
            Value::Object(m) if m.is_empty() => {
                segs.next();
                return segs.peek().is_none();
            }
            Value::Object(m) => match m.get(seg.as_str()) {
                Some(v) => {
                    cur = v;
                    segs.next();
                }
                None => return false,
            },
            // A list of structs: the segment names a field of its elements.
            Value::Array(a) => match a.first() {
                Some(el @ Value::Object(_)) => cur = el,
                _ => return false,
            },
            _ => return false,
        }
    }
    true
}

/// The values `sel` reaches in `v`, fanning out through lists; and whether it went through one.
fn lookup<'a>(v: &'a Value, sel: &[String]) -> (Vec<&'a Value>, bool) {
    let mut cur = vec![v];
    let mut through_list = false;
    for k in sel {
        let mut next = Vec::with_capacity(cur.len());
        for c in cur {
            match c {
                Value::Array(items) => {
                    through_list = true;
                    next.extend(items.iter().filter_map(|i| i.get(k)));
                }
                other => next.extend(other.get(k)),
            }
        }
        cur = next;
    }
    (cur, through_list)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

impl Expr {
    fn check_selectors(&self, shape: &Value) -> Result<(), String> {
        let sel = match self {
            Expr::And(v) | Expr::Or(v) => {
                return v.iter().try_for_each(|e| e.check_selectors(shape));
            }
            Expr::Not(e) => return e.check_selectors(shape),
            Expr::Eq(sel, ..) | Expr::Contains(sel, ..) | Expr::Empty(sel, _) => sel,
        };
        if selector_ok(shape, sel) {
            Ok(())
        } else {
            Err(format!(
                "{PREFIX}: Selector {:?} is not valid",
                sel.join(".")
            ))
        }
    }

    pub(crate) fn matches(&self, v: &Value) -> bool {
        match self {
            Expr::And(terms) => terms.iter().all(|e| e.matches(v)),
            Expr::Or(terms) => terms.iter().any(|e| e.matches(v)),
            Expr::Not(e) => !e.matches(v),
            Expr::Eq(sel, want, neg) => {
                lookup(v, sel).0.iter().any(|x| as_text(x) == *want) != *neg
            }
            Expr::Contains(sel, want, neg) => {
                let (found, through_list) = lookup(v, sel);
                let hit = found.iter().any(|x| match x {
                    Value::Array(a) => a.iter().any(|x| as_text(x) == *want),
                    Value::Object(m) => m.contains_key(want),
                    // One value per list element: membership, not a substring.
                    Value::String(s) if through_list => s == want,
                    Value::String(s) => s.contains(want.as_str()),
                    other => through_list && as_text(other) == *want,
                });
                hit != *neg
            }
            Expr::Empty(sel, neg) => {
                let (found, _) = lookup(v, sel);
                found.iter().all(|x| is_empty(x)) != *neg
            }
        }
    }
}

/// Applies `?filter=` (absent or empty: everything) to results of type `T`, returning their
/// JSON. A bad expression or an unknown field is the 400 reason.
pub(crate) fn apply<T: Filterable>(
    filter: Option<&str>,
    items: Vec<T>,
) -> Result<Vec<Value>, String> {
    let expr = filter
        .filter(|f| !f.is_empty())
        .map(parse_for::<T>)
        .transpose()?;
    let values = items
        .into_iter()
        .filter_map(|i| serde_json::to_value(i).ok());
    Ok(match expr {
        Some(e) => values.filter(|v| e.matches(v)).collect(),
        None => values.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_consul_style_expressions() {
        let v = serde_json::json!({"ServiceTags": ["db-client", "v2"], "Node": "web1",
            "NodeMeta": {"env": "prod"}, "Service": {"Port": 8080}});
        let t = |s: &str| parse(s).expect("parses").matches(&v);
        assert!(t(r#"Node == "web1""#));
        assert!(t(r#"Node != web2"#));
        assert!(t(r#""db-client" in ServiceTags"#));
        assert!(t(r#"ServiceTags contains "v2" and NodeMeta.env == prod"#));
        assert!(t(r#"ServiceTags contains "nope" or Service.Port == 8080"#));
        assert!(!t(r#"not (Node == web1)"#));
        assert!(t(r#""x" not in ServiceTags"#));
        assert!(t(r#"v2 in ServiceTags and x not in ServiceTags"#));
        assert!(!t(r#"v3 in ServiceTags"#));
        assert!(t(r#"NodeMeta is not empty and Missing is empty"#));
        assert!(parse("Node ==").is_err());
        assert!(parse("Node = web1").is_err());
        assert!(parse(r#"(Node == "a""#).is_err());
    }

    #[test]
    fn refuses_deep_nesting_and_long_expressions_without_recursing() {
        let deep = format!("{}Node == a{}", "(".repeat(3000), ")".repeat(3000));
        let e = parse(&deep).expect_err("too deep");
        assert!(e.contains("deeper than 32 levels"), "{e}");
        let nots = format!("{}Node == a", "not ".repeat(3000));
        assert!(parse(&nots)
            .expect_err("too deep")
            .contains("deeper than 32"));
        let ok = format!("{}Node == a{}", "(".repeat(32), ")".repeat(32));
        assert!(parse(&ok).is_ok());
        let long = vec![r#"Node == "a""#; 2000].join(" or ");
        assert!(parse(&long)
            .expect_err("too long")
            .contains("over the limit of 16384"));
        // A long flat chain is a list: evaluating and dropping it does not recurse.
        let chain = vec!["Node == a"; 1000].join(" and ");
        assert!(parse(&chain)
            .expect("parses")
            .matches(&serde_json::json!({"Node": "a"})));
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Item {
        node: String,
        meta: std::collections::BTreeMap<String, String>,
        checks: Vec<Sub>,
        tags: Vec<String>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Sub {
        status: String,
    }

    impl Filterable for Item {
        fn sample() -> Self {
            Item {
                node: String::new(),
                meta: Default::default(),
                checks: vec![Sub {
                    status: String::new(),
                }],
                tags: Vec::new(),
            }
        }
    }

    #[test]
    fn checks_selectors_against_the_result_shape() {
        for ok in [
            "Node == a",
            "Meta.env == prod",
            r#""passing" in Checks.Status"#,
            "Tags is empty",
            "not (Node == a or Meta is empty)",
        ] {
            assert!(parse_for::<Item>(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Nope == a",
            "Meta.env.x == a",
            "Checks.Nope == a",
            "Tags.x == a",
            "Node.x == a",
        ] {
            let e = parse_for::<Item>(bad).expect_err(bad);
            assert!(e.contains("is not valid"), "{e}");
        }
        let item = Item {
            node: "n".into(),
            meta: Default::default(),
            checks: vec![
                Sub {
                    status: "passing".into(),
                },
                Sub {
                    status: "critical".into(),
                },
            ],
            tags: vec![],
        };
        let out = apply(Some(r#""critical" in Checks.Status"#), vec![item]).expect("valid");
        assert_eq!(out.len(), 1);
    }
}
