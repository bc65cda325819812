//! The glue between a template file and the `gotmpl` engine (Go's text/template, ported):
//! parse once with the delimiters and functions, then render as often as data changes,
//! reporting what the render read and whether its output may be written.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use gotmpl::{FuncMap, MissingKey, Template, TemplateError, Value, ValueFunc};

use super::brain::Brain;
use super::deps::Dep;
use super::funcs::data::{self, Ctx, Scope};
use super::funcs::pure;
use muster_server::sync::lock;

/// How a template is parsed and guarded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub left_delimiter: Option<String>,
    pub right_delimiter: Option<String>,
    /// `error_on_missing_key`: a map lookup of an absent key fails the render.
    pub error_on_missing_key: bool,
    /// `min_instances`: every `service` must return at least this many.
    pub min_instances: usize,
}

/// A parsed template and the functions bound to the shared data.
pub struct Engine {
    name: String,
    source: String,
    tmpl: Template,
    ctx: Arc<Ctx>,
}

/// Whether a render's output may replace the file, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Complete: every query answered, every guard met.
    Rendered(String),
    /// Some queries have not answered yet (or answered nothing where data is demanded).
    Waiting(Vec<String>),
    /// Some queries failed or are held, each with its reason.
    Failed(Vec<String>),
    /// The engine refused the template with this data (Go's execution error).
    Error(String),
    /// An instance guard was not met.
    Short(Vec<String>),
}

/// One render: its outcome and every query it made.
#[derive(Debug)]
pub struct Render {
    pub outcome: Outcome,
    pub used: BTreeSet<Dep>,
}

impl Engine {
    /// Parses `source`; the error names the template, line and column as Go's parser does
    /// (`template: NAME:LINE:COL: message`).
    pub fn new(
        name: &str,
        source: &str,
        opts: &Options,
        brain: Arc<Mutex<Brain>>,
    ) -> Result<Engine, String> {
        let ctx = Arc::new(Ctx {
            brain,
            scope: Mutex::new(Scope::default()),
            min_instances: opts.min_instances,
        });
        let mut funcs = pure();
        data::register(&mut funcs, &ctx);
        let names: BTreeSet<String> = funcs.keys().cloned().collect();
        let left = opts.left_delimiter.as_deref().unwrap_or("{{");
        let right = opts.right_delimiter.as_deref().unwrap_or("}}");
        super::blocks::check(name, source, left, right)?;
        let mut t = Template::new(name).funcs(named(funcs)).delims(left, right);
        if opts.error_on_missing_key {
            t = t.missing_key(MissingKey::Error);
        }
        let tmpl = t.parse(source).map_err(|e| e.to_string())?;
        super::blocks::functions(name, source, &tmpl, &|f| names.contains(f))?;
        Ok(Engine {
            name: name.to_string(),
            source: source.to_string(),
            tmpl,
            ctx,
        })
    }

    /// Renders against the data as it is now.
    pub fn render(&self) -> Render {
        *lock(&self.ctx.scope) = Scope::default();
        let result = self.tmpl.execute_to_string(&Value::Nil);
        let scope = std::mem::take(&mut *lock(&self.ctx.scope));
        let outcome = if !scope.errors.is_empty() {
            Outcome::Failed(scope.errors.values().cloned().collect())
        } else if !scope.missing.is_empty() {
            Outcome::Waiting(scope.missing.iter().map(Dep::display).collect())
        } else {
            match result {
                Err(e) => Outcome::Error(self.exec_error(e)),
                Ok(_) if !scope.short.is_empty() => Outcome::Short(scope.short),
                Ok(out) => Outcome::Rendered(out),
            }
        };
        Render {
            outcome,
            used: scope.used,
        }
    }
}

impl Engine {
    /// An execution error with the template's name, and its line and column when it came
    /// from a function called in one place.
    fn exec_error(&self, e: TemplateError) -> String {
        let msg = match e {
            TemplateError::Exec(m) => m,
            other => other.to_string(),
        };
        let func = msg
            .strip_prefix("error calling ")
            .and_then(|r| r.split(':').next())
            .unwrap_or("");
        super::blocks::exec_error(&self.name, &self.source, &self.tmpl, func, &msg)
    }
}

/// Each function's errors prefixed as Go's executor words them (`error calling NAME: …`), so
/// the error can be placed.
fn named(funcs: FuncMap) -> FuncMap {
    funcs
        .into_iter()
        .map(|(name, f)| {
            let n = name.clone();
            let g: ValueFunc = Arc::new(move |args: &[Value]| {
                f(args).map_err(|e| match e {
                    TemplateError::Exec(m) => {
                        TemplateError::Exec(format!("error calling {n}: {m}"))
                    }
                    other => other,
                })
            });
            (name, g)
        })
        .collect()
}

#[cfg(test)]
mod tests;
