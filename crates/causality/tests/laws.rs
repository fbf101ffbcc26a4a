//! The algebraic laws every type must obey, under proptest with thousands
//! of cases per law:
//!
//! - every merge (join) is commutative, associative and idempotent, so
//!   replicas that exchange states in any order converge;
//! - the causal order of version vectors is a partial order, join is its
//!   least upper bound and meet its greatest lower bound;
//! - merging replicas' states equals applying the union of their
//!   operations, in any order (checked against naive models in `common`
//!   that keep every operation);
//! - encodings are deterministic: equal states encode to equal bytes.
//!
//! The laws of the hybrid logical clock are in `hlc.rs`.

mod common;

use std::collections::BTreeSet;

use common::{crdt_program, dvv_program, run_crdt, run_dvv, Check};
use mimeo_causality::{Causality, DvvSet, Lww, OrSet, PnCounter, Timestamp, VersionVector};
use proptest::prelude::*;

const CASES: u32 = 3000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

/// Small vectors over four nodes, so that equal, ordered and concurrent
/// pairs are all common.
fn vv() -> impl Strategy<Value = VersionVector> {
    prop::collection::vec(0..4u64, 4).prop_map(|counters| {
        ["a", "b", "c", "d"]
            .into_iter()
            .zip(counters)
            .collect::<VersionVector>()
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("encodes")
}

/// Commutative, associative and idempotent, for any merge.
fn assert_semilattice<T: PartialEq + std::fmt::Debug + serde::Serialize>(
    a: &T,
    b: &T,
    c: &T,
    merged: impl Fn(&T, &T) -> T,
) -> Result<(), TestCaseError> {
    let ab = merged(a, b);
    let ba = merged(b, a);
    prop_assert_eq!(&ab, &ba, "commutative");
    prop_assert_eq!(encode(&ab), encode(&ba), "equal states encode equally");
    prop_assert_eq!(&merged(&ab, c), &merged(a, &merged(b, c)), "associative");
    prop_assert_eq!(&merged(a, a), a, "idempotent");
    prop_assert_eq!(&merged(&ab, a), &ab, "absorbs what it merged");
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn version_vector_join_is_a_semilattice(a in vv(), b in vv(), c in vv()) {
        assert_semilattice(&a, &b, &c, VersionVector::joined)?;
    }

    #[test]
    fn causal_order_is_a_partial_order(a in vv(), x in vv(), y in vv(), z in vv()) {
        // b >= a and c >= b by construction, so transitivity is exercised;
        // z is unrelated.
        let b = a.joined(&x);
        let c = b.joined(&y);
        prop_assert!(a.descends(&a), "reflexive");
        prop_assert!(b.descends(&a) && c.descends(&b) && c.descends(&a), "transitive");
        for (p, q) in [(&a, &z), (&b, &z), (&c, &z), (&a, &c)] {
            if p.descends(q) && q.descends(p) {
                prop_assert_eq!(p, q, "antisymmetric");
            }
            if p.descends(q) && q.descends(&z) {
                prop_assert!(p.descends(&z), "transitive");
            }
            let reversed = match p.compare(q) {
                Causality::Before => Causality::After,
                Causality::After => Causality::Before,
                other => other,
            };
            prop_assert_eq!(q.compare(p), reversed, "compare is antisymmetric");
            prop_assert_eq!(p.dominates(q), p.compare(q) == Causality::After);
            prop_assert_eq!(p.partial_cmp(q).is_none(), p.concurrent(q));
        }
    }

    #[test]
    fn join_is_the_least_upper_bound_and_meet_the_greatest_lower(a in vv(), b in vv(), c in vv()) {
        let join = a.joined(&b);
        prop_assert!(join.descends(&a) && join.descends(&b));
        if c.descends(&a) && c.descends(&b) {
            prop_assert!(c.descends(&join));
        }
        let meet = a.meet(&b);
        prop_assert!(a.descends(&meet) && b.descends(&meet));
        if a.descends(&c) && b.descends(&c) {
            prop_assert!(meet.descends(&c));
        }
        prop_assert_eq!(a.meet(&b), b.meet(&a));
        prop_assert_eq!(a.meet(&a.joined(&b)), a.clone(), "absorption");
    }

    #[test]
    fn lww_merge_is_a_semilattice(stamps in prop::collection::vec((0..3u64, 0..3u64, 0..3usize), 3)) {
        // A timestamp names one write, so its value is a function of it.
        let registers: Vec<Lww<String>> = stamps
            .into_iter()
            .map(|(physical, logical, node)| {
                let ts = Timestamp::new(physical, logical, ["a", "b", "c"][node]);
                let value = ts.to_string();
                Lww::new(ts, value)
            })
            .collect();
        let merged = |x: &Lww<String>, y: &Lww<String>| {
            let mut m = x.clone();
            m.merge(y);
            m
        };
        assert_semilattice(&registers[0], &registers[1], &registers[2], merged)?;
        // The merge keeps the largest timestamp.
        let all = merged(&merged(&registers[0], &registers[1]), &registers[2]);
        let max = registers.iter().map(|r| &r.ts).max().unwrap();
        prop_assert_eq!(&all.ts, max);
    }

    #[test]
    fn dvv_set_matches_the_naive_model_and_merge_is_a_semilattice(program in dvv_program(24)) {
        let run = run_dvv(&program, Check::EveryStep)?;
        let [a, b, c] = &run.replicas[..] else { unreachable!() };
        assert_semilattice(a, b, c, DvvSet::merged)?;
        // The merge's history covers both sides', and no more.
        let ab = a.merged(b);
        prop_assert_eq!(ab.context(), a.context().joined(&b.context()));
    }

    #[test]
    fn dvv_set_merge_order_does_not_matter(program in dvv_program(24), order in Just([0usize, 1, 2]).prop_shuffle()) {
        // Merging every replica's state, in any order, gives the model's
        // merge of every replica's history.
        let run = run_dvv(&program, Check::Caller)?;
        let mut all = DvvSet::new();
        for &i in &order {
            all.merge(&run.replicas[i]);
        }
        let mut model = common::NaiveRegister::default();
        for m in &run.models {
            model.merge(m);
        }
        let values: std::collections::BTreeMap<_, _> = all.iter().map(|(d, &v)| (d, v)).collect();
        prop_assert_eq!(&values, &model.values);
        prop_assert_eq!(all.context(), model.context());
    }

    #[test]
    fn or_set_and_pn_counter_merge_equals_the_union_of_operations(
        program in crdt_program(32),
        order in Just([0usize, 1, 2]).prop_shuffle(),
    ) {
        // `run_crdt` checks every replica against the operation log after
        // every step; here, the merge of all three in any order against
        // the union of all three logs.
        let run = run_crdt(&program, Check::EveryStep)?;
        let mut set = OrSet::new();
        let mut counter = PnCounter::new();
        let mut log = common::OpLog::default();
        for &i in &order {
            set.merge(&run.sets[i]);
            counter.merge(&run.counters[i]);
            log.merge(&run.logs[i]);
        }
        prop_assert_eq!(set.iter().copied().collect::<BTreeSet<u8>>(), log.elements());
        prop_assert_eq!(counter.value(), log.value());
        prop_assert_eq!(set.clock().events(), log.adds.len() as u64);
    }

    #[test]
    fn or_set_and_pn_counter_merges_are_semilattices(program in crdt_program(32)) {
        let run = run_crdt(&program, Check::Caller)?;
        let [a, b, c] = &run.sets[..] else { unreachable!() };
        assert_semilattice(a, b, c, OrSet::merged)?;
        let [a, b, c] = &run.counters[..] else { unreachable!() };
        assert_semilattice(a, b, c, PnCounter::merged)?;
    }

    #[test]
    fn encodings_round_trip(program in dvv_program(16), ops in crdt_program(16), v in vv()) {
        let run = run_dvv(&program, Check::Caller)?;
        let crdts = run_crdt(&ops, Check::Caller)?;
        fn round_trip<T>(value: &T) -> Result<(), TestCaseError>
        where
            T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
        {
            let bytes = encode(value);
            let decoded: T = postcard::from_bytes(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&decoded, value);
            prop_assert_eq!(encode(&decoded), bytes);
            let json = serde_json::to_string(value).unwrap();
            prop_assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), value);
            Ok(())
        }
        round_trip(&run.replicas[0])?;
        round_trip(&crdts.sets[0])?;
        round_trip(&crdts.counters[0])?;
        round_trip(&v)?;
    }
}
