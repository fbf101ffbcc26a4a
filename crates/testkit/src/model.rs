//! Helpers for the stateright models (`tests/model.rs`).

use std::fmt::Debug;

/// The `Debug` renderings of `items`, sorted: a fingerprint of a multiset
/// (messages in flight, whose order does not tell two states apart).
pub fn unordered<T: Debug>(items: &[T]) -> Vec<String> {
    let mut rendered: Vec<String> = items.iter().map(|m| format!("{m:?}")).collect();
    rendered.sort();
    rendered
}

/// Implements `PartialEq`, `Eq` and `Hash` for a model state by its
/// `fingerprint(&self) -> String` method: a rendering of everything that
/// tells two states apart, so that stateright merges no two distinct
/// states (and does merge states equal up to the order of what is in
/// flight).
#[macro_export]
macro_rules! eq_by_fingerprint {
    ($state:ty) => {
        impl PartialEq for $state {
            fn eq(&self, other: &Self) -> bool {
                self.fingerprint() == other.fingerprint()
            }
        }
        impl Eq for $state {}
        impl std::hash::Hash for $state {
            fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
                self.fingerprint().hash(h);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    struct State(Vec<u8>);

    impl State {
        fn fingerprint(&self) -> String {
            format!("{:?}", unordered(&self.0))
        }
    }

    eq_by_fingerprint!(State);

    #[test]
    fn states_differing_only_in_order_are_equal() {
        assert!(State(vec![1, 2, 3]) == State(vec![3, 1, 2]));
        assert!(State(vec![1, 2]) != State(vec![1, 2, 2]));
    }
}
