//! consul-template's template functions (`template/funcs.go`), with its argument order (the
//! piped value last) and semantics: data sources that read the shared data (`data`), and
//! pure helpers on strings and lists (`helpers`), numbers (`math`) and encodings (`encode`).

pub mod data;
pub mod encode;
pub mod helpers;
pub mod math;

use std::sync::Arc;

use gotmpl::{FuncMap, TemplateError, Value, ValueFunc};

/// A function whose errors are strings, as the engine wants it.
pub(crate) fn func<F>(f: F) -> ValueFunc
where
    F: Fn(&[Value]) -> Result<Value, String> + Send + Sync + 'static,
{
    Arc::new(move |args: &[Value]| f(args).map_err(TemplateError::Exec))
}

/// Fails unless `args` has between `min` and `max` values, with Go's message.
pub(crate) fn arity(name: &str, args: &[Value], min: usize, max: usize) -> Result<(), String> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            min.to_string()
        } else {
            format!("{min} to {max}")
        };
        return Err(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        ));
    }
    Ok(())
}

/// Every helper that reads no data.
pub fn pure() -> FuncMap {
    let mut m = FuncMap::new();
    helpers::register(&mut m);
    math::register(&mut m);
    encode::register(&mut m);
    m
}
