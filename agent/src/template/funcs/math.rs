//! `add`, `subtract`, `multiply`, `divide`, `modulo`, `minimum`, `maximum` with
//! consul-template's argument order (`{{ 10 | subtract 3 }}` is 7) and Go's numeric kinds:
//! int with int stays int, anything with a float is a float. `minimum N LIST` is also
//! Muster's instance guard: `service "web" | minimum 3` (see `data::guard_minimum`).

use gotmpl::{FuncMap, Value};

use super::{arity, func};

#[derive(Clone, Copy)]
enum Num {
    I(i64),
    U(u64),
    F(f64),
}

fn num(op: &str, v: &Value) -> Result<Num, String> {
    match v {
        Value::Int(n) => Ok(Num::I(*n)),
        Value::Uint(n) => Ok(Num::U(*n)),
        Value::Float(f) => Ok(Num::F(*f)),
        other => Err(format!(
            "{op}: unknown type for {other} ({})",
            other.type_name()
        )),
    }
}

fn f(n: Num) -> f64 {
    match n {
        Num::I(i) => i as f64,
        Num::U(u) => u as f64,
        Num::F(x) => x,
    }
}

fn out(n: Num) -> Value {
    match n {
        Num::I(i) => Value::Int(i),
        Num::U(u) => Value::Uint(u),
        Num::F(x) => Value::Float(x),
    }
}

/// `b OP a` as consul-template computes it (`a` is the last argument, the piped one).
fn arith(op: &'static str, a: Num, b: Num) -> Result<Value, String> {
    let int = |x: i64, y: i64| -> Result<Value, String> {
        Ok(Value::Int(match op {
            "add" => x.wrapping_add(y),
            "subtract" => x.wrapping_sub(y),
            "multiply" => x.wrapping_mul(y),
            "divide" | "modulo" if y == 0 => {
                return Err(format!("{op}: runtime error: integer divide by zero"))
            }
            "divide" => x.wrapping_div(y),
            _ => x.wrapping_rem(y),
        }))
    };
    match (a, b) {
        (Num::U(x), Num::U(y)) => {
            if matches!(op, "divide" | "modulo") && y == 0 {
                return Err(format!("{op}: runtime error: integer divide by zero"));
            }
            Ok(Value::Uint(match op {
                "add" => x.wrapping_add(y),
                "subtract" => x.wrapping_sub(y),
                "multiply" => x.wrapping_mul(y),
                "divide" => x / y,
                _ => x % y,
            }))
        }
        (Num::I(x), Num::I(y)) => int(x, y),
        (Num::I(x), Num::U(y)) => int(x, y as i64),
        (Num::U(x), Num::I(y)) => int(x as i64, y),
        (x, y) if op == "modulo" => Err(format!(
            "modulo: unknown type for {} (float64)",
            if matches!(x, Num::F(_)) { f(x) } else { f(y) }
        )),
        (x, y) => Ok(Value::Float(match op {
            "add" => f(x) + f(y),
            "subtract" => f(x) - f(y),
            "multiply" => f(x) * f(y),
            _ => f(x) / f(y),
        })),
    }
}

fn less(a: Num, b: Num) -> bool {
    match (a, b) {
        (Num::I(x), Num::I(y)) => x < y,
        (Num::U(x), Num::U(y)) => x < y,
        (Num::I(x), Num::U(y)) => x < y as i64,
        (Num::U(x), Num::I(y)) => (x as i64) < y,
        (x, y) => f(x) < f(y),
    }
}

/// `minimum`/`maximum` of two numbers: the smaller (larger) one, of its own kind.
pub(super) fn min_max(op: &str, args: &[Value]) -> Result<Value, String> {
    arity(op, args, 2, 2)?;
    let (b, a) = (num(op, &args[0])?, num(op, &args[1])?);
    let pick_a = if op == "minimum" {
        less(a, b)
    } else {
        less(b, a)
    };
    Ok(out(if pick_a { a } else { b }))
}

pub(super) fn register(m: &mut FuncMap) {
    for op in ["add", "subtract", "multiply", "divide", "modulo"] {
        m.insert(
            op.into(),
            func(move |args| {
                arity(op, args, 2, 2)?;
                arith(op, num(op, &args[1])?, num(op, &args[0])?)
            }),
        );
    }
    m.insert("maximum".into(), func(|a| min_max("maximum", a)));
    // `minimum` on numbers; the data sources replace it with the guard-aware one.
    m.insert("minimum".into(), func(|a| min_max("minimum", a)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(op: &'static str, b: Value, a: Value) -> Result<Value, String> {
        arith(op, num(op, &a)?, num(op, &b)?)
    }

    #[test]
    fn piped_value_is_the_left_operand() {
        assert_eq!(
            call("subtract", Value::Int(3), Value::Int(10)),
            Ok(Value::Int(7))
        );
        assert_eq!(
            call("divide", Value::Int(2), Value::Float(5.0)),
            Ok(Value::Float(2.5))
        );
        assert!(call("divide", Value::Int(0), Value::Int(5)).is_err());
    }
}
