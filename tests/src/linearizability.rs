//! A linearizability checker for per-key read/write/compare-and-set registers, the way
//! Porcupine does it: the Wing–Gong search with Lowe's refinement, split per key
//! (P-compositionality: a history is linearizable iff each key's sub-history is), memoizing
//! every `(set of linearized ops, register state)` already explored so no configuration is
//! searched twice.
//!
//! Why not a crate: stateright's `LinearizabilityTester` brings in a whole model checker, orders
//! operations by per-thread "last completed op" vectors rather than by recorded times, and
//! searches every interleaving without memoization, which does not finish on histories of
//! thousands of concurrent operations. It also has no notion of an operation whose outcome is
//! unknown past the end of the history with a real-time order around it. The search here is
//! ~200 lines and has its own tests.
//!
//! An operation whose outcome is unknown (a write or CAS that timed out or lost its connection)
//! is *indeterminate*: it gets an infinite completion time, as in Porcupine, so it may take
//! effect at any point after its invocation, or never (it is then linearized after
//! everything else, where it changes nothing anyone saw). Reads with unknown outcome say
//! nothing and are dropped.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write(String),
    /// Set to `new` if the register holds `expected` (`None`: only if it is absent).
    Cas {
        expected: Option<String>,
        new: String,
    },
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ret {
    /// The value read; `None` when the key was absent.
    Read(Option<String>),
    Write,
    /// Whether the swap happened.
    Cas(bool),
}

/// One client operation on one key. Times are nanoseconds on one monotonic clock.
#[derive(Clone, Debug)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub op: Op,
    pub invoked: u64,
    /// `None`: indeterminate (timed out, connection lost).
    pub completed: Option<(u64, Ret)>,
    /// Free text shown in explanations (which server, which read mode).
    pub note: String,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |ns: u64| ns as f64 / 1e9;
        let end = match &self.completed {
            Some((t, _)) => format!("{:8.3}s", secs(*t)),
            None => "       ? ".to_string(),
        };
        write!(
            f,
            "[{:8.3}s ..{end}] client {:>2} {}",
            secs(self.invoked),
            self.client,
            describe(&self.op, self.completed.as_ref().map(|c| &c.1))
        )?;
        if !self.note.is_empty() {
            write!(f, "  ({})", self.note)?;
        }
        Ok(())
    }
}

fn show(v: &Option<String>) -> String {
    v.as_deref()
        .map_or_else(|| "absent".to_string(), |v| format!("{v:?}"))
}

fn describe(op: &Op, ret: Option<&Ret>) -> String {
    let call = match op {
        Op::Read => "read".to_string(),
        Op::Write(v) => format!("write({v:?})"),
        Op::Cas { expected, new } => format!("cas({} -> {new:?})", show(expected)),
    };
    let ret = match ret {
        None => "indeterminate".to_string(),
        Some(Ret::Read(v)) => show(v),
        Some(Ret::Write) => "ok".to_string(),
        Some(Ret::Cas(b)) => b.to_string(),
    };
    format!("{call} -> {ret}")
}

/// Why a history was refused.
#[derive(Debug)]
pub enum CheckError {
    /// An operation that makes no sense (a write answered like a read, completion before
    /// invocation).
    Malformed(String),
    /// The search exceeded its step budget without an answer.
    TooHard {
        key: String,
        ops: usize,
    },
    NotLinearizable(Box<Violation>),
}

