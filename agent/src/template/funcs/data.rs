//! The data sources (`key`, `keyOrDefault`, `keyExists`, `ls`, `tree`, `safeLs`,
//! `safeTree`, `service`, `services`, `node`, `nodes`, `datacenters`, `file`) and the
//! `minimum` instance guard. Each records the query it needs in the render's [`Scope`] and
//! answers from the shared [`Brain`]; a query not yet answered, failed or held makes the
//! render incomplete, so it is never written (as consul-template's `missing` set, plus
//! errors and guards it lacks).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use gotmpl::{FuncMap, Value};

use super::{arity, func, math};
use crate::template::brain::Brain;
use crate::template::deps::Dep;
use crate::template::value::{list, string, want_list, want_str};
use muster_server::sync::lock;

/// What one render read and what stopped it.
#[derive(Debug, Default)]
pub struct Scope {
    /// Every query the template made.
    pub used: BTreeSet<Dep>,
    /// Queries not answered yet (or answered with nothing where the template demands data).
    pub missing: BTreeSet<Dep>,
    /// Queries that failed or are held, with the reason.
    pub errors: BTreeMap<Dep, String>,
    /// Instance guards not met, each a sentence.
    pub short: Vec<String>,
    /// Lists `service` returned this render, by address, for `minimum` to name them.
    services: Vec<(usize, String)>,
}

/// What the functions of one template share: the data, and the scope of the current render.
pub struct Ctx {
    pub brain: Arc<Mutex<Brain>>,
    pub scope: Mutex<Scope>,
    /// `min_instances`: each `service` must return at least this many.
    pub min_instances: usize,
}

impl Ctx {
    /// The answer to `dep`, recording its use; `None` when there is none to render with.
    fn recall(&self, dep: Dep) -> Option<Value> {
        let state = lock(&self.brain).state(&dep);
        let mut scope = lock(&self.scope);
        scope.used.insert(dep.clone());
        match state {
            Ok(Some(v)) => return Some(v),
            Ok(None) => {}
            Err(reason) => {
                scope.errors.insert(dep.clone(), reason);
            }
        }
        scope.missing.insert(dep);
        None
    }

    fn mark_missing(&self, dep: Dep) {
        lock(&self.scope).missing.insert(dep);
    }
}

fn joined(a: &[Value], func: &str) -> Result<String, String> {
    Ok(a.iter()
        .map(|v| want_str(func, v))
        .collect::<Result<Vec<_>, _>>()?
        .concat())
}

