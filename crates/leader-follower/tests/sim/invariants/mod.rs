//! The safety properties the simulation checks after every step, one per
//! file (after openraft's `tests-turmoil/src/invariants/`). Each says where
//! it comes from, and each has a test showing it rejects a violation.

mod acked_writes;
mod committed_log;
mod disk_loss;
mod election_safety;
mod state_machine;

pub(crate) use acked_writes::AckedWrites;
pub(crate) use committed_log::CommittedLog;
pub(crate) use disk_loss::DiskLoss;
pub(crate) use election_safety::LeadersPerTerm;
pub(crate) use state_machine::check_state_machine;