/// The key that could not be linearized, and where the search got stuck.
#[derive(Debug)]
pub struct Violation {
    pub key: String,
    /// Determinate operations on the key.
    pub ops: usize,
    /// The longest linearizable prefix found, in linearization order.
    pub prefix: Vec<Operation>,
    /// The register after that prefix.
    pub state: Option<String>,
    /// The determinate operations that could have come next, and whether each fits `state`
    /// (one that fits only led to a dead end further on).
    pub candidates: Vec<(bool, Operation)>,
    /// Every operation overlapping the window from the prefix's last few ops to the first
    /// candidate's completion, in invocation order.
    pub window: Vec<Operation>,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Malformed(m) => write!(f, "malformed history: {m}"),
            CheckError::TooHard { key, ops } => write!(
                f,
                "key {key:?}: the search over {ops} operations ran out of its step budget"
            ),
            CheckError::NotLinearizable(v) => v.fmt(f),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?} is not linearizable: the longest linearizable prefix holds {} of {} \
             operations, after which the register is {}.",
            self.key,
            self.prefix.len(),
            self.ops,
            show(&self.state)
        )?;
        writeln!(
            f,
            "The last operations of that prefix, in linearization order:"
        )?;
        for op in self.prefix.iter().rev().take(8).rev() {
            writeln!(f, "  {op}")?;
        }
        writeln!(
            f,
            "The operations that could come next, none of which leads anywhere:"
        )?;
        for (fits, op) in &self.candidates {
            let why = if *fits {
                "fits, but every order after it fails"
            } else {
                "does not fit"
            };
            writeln!(f, "  {op}  <- {why}")?;
        }
        writeln!(f, "Every operation on the key in that window:")?;
        for op in self.window.iter().take(60) {
            writeln!(f, "  {op}")?;
        }
        if self.window.len() > 60 {
            writeln!(f, "  ... and {} more", self.window.len() - 60)?;
        }
        Ok(())
    }
}

impl std::error::Error for CheckError {}

/// What a successful check looked at.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checked {
    pub keys: usize,
    /// Operations checked (indeterminate reads are dropped).
    pub ops: usize,
    pub indeterminate: usize,
}

/// Configurations the search may visit per key before giving up (a few seconds of work).
const STEP_BUDGET: u64 = 20_000_000;

/// Checks every key's history for linearizability against a register that starts absent.
pub fn check(history: &[Operation]) -> Result<Checked, CheckError> {
    let mut by_key: HashMap<&str, Vec<&Operation>> = HashMap::new();
    for op in history {
        validate(op)?;
        if op.completed.is_none() && op.op == Op::Read {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut keys: Vec<_> = by_key.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let mut checked = Checked::default();
    for (key, ops) in keys {
        check_key(key, &ops)?;
        checked.keys += 1;
        checked.ops += ops.len();
        checked.indeterminate += ops.iter().filter(|o| o.completed.is_none()).count();
    }
    Ok(checked)
}

fn validate(op: &Operation) -> Result<(), CheckError> {
    let bad = |why: &str| Err(CheckError::Malformed(format!("{why}: {op}")));
    match (&op.op, &op.completed) {
        (_, Some((t, _))) if *t < op.invoked => bad("completed before it was invoked"),
        (Op::Read, Some((_, Ret::Read(_))))
        | (Op::Write(_), Some((_, Ret::Write)))
        | (Op::Cas { .. }, Some((_, Ret::Cas(_))))
        | (_, None) => Ok(()),
        _ => bad("the answer does not match the operation"),
    }
}

/// An operation with its values interned: 0 is "absent".
#[derive(Clone, Copy)]
enum Step {
    Read(u32),
    Write(u32),
    Cas {
        expected: u32,
        new: u32,
        ok: Option<bool>,
    },
}

impl Step {
    /// The register after this op from `state`, or `None` if the op cannot happen there.
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Read(v) => (v == state).then_some(state),
            Step::Write(v) => Some(v),
            Step::Cas { expected, new, ok } => match ok {
                Some(true) => (state == expected).then_some(new),
                Some(false) => (state != expected).then_some(state),
                None => Some(if state == expected { new } else { state }),
            },
        }
    }
}

/// A doubly linked list of call and return events (Lowe's "dancing links"): node 0 is the
/// head; node `2i+1` is op i's call, `2i+2` its return. Lifting an op unlinks both; unlifting
/// in reverse order restores them.
struct Events {
    prev: Vec<usize>,
    next: Vec<usize>,
}

const NIL: usize = usize::MAX;

impl Events {
    fn unlink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = x;
        if x != NIL {
            self.prev[x] = p;
        }
    }
    fn relink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = n;
        if x != NIL {
            self.prev[x] = n;
        }
    }
    fn lift(&mut self, op: usize) {
        self.unlink(2 * op + 1);
        self.unlink(2 * op + 2);
    }
    fn unlift(&mut self, op: usize) {
        self.relink(2 * op + 2);
        self.relink(2 * op + 1);
    }
}

