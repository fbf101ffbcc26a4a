//! The linearizability checker against stateright's own
//! `LinearizabilityTester`, an exhaustive search without memoization, on
//! thousands of small random register histories with the same
//! `SequentialSpec`: the two must agree on every one.
//!
//! Histories come from simulating a register: three workers invoke reads,
//! writes and compare-and-sets of values 0..3, each taking effect at a
//! random instant between invocation and completion; some end `info` (or
//! never complete) and may or may not have taken effect; some fail
//! without effect. Half of them then have one result corrupted, so about
//! as many are invalid as valid. A disagreement prints the seed and the
//! history.

use std::time::Duration;

use mimeo_harness::check::linear::{check, LinearOptions};
use mimeo_harness::check::model::{Register, RegisterOp, RegisterRet};
use mimeo_harness::{History, Op, OpType, Process, Verdict};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

const HISTORIES: u64 = 2000;
const WORKERS: usize = 3;
const VALUES: u64 = 3;

/// How an operation ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// Returned what the register gave (a mismatched cas is a `fail`
    /// with `cas-mismatch`).
    Returned,
    /// Unknown outcome: an `info` completion, or none at all.
    Unknown { recorded: bool },
    /// Certainly no effect.
    Failed,
}

/// One operation of the simulation.
#[derive(Clone, Debug)]
struct SimOp {
    process: u64,
    op: RegisterOp<u64>,
    end: End,
    /// What the register returned when it took effect (`None`: not yet, or
    /// never).
    ret: Option<RegisterRet<u64>>,
}

/// An event of the history: an invocation or a completion of `ops[i]`.
#[derive(Clone, Copy, Debug)]
enum Event {
    Invoke(usize),
    Complete(usize),
}

struct Simulated {
    initial: Option<u64>,
    ops: Vec<SimOp>,
    events: Vec<Event>,
}

fn random_op(rng: &mut StdRng) -> RegisterOp<u64> {
    let value = |rng: &mut StdRng| {
        if rng.random_bool(0.15) {
            None
        } else {
            Some(rng.random_range(0..VALUES))
        }
    };
    match rng.random_range(0..3) {
        0 => RegisterOp::Read,
        1 => RegisterOp::Write(Some(rng.random_range(0..VALUES))),
        _ => RegisterOp::Cas {
            expected: value(rng),
            new: Some(rng.random_range(0..VALUES)),
        },
    }
}

fn simulate(seed: u64, worker_count: usize, total: usize) -> Simulated {
    let mut rng = StdRng::seed_from_u64(seed);
    let initial = rng.random_bool(0.5).then_some(0);
    let mut register = Register::new(initial);
    let mut ops: Vec<SimOp> = Vec::new();
    let mut events = Vec::new();
    // Per worker: its process id and its pending operation, if any.
    let mut workers: Vec<(u64, Option<usize>)> =
        (0..worker_count as u64).map(|p| (p, None)).collect();
    let mut next_process = worker_count as u64;
    while ops.len() < total || workers.iter().any(|(_, pending)| pending.is_some()) {
        let w = rng.random_range(0..worker_count);
        let (process, pending) = workers[w];
        match pending {
            None if ops.len() < total => {
                let end = match rng.random_range(0..20) {
                    0..=2 => End::Unknown {
                        recorded: rng.random_bool(0.5),
                    },
                    3 => End::Failed,
                    _ => End::Returned,
                };
                ops.push(SimOp {
                    process,
                    op: random_op(&mut rng),
                    end,
                    ret: None,
                });
                events.push(Event::Invoke(ops.len() - 1));
                workers[w].1 = Some(ops.len() - 1);
            }
            None => {}
            Some(i) => {
                let op = &mut ops[i];
                let may_apply = match op.end {
                    End::Returned => true,
                    End::Unknown { .. } => rng.random_bool(0.5),
                    End::Failed => false,
                };
                if op.ret.is_none() && may_apply && rng.random_bool(0.5) {
                    // Its linearization point: now.
                    op.ret = Some(register.invoke(&op.op));
                } else if op.ret.is_some() || !matches!(op.end, End::Returned) {
                    if op.end != (End::Unknown { recorded: false }) {
                        events.push(Event::Complete(i));
                    }
                    workers[w].1 = None;
                    if matches!(op.end, End::Unknown { .. }) {
                        // Jepsen's rule: the worker continues as a new process.
                        workers[w].0 = next_process;
                        next_process += 1;
                    }
                }
            }
        }
    }
    Simulated {
        initial,
        ops,
        events,
    }
}

