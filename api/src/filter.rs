//! Consul's `?filter=` expressions, evaluated against each result's JSON:
//! `Sel == "v"`, `Sel != "v"`, `"v" in Sel`, `"v" not in Sel`, `Sel contains "v"`,
//! `Sel not contains "v"`, `Sel is empty`, `Sel is not empty`, joined with `and`, `or`, `not`
//! and parentheses. Selectors are dotted field paths (`Service.Tags`, `NodeMeta.env`).

use serde_json::Value;

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
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
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

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
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

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.not()?;
        while self.peek_word("and") {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn value(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Str(s)) | Some(Tok::Word(s)) => Ok(s),
            t => Err(format!("expected a value, found {t:?}")),
        }
    }

    fn selector(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Open) => {
                let e = self.or()?;
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
                    t => Err(format!("expected an operator after {w}, found {t:?}")),
                }
            }
            t => Err(format!("unexpected {t:?}")),
        }
    }
}

/// Parses a filter expression; the error is the 400 reason.
pub(crate) fn parse(s: &str) -> Result<Expr, String> {
    let mut p = Parser {
        toks: lex(s).map_err(|e| format!("Failed to create boolean expression evaluator: {e}"))?,
        pos: 0,
    };
    let e = p
        .or()
        .map_err(|e| format!("Failed to create boolean expression evaluator: {e}"))?;
    if p.pos < p.toks.len() {
        return Err(format!(
            "Failed to create boolean expression evaluator: unexpected {:?}",
            p.toks[p.pos]
        ));
    }
    Ok(e)
}

fn lookup<'a>(v: &'a Value, sel: &[String]) -> Option<&'a Value> {
    sel.iter().try_fold(v, |cur, k| cur.get(k))
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Expr {
    pub(crate) fn matches(&self, v: &Value) -> bool {
        match self {
            Expr::And(a, b) => a.matches(v) && b.matches(v),
            Expr::Or(a, b) => a.matches(v) || b.matches(v),
            Expr::Not(e) => !e.matches(v),
            Expr::Eq(sel, want, neg) => lookup(v, sel).is_some_and(|x| as_text(x) == *want) != *neg,
            Expr::Contains(sel, want, neg) => {
                let hit = match lookup(v, sel) {
                    Some(Value::Array(a)) => a.iter().any(|x| as_text(x) == *want),
                    Some(Value::Object(m)) => m.contains_key(want),
                    Some(Value::String(s)) => s.contains(want.as_str()),
                    _ => false,
                };
                hit != *neg
            }
            Expr::Empty(sel, neg) => {
                let empty = match lookup(v, sel) {
                    None | Some(Value::Null) => true,
                    Some(Value::Array(a)) => a.is_empty(),
                    Some(Value::Object(m)) => m.is_empty(),
                    Some(Value::String(s)) => s.is_empty(),
                    _ => false,
                };
                empty != *neg
            }
        }
    }
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
        assert!(t(r#"NodeMeta is not empty and Missing is empty"#));
        assert!(parse("Node ==").is_err());
        assert!(parse("Node = web1").is_err());
        assert!(parse(r#"(Node == "a""#).is_err());
    }
}