fn check_key(key: &str, ops: &[&Operation]) -> Result<(), CheckError> {
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut intern = |v: Option<&str>| match v {
        None => 0,
        Some(s) => {
            let n = ids.len() as u32 + 1;
            *ids.entry(s.to_string()).or_insert(n)
        }
    };
    let steps: Vec<Step> = ops
        .iter()
        .map(|o| match (&o.op, &o.completed) {
            (Op::Read, Some((_, Ret::Read(v)))) => Step::Read(intern(v.as_deref())),
            (Op::Write(v), _) => Step::Write(intern(Some(v))),
            (Op::Cas { expected, new }, c) => Step::Cas {
                expected: intern(expected.as_deref()),
                new: intern(Some(new)),
                ok: match c {
                    Some((_, Ret::Cas(b))) => Some(*b),
                    _ => None,
                },
            },
            // validate() and check() leave no other combination.
            _ => Step::Read(u32::MAX),
        })
        .collect();

    // Events in time order; at equal times calls first, so touching ops count as concurrent.
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
    for (i, o) in ops.iter().enumerate() {
        order.push((o.invoked, false, 2 * i + 1));
        let ret = o.completed.as_ref().map_or(u64::MAX, |c| c.0);
        order.push((ret, true, 2 * i + 2));
    }
    order.sort_unstable();
    let mut ev = Events {
        prev: vec![NIL; 2 * ops.len() + 1],
        next: vec![NIL; 2 * ops.len() + 1],
    };
    let mut last = 0;
    for &(_, _, n) in &order {
        ev.next[last] = n;
        ev.prev[n] = last;
        last = n;
    }

    let determinate = ops.iter().filter(|o| o.completed.is_some()).count();
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut done_determinate = 0usize;
    let mut cache: HashSet<(Box<[u64]>, u32)> = HashSet::new();
    // (op, state before it) for every op linearized so far.
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut best: (usize, Vec<usize>, u32) = (0, Vec::new(), 0);
    let mut state = 0u32;
    let mut entry = ev.next[0];
    let mut steps_taken = 0u64;

    while done_determinate < determinate {
        steps_taken += 1;
        if steps_taken > STEP_BUDGET {
            return Err(CheckError::TooHard {
                key: key.to_string(),
                ops: ops.len(),
            });
        }
        if entry == NIL {
            // Only reachable with no return events left, i.e. all determinate ops done.
            break;
        }
        let op = (entry - 1) / 2;
        let is_call = entry % 2 == 1;
        if is_call {
            if let Some(next_state) = steps[op].apply(state) {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone().into_boxed_slice(), next_state)) {
                    stack.push((op, state));
                    state = next_state;
                    if ops[op].completed.is_some() {
                        done_determinate += 1;
                    }
                    if stack.len() > best.0 {
                        best = (stack.len(), stack.iter().map(|s| s.0).collect(), state);
                    }
                    ev.lift(op);
                    entry = ev.next[0];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = ev.next[entry];
        } else {
            // A return event: its op had to be linearized by now. Backtrack.
            let Some((op, before)) = stack.pop() else {
                return Err(violation(key, ops, &steps, &ids, best));
            };
            linearized[op / 64] &= !(1 << (op % 64));
            if ops[op].completed.is_some() {
                done_determinate -= 1;
            }
            state = before;
            ev.unlift(op);
            entry = ev.next[2 * op + 1];
        }
    }
    Ok(())
}