/// Registers the data sources on `m`, reading through `ctx`.
pub fn register(m: &mut FuncMap, ctx: &Arc<Ctx>) {
    let c = ctx.clone();
    m.insert(
        "key".into(),
        func(move |a| {
            arity("key", a, 1, 1)?;
            let k = want_str("key", &a[0])?;
            if k.is_empty() {
                return Ok(string(""));
            }
            let dep = Dep::kv_get(k);
            match c.recall(dep.clone()) {
                Some(Value::Nil) => {
                    // consul-template blocks on a key that does not exist yet.
                    c.mark_missing(dep);
                    Ok(string(""))
                }
                Some(v) => Ok(v),
                None => Ok(string("")),
            }
        }),
    );
    let c = ctx.clone();
    m.insert(
        "keyExists".into(),
        func(move |a| {
            arity("keyExists", a, 1, 1)?;
            let k = want_str("keyExists", &a[0])?;
            if k.is_empty() {
                return Ok(Value::Bool(false));
            }
            Ok(Value::Bool(
                c.recall(Dep::kv_get(k)).is_some_and(|v| v != Value::Nil),
            ))
        }),
    );
    let c = ctx.clone();
    m.insert(
        "keyOrDefault".into(),
        func(move |a| {
            arity("keyOrDefault", a, 2, 2)?;
            let (k, def) = (want_str("keyOrDefault", &a[0])?, &a[1]);
            if k.is_empty() {
                return Ok(def.clone());
            }
            Ok(match c.recall(Dep::kv_get(k)) {
                Some(Value::String(s)) if !s.is_empty() => Value::String(s),
                _ => def.clone(),
            })
        }),
    );
    for (name, tree, safe) in [
        ("ls", false, false),
        ("safeLs", false, true),
        ("tree", true, false),
        ("safeTree", true, true),
    ] {
        let c = ctx.clone();
        m.insert(
            name.into(),
            func(move |a| {
                arity(name, a, 1, 1)?;
                let prefix = want_str(name, &a[0])?;
                if prefix.is_empty() {
                    return Ok(list(Vec::new()));
                }
                let dep = Dep::kv_list(prefix);
                let Some(all) = c.recall(dep.clone()) else {
                    return Ok(list(Vec::new()));
                };
                let kept: Vec<Value> = want_list(name, &all)?
                    .iter()
                    .filter(|p| {
                        let key = crate::template::value::field(p, "Key")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if tree {
                            !key.rsplit('/').next().unwrap_or("").is_empty()
                        } else {
                            !key.is_empty() && !key.contains('/')
                        }
                    })
                    .cloned()
                    .collect();
                if kept.is_empty() && safe {
                    // safeLs/safeTree refuse to render an empty prefix.
                    c.mark_missing(dep);
                }
                Ok(list(kept))
            }),
        );
    }
    let c = ctx.clone();
    m.insert(
        "service".into(),
        func(move |a| {
            arity("service", a, 1, 2)?;
            let args = a
                .iter()
                .map(|v| want_str("service", v).map(str::to_string))
                .collect::<Result<Vec<_>, _>>()?;
            let dep = Dep::service(&args)?;
            let shown = dep.display();
            let Some(v) = c.recall(dep) else {
                return Ok(list(Vec::new()));
            };
            let n = v.len().unwrap_or(0);
            let mut scope = lock(&c.scope);
            if n < c.min_instances {
                scope.short.push(format!(
                    "{shown} has {n} instances, fewer than min_instances {}",
                    c.min_instances
                ));
            }
            if let Value::List(items) = &v {
                scope.services.push((items.as_ptr() as usize, shown));
            }
            Ok(v)
        }),
    );
    let c = ctx.clone();
    m.insert(
        "minimum".into(),
        func(move |a| {
            arity("minimum", a, 2, 2)?;
            let Value::List(items) = &a[1] else {
                return math::min_max("minimum", a);
            };
            let want = match &a[0] {
                Value::Int(n) => usize::try_from(*n).unwrap_or(0),
                Value::Uint(n) => usize::try_from(*n).unwrap_or(usize::MAX),
                other => {
                    return Err(format!(
                        "minimum: the instance count must be an integer, got {}",
                        other.type_name()
                    ))
                }
            };
            if items.len() < want {
                let mut scope = lock(&c.scope);
                let what = scope
                    .services
                    .iter()
                    .find(|(p, _)| *p == items.as_ptr() as usize)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_else(|| "a list".into());
                scope.short.push(format!(
                    "{what} has {} instances, fewer than `minimum {want}`",
                    items.len()
                ));
            }
            Ok(a[1].clone())
        }),
    );
    // `services "@dc"` and `nodes "@dc"`: catalog lists, empty until answered.
    for (name, dep) in [
        (
            "services",
            (|dc| Dep::Services { dc }) as fn(Option<String>) -> Dep,
        ),
        ("nodes", |dc| Dep::Nodes { dc }),
    ] {
        let c = ctx.clone();
        m.insert(
            name.into(),
            func(move |a| {
                let q = joined(a, name)?;
                let dc = q.strip_prefix('@').filter(|d| !d.is_empty());
                Ok(c.recall(dep(dc.map(str::to_string)))
                    .unwrap_or_else(|| list(Vec::new())))
            }),
        );
    }
    let c = ctx.clone();
    m.insert(
        "node".into(),
        func(move |a| {
            let q = joined(a, "node")?;
            let (name, dc) = q.split_once('@').unwrap_or((&q, ""));
            let dep = Dep::Node {
                node: Some(name.to_string()).filter(|n| !n.is_empty()),
                dc: Some(dc.to_string()).filter(|d| !d.is_empty()),
            };
            Ok(c.recall(dep).unwrap_or(Value::Nil))
        }),
    );
    let c = ctx.clone();
    m.insert(
        "datacenters".into(),
        func(move |a| {
            arity("datacenters", a, 0, 1)?;
            Ok(c.recall(Dep::Datacenters)
                .unwrap_or_else(|| list(Vec::new())))
        }),
    );
    let c = ctx.clone();
    m.insert(
        "file".into(),
        func(move |a| {
            arity("file", a, 1, 1)?;
            let p = want_str("file", &a[0])?;
            if p.is_empty() {
                return Ok(string(""));
            }
            Ok(c.recall(Dep::File(p.to_string()))
                .unwrap_or_else(|| string("")))
        }),
    );
}
