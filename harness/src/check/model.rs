//! Sequential models the linearizability checker searches against, written
//! as stateright [`SequentialSpec`]s.
//!
//! A key-value map is linearizable if and only if every key is
//! (linearizability is local, Herlihy and Wing's P-compositionality), so the
//! checker splits a history per key and the model of one key is a
//! [`Register`].

use stateright::semantics::SequentialSpec;

/// A register holding one value or nothing, with read, write and
/// compare-and-set.
///
/// Values are `Option<T>`: `None` is "absent" (a key never written, or a
/// JSON `null`). The checker interns JSON values into small integers, so
/// the state it hashes and clones is a few bytes whatever the values are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Register<T> {
    /// The current value, `None` when absent.
    pub value: Option<T>,
}

impl<T> Register<T> {
    /// A register whose initial value is `initial` (`None`: absent).
    pub fn new(initial: Option<T>) -> Register<T> {
        Register { value: initial }
    }
}

/// An operation on a [`Register`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOp<T> {
    /// Read the value.
    Read,
    /// Replace the value (`None` makes it absent).
    Write(Option<T>),
    /// If the value is `expected`, replace it with `new`.
    Cas {
        /// The value the register must hold.
        expected: Option<T>,
        /// The value it then holds.
        new: Option<T>,
    },
}

/// What a [`RegisterOp`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterRet<T> {
    /// A read returned this value (`None`: absent).
    ReadOk(Option<T>),
    /// A write took effect.
    WriteOk,
    /// A compare-and-set matched and took effect.
    CasOk,
    /// A compare-and-set did not match: no effect, but the value differed
    /// from the expected one at that instant.
    CasMismatch,
}

impl<T: Clone + PartialEq> SequentialSpec for Register<T> {
    type Op = RegisterOp<T>;
    type Ret = RegisterRet<T>;

    fn invoke(&mut self, op: &RegisterOp<T>) -> RegisterRet<T> {
        match op {
            RegisterOp::Read => RegisterRet::ReadOk(self.value.clone()),
            RegisterOp::Write(v) => {
                self.value = v.clone();
                RegisterRet::WriteOk
            }
            RegisterOp::Cas { expected, new } => {
                if self.value == *expected {
                    self.value = new.clone();
                    RegisterRet::CasOk
                } else {
                    RegisterRet::CasMismatch
                }
            }
        }
    }

    fn is_valid_step(&mut self, op: &RegisterOp<T>, ret: &RegisterRet<T>) -> bool {
        // Without the clone of `invoke` on reads: this runs at every step of
        // the search.
        match (op, ret) {
            (RegisterOp::Read, RegisterRet::ReadOk(v)) => self.value == *v,
            (RegisterOp::Write(v), RegisterRet::WriteOk) => {
                self.value = v.clone();
                true
            }
            (RegisterOp::Cas { expected, new }, RegisterRet::CasOk) => {
                let matches = self.value == *expected;
                if matches {
                    self.value = new.clone();
                }
                matches
            }
            (RegisterOp::Cas { expected, .. }, RegisterRet::CasMismatch) => self.value != *expected,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_compare_and_sets() {
        let mut r = Register::new(None::<u32>);
        assert_eq!(r.invoke(&RegisterOp::Read), RegisterRet::ReadOk(None));
        assert_eq!(r.invoke(&RegisterOp::Write(Some(1))), RegisterRet::WriteOk);
        let cas = |expected, new| RegisterOp::Cas { expected, new };
        assert_eq!(r.invoke(&cas(Some(2), Some(3))), RegisterRet::CasMismatch);
        assert_eq!(r.value, Some(1));
        assert_eq!(r.invoke(&cas(Some(1), Some(3))), RegisterRet::CasOk);
        assert_eq!(r.invoke(&RegisterOp::Read), RegisterRet::ReadOk(Some(3)));
        assert_eq!(r.invoke(&cas(Some(3), None)), RegisterRet::CasOk);
        assert_eq!(r.invoke(&cas(None, Some(4))), RegisterRet::CasOk);
        assert_eq!(r.value, Some(4));
    }

    #[test]
    fn valid_steps_agree_with_invoke() {
        let ops = [
            RegisterOp::Read,
            RegisterOp::Write(Some(1)),
            RegisterOp::Write(None),
            RegisterOp::Cas {
                expected: Some(1),
                new: Some(2),
            },
            RegisterOp::Cas {
                expected: None,
                new: Some(1),
            },
        ];
        let rets = [
            RegisterRet::ReadOk(None),
            RegisterRet::ReadOk(Some(1)),
            RegisterRet::WriteOk,
            RegisterRet::CasOk,
            RegisterRet::CasMismatch,
        ];
        for initial in [None, Some(1), Some(2)] {
            for op in &ops {
                for ret in &rets {
                    let mut by_invoke = Register::new(initial);
                    let expected = by_invoke.invoke(op) == *ret;
                    let mut by_step = Register::new(initial);
                    assert_eq!(
                        by_step.is_valid_step(op, ret),
                        expected,
                        "{initial:?} {op:?} {ret:?}"
                    );
                    if expected {
                        assert_eq!(by_step, by_invoke, "{initial:?} {op:?} {ret:?}");
                    }
                }
            }
        }
    }
}