/// Explains the longest linearizable prefix and what could not follow it.
fn violation(
    key: &str,
    ops: &[&Operation],
    steps: &[Step],
    ids: &HashMap<String, u32>,
    best: (usize, Vec<usize>, u32),
) -> CheckError {
    let (_, prefix, state) = best;
    let done: HashSet<usize> = prefix.iter().copied().collect();
    let end = |o: &Operation| o.completed.as_ref().map_or(u64::MAX, |c| c.0);
    // The first op left to complete had to be linearized before anything called after it.
    let first_return = (0..ops.len())
        .filter(|i| !done.contains(i))
        .map(|i| end(ops[i]))
        .min()
        .unwrap_or(u64::MAX);
    let mut candidates: Vec<(bool, Operation)> = (0..ops.len())
        .filter(|i| !done.contains(i) && ops[*i].invoked <= first_return)
        .filter(|i| ops[*i].completed.is_some())
        .map(|i| (steps[i].apply(state).is_some(), ops[i].clone()))
        .collect();
    candidates.sort_by_key(|(fits, o)| (*fits, o.invoked));
    let from = prefix
        .iter()
        .rev()
        .take(8)
        .map(|&i| ops[i].invoked)
        .min()
        .unwrap_or(0);
    let mut window: Vec<Operation> = ops
        .iter()
        .filter(|o| end(o) >= from && o.invoked <= first_return)
        .map(|o| (*o).clone())
        .collect();
    window.sort_by_key(|o| o.invoked);
    let state = ids
        .iter()
        .find(|(_, &n)| n == state && state != 0)
        .map(|(s, _)| s.to_string());
    CheckError::NotLinearizable(Box::new(Violation {
        key: key.to_string(),
        ops: ops.iter().filter(|o| o.completed.is_some()).count(),
        prefix: prefix.iter().map(|&i| ops[i].clone()).collect(),
        state,
        candidates,
        window,
    }))
}