/// Changes the result of one determinate read or cas, which usually
/// makes the history non-linearizable.
fn corrupt(sim: &mut Simulated, rng: &mut StdRng) {
    let returned: Vec<usize> = (0..sim.ops.len())
        .filter(|&i| {
            sim.ops[i].end == End::Returned && !matches!(sim.ops[i].op, RegisterOp::Write(_))
        })
        .collect();
    if returned.is_empty() {
        return;
    }
    let i = returned[rng.random_range(0..returned.len())];
    let ret = sim.ops[i]
        .ret
        .as_mut()
        .expect("a returned operation took effect");
    *ret = match ret {
        RegisterRet::ReadOk(v) => {
            let other = (v.map_or(0, |v| v + 1) + rng.random_range(0..VALUES)) % (VALUES + 1);
            RegisterRet::ReadOk(other.checked_sub(1))
        }
        RegisterRet::CasOk => RegisterRet::CasMismatch,
        RegisterRet::CasMismatch => RegisterRet::CasOk,
        RegisterRet::WriteOk => RegisterRet::WriteOk,
    };
}

fn json_value(v: Option<u64>) -> Value {
    v.map_or(Value::Null, |v| json!(v))
}

fn to_history(sim: &Simulated) -> History {
    let ops = sim
        .events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let (i, invoke) = match *event {
                Event::Invoke(i) => (i, true),
                Event::Complete(i) => (i, false),
            };
            let op = &sim.ops[i];
            let (f, argument) = match &op.op {
                RegisterOp::Read => ("read", Value::Null),
                RegisterOp::Write(v) => ("write", json_value(*v)),
                RegisterOp::Cas { expected, new } => {
                    ("cas", json!([json_value(*expected), json_value(*new)]))
                }
            };
            let (kind, value, error) = match (invoke, op.end, &op.ret) {
                (true, ..) => (OpType::Invoke, argument, None),
                (false, End::Unknown { .. }, _) => (OpType::Info, argument, Some("timeout")),
                (false, End::Failed, _) => (OpType::Fail, argument, Some("unavailable")),
                (false, End::Returned, Some(RegisterRet::ReadOk(v))) => {
                    (OpType::Ok, json_value(*v), None)
                }
                (false, End::Returned, Some(RegisterRet::CasMismatch)) => {
                    (OpType::Fail, argument, Some("cas-mismatch"))
                }
                (false, End::Returned, _) => (OpType::Ok, argument, None),
            };
            Op {
                index: index as u64,
                time_ns: index as u64,
                process: Process::Client(op.process),
                kind,
                f: f.into(),
                key: None,
                value,
                node: None,
                error: error.map(str::to_string),
            }
        })
        .collect();
    History::new(ops)
}

/// Stateright's verdict: failed operations are left out (they had no
/// effect), indeterminate ones stay in flight.
fn stateright_linearizable(sim: &Simulated) -> bool {
    let mut tester = LinearizabilityTester::new(Register::new(sim.initial));
    for event in &sim.events {
        let (i, invoke) = match *event {
            Event::Invoke(i) => (i, true),
            Event::Complete(i) => (i, false),
        };
        let op = &sim.ops[i];
        match (invoke, op.end) {
            (_, End::Failed) | (false, End::Unknown { .. }) => {}
            (true, _) => {
                tester
                    .on_invoke(op.process, op.op.clone())
                    .expect("well-formed history");
            }
            (false, End::Returned) => {
                let ret = op.ret.clone().expect("a returned operation took effect");
                tester
                    .on_return(op.process, ret)
                    .expect("well-formed history");
            }
        }
    }
    tester.is_consistent()
}

#[test]
fn agrees_with_stateright_on_small_random_histories() {
    let options = LinearOptions {
        budget: Duration::from_secs(10),
        threads: 1,
        ..Default::default()
    };
    let (mut valid, mut invalid) = (0, 0);
    for seed in 0..HISTORIES {
        let ops = 6 + (seed % 3) as usize;
        let mut sim = simulate(seed, WORKERS, ops);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        if rng.random_bool(0.5) {
            corrupt(&mut sim, &mut rng);
        }
        let history = to_history(&sim);
        history
            .validate()
            .unwrap_or_else(|e| panic!("seed {seed}: generated a malformed history: {e}"));
        let options = LinearOptions {
            initial: sim.initial.map(|v| json!(v)),
            ..options.clone()
        };
        let ours = check(&history, &options);
        let theirs = stateright_linearizable(&sim);
        let expected = if theirs {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        if ours.verdict != expected {
            let mut jsonl = Vec::new();
            history.write_jsonl(&mut jsonl).unwrap();
            panic!(
                "seed {seed}: stateright says {expected}, the checker says {} ({})\ninitial {:?}\n{}",
                ours.verdict,
                ours.summary,
                sim.initial,
                String::from_utf8_lossy(&jsonl)
            );
        }
        match expected {
            Verdict::Valid => valid += 1,
            _ => invalid += 1,
        }
    }
    // Both verdicts must be well represented, or the test proves little.
    assert!(
        valid > HISTORIES / 4 && invalid > HISTORIES / 4,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn a_long_contended_linearizable_history_is_valid() {
    // Too long for stateright's search: linearizable by construction.
    let sim = simulate(1, 12, 3000);
    let options = LinearOptions {
        initial: sim.initial.map(|v| json!(v)),
        budget: Duration::from_secs(60),
        threads: 1,
    };
    let result = check(&to_history(&sim), &options);
    assert_eq!(result.verdict, Verdict::Valid, "{}", result.summary);
}
