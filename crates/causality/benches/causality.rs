//! Criterion benchmarks of the causality types.

fn main() {}