/// A compact text of a history, for failure messages: every op on `key`, in invocation order.
pub fn render(history: &[Operation], key: &str) -> String {
    let mut ops: Vec<&Operation> = history.iter().filter(|o| o.key == key).collect();
    ops.sort_by_key(|o| o.invoked);
    let mut s = String::new();
    for o in ops {
        let _ = writeln!(s, "  {o}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn op(client: usize, op: Op, invoked: u64, completed: Option<(u64, Ret)>) -> Operation {
        Operation {
            client,
            key: "k".into(),
            op,
            invoked,
            completed,
            note: String::new(),
        }
    }
    fn w(c: usize, v: &str, a: u64, b: u64) -> Operation {
        op(c, Op::Write(v.into()), a, Some((b, Ret::Write)))
    }
    fn w_unknown(c: usize, v: &str, a: u64) -> Operation {
        op(c, Op::Write(v.into()), a, None)
    }
    fn r(c: usize, v: Option<&str>, a: u64, b: u64) -> Operation {
        op(c, Op::Read, a, Some((b, Ret::Read(v.map(str::to_string)))))
    }
    fn cas(c: usize, e: Option<&str>, n: &str, ok: Option<bool>, a: u64, b: u64) -> Operation {
        let o = Op::Cas {
            expected: e.map(str::to_string),
            new: n.into(),
        };
        op(c, o, a, ok.map(|ok| (b, Ret::Cas(ok))))
    }

    fn violation(h: &[Operation]) -> Violation {
        match check(h) {
            Err(CheckError::NotLinearizable(v)) => *v,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn accepts_concurrent_writes_and_reads_in_either_order() {
        // Two overlapping writes; readers may see them in either order, but agree on one.
        let h = vec![
            r(0, None, 0, 5),
            w(1, "a", 10, 50),
            w(2, "b", 20, 60),
            r(3, Some("b"), 30, 40),
            r(4, Some("a"), 55, 70),
            r(3, Some("a"), 80, 90),
        ];
        let done = check(&h).expect("linearizable: b, then a");
        assert_eq!((done.keys, done.ops), (1, 6));
        // A read of a before b's write began, with b winning later.
        let h = vec![w(1, "a", 0, 10), w(2, "b", 20, 30), r(3, Some("a"), 15, 25)];
        check(&h).expect("read linearized before b's write");
    }

    #[test]
    fn rejects_a_planted_stale_read() {
        let h = vec![
            w(1, "a", 0, 10),
            w(2, "b", 20, 30),
            r(3, Some("b"), 35, 38),
            r(4, Some("a"), 40, 50),
        ];
        let v = violation(&h);
        assert_eq!(v.key, "k");
        assert_eq!(v.state.as_deref(), Some("b"));
        assert!(
            v.candidates
                .iter()
                .any(|(fits, o)| !fits && o.completed == Some((50, Ret::Read(Some("a".into()))))),
            "{v}"
        );
        let text = v.to_string();
        assert!(
            text.contains("read -> \"a\"") && text.contains("does not fit"),
            "{text}"
        );
        // Even without the intermediate read, a later read of the older value fails.
        violation(&[w(1, "a", 0, 10), w(2, "b", 20, 30), r(4, Some("a"), 40, 50)]);
        // Reading a value never written fails too.
        violation(&[w(1, "a", 0, 10), r(4, Some("zz"), 40, 50)]);
        // And an absent key after a write completed.
        violation(&[w(1, "a", 0, 10), r(4, None, 40, 50)]);
    }

    #[test]
    fn an_indeterminate_write_may_or_may_not_take_effect() {
        let took = vec![
            w(1, "a", 0, 10),
            w_unknown(2, "b", 20),
            r(3, Some("b"), 1_000, 1_010),
        ];
        check(&took).expect("the unknown write took effect, even long after it was sent");
        let did_not = vec![
            w(1, "a", 0, 10),
            w_unknown(2, "b", 20),
            r(3, Some("a"), 1_000, 1_010),
        ];
        let done = check(&did_not).expect("the unknown write did not take effect (yet)");
        assert_eq!(done.indeterminate, 1);
        // But not before it was sent, and once seen it cannot be unseen.
        violation(&[
            w(1, "a", 0, 10),
            r(3, Some("b"), 12, 15),
            w_unknown(2, "b", 20),
        ]);
        violation(&[
            w(1, "a", 0, 10),
            w_unknown(2, "b", 20),
            r(3, Some("b"), 30, 40),
            r(3, Some("a"), 50, 60),
        ]);
        // Unknown reads are dropped.
        let h = vec![w(1, "a", 0, 10), op(3, Op::Read, 12, None)];
        assert_eq!(check(&h).expect("dropped").ops, 1);
    }

    #[test]
    fn cas_succeeds_only_on_the_expected_value() {
        let h = vec![
            cas(1, None, "a", Some(true), 0, 10),
            cas(2, None, "x", Some(false), 20, 30),
            cas(1, Some("a"), "b", Some(true), 40, 50),
            cas(2, Some("a"), "c", Some(false), 60, 70),
            r(3, Some("b"), 80, 90),
        ];
        check(&h).expect("create, refused create, swap, refused swap");
        // A refused CAS while the register held its expected value.
        violation(&[
            w(1, "a", 0, 10),
            cas(2, Some("a"), "b", Some(false), 20, 30),
        ]);
        // A successful CAS while it did not.
        violation(&[w(1, "a", 0, 10), cas(2, Some("z"), "b", Some(true), 20, 30)]);
        // Create-only-if-absent on a present key.
        violation(&[w(1, "a", 0, 10), cas(2, None, "b", Some(true), 20, 30)]);
        // Concurrent CASes from the same value: only one may win.
        violation(&[
            w(1, "a", 0, 10),
            cas(2, Some("a"), "b", Some(true), 20, 30),
            cas(3, Some("a"), "c", Some(true), 20, 30),
        ]);
        // A refused CAS explained by a concurrent write.
        check(&[
            w(1, "a", 0, 10),
            cas(2, Some("a"), "b", Some(false), 20, 30),
            w(3, "c", 15, 25),
        ])
        .expect("c was written before the CAS");
    }

    #[test]
    fn an_indeterminate_cas_applies_only_if_it_could() {
        let h = vec![
            w(1, "a", 0, 10),
            cas(2, Some("a"), "b", None, 20, 0),
            r(3, Some("b"), 100, 110),
        ];
        check(&h).expect("the unknown CAS swapped");
        let h = vec![
            w(1, "a", 0, 10),
            cas(2, Some("a"), "b", None, 20, 0),
            r(3, Some("a"), 100, 110),
        ];
        check(&h).expect("the unknown CAS did not swap");
        // It cannot swap from a value the register did not hold.
        violation(&[
            w(1, "z", 0, 10),
            cas(2, Some("a"), "b", None, 20, 0),
            r(3, Some("b"), 100, 110),
        ]);
    }

    #[test]
    fn keys_are_checked_apart_and_the_report_names_the_key() {
        let mut h = vec![w(1, "a", 0, 10), r(2, Some("a"), 20, 30)];
        let mut other = vec![w(1, "x", 0, 10), w(1, "y", 20, 30), r(2, Some("x"), 40, 50)];
        for o in &mut other {
            o.key = "other".into();
        }
        h.extend(other);
        let v = violation(&h);
        assert_eq!(v.key, "other");
    }

    #[test]
    fn malformed_operations_are_named() {
        let bad = op(1, Op::Write("a".into()), 0, Some((10, Ret::Read(None))));
        let e = check(&[bad]).expect_err("malformed");
        assert!(e.to_string().contains("does not match"), "{e}");
        let early = w(1, "a", 10, 5);
        let e = check(&[early]).expect_err("malformed");
        assert!(e.to_string().contains("before it was invoked"), "{e}");
    }

    /// A linearizable history from a simulated register: each op takes effect at a random
    /// instant inside its interval; some writes and CASes never get an answer.
    fn simulated(seed: u64, ops: usize, clients: usize, keys: usize) -> Vec<Operation> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut free_at = vec![0u64; clients];
        let mut planned = Vec::new();
        for i in 0..ops {
            let c = rng.random_range(0..clients);
            let invoked = free_at[c] + rng.random_range(0..50);
            let point = invoked + rng.random_range(1..100);
            let completed = point + rng.random_range(1..100);
            free_at[c] = completed;
            let key = format!("k{}", rng.random_range(0..keys));
            planned.push((
                point,
                i,
                c,
                key,
                invoked,
                completed,
                rng.random_range(0..10u8),
            ));
        }
        planned.sort();
        let mut regs: HashMap<String, Option<String>> = HashMap::new();
        let mut out = Vec::new();
        for (_, i, c, key, invoked, completed, kind) in planned {
            let reg = regs.entry(key.clone()).or_default();
            let value = format!("v{i}");
            let (o, ret) = match kind {
                0..=4 => (Op::Read, Ret::Read(reg.clone())),
                5..=7 => {
                    *reg = Some(value.clone());
                    (Op::Write(value), Ret::Write)
                }
                _ => {
                    // Expect the current value half the time.
                    let expected = if rng.random_bool(0.5) {
                        reg.clone()
                    } else {
                        Some("v0".into())
                    };
                    let ok = *reg == expected;
                    if ok {
                        *reg = Some(value.clone());
                    }
                    (
                        Op::Cas {
                            expected,
                            new: value,
                        },
                        Ret::Cas(ok),
                    )
                }
            };
            let unknown = !matches!(o, Op::Read) && rng.random_bool(0.02);
            out.push(Operation {
                client: c,
                key,
                op: o,
                invoked,
                completed: (!unknown).then_some((completed, ret)),
                note: String::new(),
            });
        }
        out
    }

    #[test]
    fn a_few_hundred_concurrent_ops_check_quickly() {
        for seed in 0..5 {
            let h = simulated(seed, 600, 10, 5);
            let t = std::time::Instant::now();
            let done = check(&h).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(done.keys, 5);
            assert!(
                t.elapsed() < std::time::Duration::from_millis(500),
                "seed {seed}: {:?}",
                t.elapsed()
            );
        }
        // One key, heavily concurrent.
        let h = simulated(7, 800, 10, 1);
        let t = std::time::Instant::now();
        check(&h).expect("linearizable");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_stale_read_planted_in_a_long_history_is_found() {
        let mut h = simulated(3, 600, 10, 1);
        // After the last completed write, a read returns the first value ever written.
        let last_write = h
            .iter()
            .filter(|o| matches!(o.op, Op::Write(_)) && o.completed.is_some())
            .max_by_key(|o| o.completed.as_ref().map(|c| c.0))
            .cloned()
            .expect("a write");
        let first = h
            .iter()
            .filter(|o| matches!(o.op, Op::Write(_)))
            .min_by_key(|o| o.invoked)
            .cloned()
            .expect("a write");
        let Op::Write(old) = first.op else {
            unreachable!()
        };
        let after = last_write.completed.as_ref().map_or(0, |c| c.0) + 1;
        h.push(r(99, Some(&old), after, after + 10));
        let t = std::time::Instant::now();
        let v = violation(&h);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
        assert!(
            v.candidates.iter().any(|(_, o)| o.client == 99),
            "the planted read is named: {v}"
        );
    }
}
