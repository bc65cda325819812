//! The checks Go's parser makes and `gotmpl` 0.6's leaves out, so a broken template is
//! refused when it is loaded, with its line and column, rather than rendered wrong:
//! - every `if`, `range`, `with`, `define` and `block` is closed by an `end`, and no `end` or
//!   `else` stands outside one (gotmpl accepts a block left open at the end of the file, and
//!   stops at a stray `{{end}}`, silently dropping what follows; Go refuses both). This scans
//!   actions only (quotes, raw strings and comments skipped); it parses nothing else;
//! - every function named exists (gotmpl finds out only when the call runs; Go at parse).

use gotmpl::parse::{CommandNode, Expr, ListNode, Node, PipeNode, Pos};

/// Go's built-in template functions.
const BUILTINS: &[&str] = &[
    "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not", "or",
    "print", "printf", "println", "slice", "urlquery",
];

/// `template: NAME:LINE:COL: msg` for a byte offset of `src`.
pub(super) fn located(name: &str, src: &str, pos: usize, msg: &str) -> String {
    let pos = pos.min(src.len());
    let line = src[..pos].matches('\n').count() + 1;
    let col = pos - src[..pos].rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("template: {name}:{line}:{col}: {msg}")
}

/// Calls `f` with every function name `tmpl` calls and where.
fn each_call(tmpl: &gotmpl::Template, f: &mut dyn FnMut(Pos, &str)) {
    for t in tmpl.templates() {
        if let Some(list) = tmpl.lookup(t) {
            walk_list(list, f);
        }
    }
}

/// Fails on the first function `tmpl` calls that is neither Go's nor in `known`.
pub fn functions(
    name: &str,
    src: &str,
    tmpl: &gotmpl::Template,
    known: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    let mut first: Option<(Pos, String)> = None;
    each_call(tmpl, &mut |pos, f| {
        if !BUILTINS.contains(&f)
            && !known(f)
            && first.as_ref().is_none_or(|(p, _)| pos.offset < p.offset)
        {
            first = Some((pos, f.to_string()));
        }
    });
    match first {
        Some((pos, f)) => Err(located(
            name,
            src,
            pos.offset,
            &format!("function {f:?} not defined"),
        )),
        None => Ok(()),
    }
}

/// An execution error of function `func` placed as Go places it
/// (`template: NAME:LINE:COL: executing "NAME" at <func>: …`) when `func` is called from one
/// place; with several, the places are listed.
pub fn exec_error(name: &str, src: &str, tmpl: &gotmpl::Template, func: &str, msg: &str) -> String {
    let mut sites: Vec<usize> = Vec::new();
    each_call(tmpl, &mut |pos, f| {
        if f == func {
            sites.push(pos.offset);
        }
    });
    sites.sort_unstable();
    match sites[..] {
        [one] => located(
            name,
            src,
            one,
            &format!("executing {name:?} at <{func}>: {msg}"),
        ),
        [] => format!("template: {name}: executing {name:?}: {msg}"),
        _ => {
            let at: Vec<String> = sites
                .iter()
                .map(|&o| {
                    let l = located("", src, o, "");
                    l.trim_start_matches("template: :")
                        .trim_end_matches(": ")
                        .to_string()
                })
                .collect();
            format!(
                "template: {name}: executing {name:?} at <{func}> (called at {}): {msg}",
                at.join(", ")
            )
        }
    }
}

fn walk_list(l: &ListNode, f: &mut dyn FnMut(Pos, &str)) {
    for n in &l.nodes {
        match n {
            Node::List(l) => walk_list(l, f),
            Node::Action(a) => walk_pipe(&a.pipe, f),
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                walk_pipe(&b.pipe, f);
                walk_list(&b.body, f);
                if let Some(e) = &b.else_body {
                    walk_list(e, f);
                }
            }
            Node::Template(t) => {
                if let Some(p) = &t.pipe {
                    walk_pipe(p, f);
                }
            }
            Node::Define(d) => walk_list(&d.body, f),
            Node::Text(_) | Node::Break(_) | Node::Continue(_) => {}
        }
    }
}

fn walk_pipe(p: &PipeNode, f: &mut dyn FnMut(Pos, &str)) {
    for CommandNode { args, .. } in &p.commands {
        for a in args {
            walk_expr(a, f);
        }
    }
}

fn walk_expr(e: &Expr, f: &mut dyn FnMut(Pos, &str)) {
    match e {
        Expr::Identifier(pos, name) => f(*pos, name),
        Expr::Pipe(_, p) => walk_pipe(p, f),
        Expr::Chain(_, inner, _) => walk_expr(inner, f),
        _ => {}
    }
}

/// The first error, as `template: NAME:LINE:COL: message`.
pub fn check(name: &str, src: &str, left: &str, right: &str) -> Result<(), String> {
    let mut open: Vec<(&str, usize)> = Vec::new();
    let mut at = 0;
    let err = |pos: usize, msg: String| Err(located(name, src, pos, &msg));
    while let Some(i) = src[at..].find(left) {
        let start = at + i;
        let body_start = start + left.len();
        let Some(len) = action_len(&src[body_start..], right) else {
            return err(start, "unclosed action".into());
        };
        let body = &src[body_start..body_start + len];
        at = body_start + len + right.len();
        let body = body.strip_prefix("- ").unwrap_or(body);
        let word = body
            .trim_start()
            .split(|c: char| c.is_whitespace() || c == '(' || c == '-')
            .next()
            .unwrap_or("");
        match word {
            "if" | "range" | "with" | "define" | "block" => open.push((word, start)),
            "end" if open.pop().is_none() => {
                return err(start, format!("unexpected {left}end{right}"));
            }
            "else" if !matches!(open.last(), Some(("if" | "range" | "with", _))) => {
                return err(start, format!("unexpected {left}else{right}"));
            }
            _ => {}
        }
    }
    match open.last() {
        Some((word, pos)) => err(
            *pos,
            format!("unexpected EOF: {{{{{word}}}}} is never closed by {left}end{right}"),
        ),
        None => Ok(()),
    }
}

/// The length of an action's body up to its closing delimiter, skipping strings and
/// comments; `None` when it never closes.
fn action_len(s: &str, right: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if s[i..].starts_with(right) {
            return Some(i);
        }
        match b[i] {
            b'"' | b'\'' => {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => i += s[i + 1..].find('`')? + 1,
            b'/' if s[i..].starts_with("/*") => i += s[i..].find("*/")? + 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn unbalanced_blocks_are_refused_with_their_position() {
        assert_eq!(
            check(
                "t",
                "{{if .}}a{{else}}b{{end}}{{range .}}{{end}}",
                "{{",
                "}}"
            ),
            Ok(())
        );
        assert_eq!(
            check("t", "a\n  {{ range .x }}\n", "{{", "}}"),
            Err("template: t:2:3: unexpected EOF: {{range}} is never closed by {{end}}".into())
        );
        assert_eq!(
            check("t", "a{{end}}b", "{{", "}}"),
            Err("template: t:1:2: unexpected {{end}}".into())
        );
        assert!(check("t", "{{else}}", "{{", "}}").is_err());
        // Delimiters inside strings and comments are not actions.
        assert_eq!(
            check("t", "{{ \"}}{{end\" }}{{/* {{end}} */}}", "{{", "}}"),
            Ok(())
        );
        assert_eq!(check("t", "[[- if x -]][[ end ]]", "[[", "]]"), Ok(()));
    }
}
