//! The `or-set` workload (multi-leader): adds and removes of elements of
//! a few observed-remove sets, each worker on its own node, checked by
//! [`check::orset`](crate::check::orset) and for convergence.
//!
//! A worker reads a set on its node, then (unless it reads again) adds a
//! fresh unique element, removes an element that read returned, or adds
//! again an element that read returned. It removes only what it observed,
//! as an observed-remove set's remover does; the re-adds race removes of
//! the same element on other nodes, which is where add-wins shows.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_client::{Client, Error as ClientError, VersionedValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{pinned_client, versioned_json, Shared, Workload, WorkloadSpec};
use crate::check::orset::{F_SADD, F_SREM};
use crate::history::{OpType, Process, F_READ};
use crate::recorder::{Event, Recorder};

/// Of the steps after a read that are not another read: the share of
/// removes of an element the read returned...
const REMOVE_SHARE: f64 = 0.4;
/// ...and of adds of such an element again; the rest add fresh elements.
const READD_SHARE: f64 = 0.15;

/// One operation of the `or-set` workload.
#[derive(Clone, Debug)]
enum SetOp {
    Read { key: String },
    Add { key: String, element: u64 },
    Remove { key: String, element: u64 },
}

impl SetOp {
    fn key(&self) -> &str {
        match self {
            SetOp::Read { key } | SetOp::Add { key, .. } | SetOp::Remove { key, .. } => key,
        }
    }

    fn f(&self) -> &'static str {
        match self {
            SetOp::Read { .. } => F_READ,
            SetOp::Add { .. } => F_SADD,
            SetOp::Remove { .. } => F_SREM,
        }
    }

    fn argument(&self) -> Value {
        match self {
            SetOp::Read { .. } => Value::Null,
            SetOp::Add { element, .. } | SetOp::Remove { element, .. } => json!(element),
        }
    }

    fn event(&self, kind: OpType, value: Value) -> Event {
        Event {
            key: Some(self.key().to_owned()),
            ..Event::new(kind, self.f(), value)
        }
    }

    async fn run(&self, client: &Client) -> Result<Option<VersionedValue>, ClientError> {
        match self {
            SetOp::Read { key } => Ok(Some(client.get_versioned(key, None, None).await?.value)),
            SetOp::Add { key, element } => {
                client.set_add(key, element.to_string(), None).await?;
                Ok(None)
            }
            SetOp::Remove { key, element } => {
                client.set_remove(key, element.to_string(), None).await?;
                Ok(None)
            }
        }
    }
}

/// What follows a read of `key` that returned `value`: another read
/// (`None`), or an add or remove.
fn follow_read(
    spec: &WorkloadSpec,
    shared: &Shared,
    rng: &mut StdRng,
    key: &str,
    value: &VersionedValue,
) -> Option<SetOp> {
    let observed: Vec<u64> = match value {
        VersionedValue::Set(members) => members
            .iter()
            .filter_map(|m| std::str::from_utf8(m).ok()?.parse().ok())
            .collect(),
        _ => Vec::new(),
    };
    if rng.random::<f64>() < spec.read_fraction {
        return None;
    }
    let key = key.to_owned();
    let roll: f64 = rng.random();
    if !observed.is_empty() && roll < REMOVE_SHARE + READD_SHARE {
        let element = observed[rng.random_range(0..observed.len())];
        return Some(if roll < REMOVE_SHARE {
            SetOp::Remove { key, element }
        } else {
            SetOp::Add { key, element }
        });
    }
    Some(SetOp::Add {
        key,
        element: shared.next_element.fetch_add(1, Ordering::Relaxed),
    })
}

/// Runs worker `w` of the `or-set` workload until `deadline`: every
/// operation on node `w % n`.
pub(super) async fn run_worker(
    w: usize,
    spec: Arc<WorkloadSpec>,
    shared: Arc<Shared>,
    recorder: Arc<Recorder>,
    deadline: Instant,
) -> Result<(), ClientError> {
    let node = w % spec.nodes.len();
    let client = pinned_client(&spec, node)?;
    let node_id = spec.node_ids[node].clone();
    let mut rng = StdRng::seed_from_u64(spec.seed.wrapping_add(w as u64));
    let mut process = w as u64;
    let mut next: Option<SetOp> = None;
    while Instant::now() < deadline {
        let op = next.take().unwrap_or_else(|| SetOp::Read {
            key: format!("o{}", rng.random_range(0..spec.keys.max(1))),
        });
        shared
            .touched
            .lock()
            .expect("no worker panics holding it")
            .insert(op.key().to_owned());
        recorder.record(
            Process::Client(process),
            op.event(OpType::Invoke, op.argument()),
        );
        let outcome = op.run(&client).await;
        let event = match &outcome {
            Ok(Some(value)) => {
                next = follow_read(&spec, &shared, &mut rng, op.key(), value);
                op.event(OpType::Ok, versioned_json(Workload::OrSet, value))
            }
            Ok(None) => op.event(OpType::Ok, op.argument()),
            Err(e) => Event {
                error: Some(e.to_string()),
                ..op.event(
                    if e.is_definite() {
                        OpType::Fail
                    } else {
                        OpType::Info
                    },
                    op.argument(),
                )
            },
        };
        let kind = event.kind;
        recorder.record(
            Process::Client(process),
            Event {
                node: Some(node_id.clone()),
                ..event
            },
        );
        if kind == OpType::Info {
            // Jepsen's rule: the old process may still have an operation in
            // flight; the fresh one has observed nothing.
            process = shared.next_process.fetch_add(1, Ordering::Relaxed);
            next = None;
        }
        if kind == OpType::Fail {
            next = None;
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..50))).await;
        }
    }
    Ok(())
}
