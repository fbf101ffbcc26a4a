//! Leaderless final reads: after the heal, every replica's *own* copy of
//! every touched key, until the replicas agree or a bound passes.
//!
//! A leaderless node coordinates every client read over R replicas, and
//! with read repair on, a read that sees replicas disagree writes the
//! merge back: final reads through the client path would both hide where
//! each replica stood and repair it. So the final reads here use the
//! node's diagnostic local read (`ClientRequest::LocalRead`), which
//! answers from the asked node's state and coordinates nothing: no quorum,
//! no repair. Whatever makes the replicas agree is the cluster's own
//! hinted handoff and anti-entropy (and read repair done before the heal).
//!
//! The harness does not know the ring: it first asks one node per key,
//! whose answer names the key's replicas (its preference list) whether or
//! not that node is one of them; then each round reads every key from
//! each of its N replicas (a node's keys one after another, the nodes at
//! once). A round agrees when every key's replicas all answered and hold
//! the same value (compared as the history records it: siblings, a
//! counter's value or a set's members, arrays sorted).
//!
//! With a recorder, each round's reads are recorded as `read`s answered
//! by the replica (node `i` as process `first + i`), for the convergence
//! and siblings checkers, which judge where each replica settled
//! ([`check::settled_reads`](crate::check)). Without one (the register
//! workload, whose checkers would take a lagging replica's copy for a
//! stale read; the set workload, whose final reads are its own), nothing
//! is recorded and only the outcome is kept in the run's results.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_client::Client;
use serde_json::Value;

use crate::check::convergence::canonical;
use crate::history::{OpType, Process, F_READ};
use crate::recorder::{Event, Recorder};
use crate::workload::{pinned_client, versioned_json, FinalReads, WorkloadSpec};

/// Where recorded final reads go: the recorder and the first of the
/// process ids reserved for them (one per node).
pub type Record<'a> = (&'a Arc<Recorder>, u64);

/// Reads every key of `keys` from each of its replicas in rounds until
/// every key's replicas agree or `bound` has passed (see the module
/// docs). A key whose replicas could not be learned within `bound` counts
/// as not agreeing.
pub async fn final_local_reads(
    spec: &WorkloadSpec,
    keys: &[String],
    record: Option<Record<'_>>,
    bound: Duration,
) -> FinalReads {
    let started = Instant::now();
    let deadline = started + bound;
    let clients: Vec<Option<Arc<Client>>> = (0..spec.nodes.len())
        .map(|i| pinned_client(spec, i).ok().map(Arc::new))
        .collect();
    let placement = placement(spec, &clients, keys, deadline).await;
    // Per node, the keys it replicates.
    let mut per_node: Vec<Vec<String>> = vec![Vec::new(); spec.nodes.len()];
    for (key, replicas) in &placement {
        for &i in replicas {
            per_node[i].push(key.clone());
        }
    }
    let per_node: Vec<Arc<Vec<String>>> = per_node.into_iter().map(Arc::new).collect();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, client) in clients.iter().enumerate() {
            let client = client.clone();
            let keys = Arc::clone(&per_node[i]);
            let addr = spec.nodes[i];
            let node = spec.node_ids[i].clone();
            let workload = spec.workload;
            let record = record
                .map(|(recorder, first)| (Arc::clone(recorder), Process::Client(first + i as u64)));
            tasks.spawn(async move {
                let mut values = BTreeMap::new();
                for key in keys.iter() {
                    if let Some((recorder, process)) = &record {
                        recorder.record(*process, read_event(OpType::Invoke, key, Value::Null));
                    }
                    let outcome = match &client {
                        Some(client) => match client.local_read_of(addr, key).await {
                            Ok(read) => read.value.ok_or_else(|| {
                                format!("{node} is not a replica of {key} any more")
                            }),
                            Err(e) => Err(e.to_string()),
                        },
                        None => Err("no client for this node".to_string()),
                    };
                    let event = match outcome {
                        Ok(value) => {
                            let json = versioned_json(workload, &value);
                            values.insert(key.clone(), canonical(&json));
                            read_event(OpType::Ok, key, json)
                        }
                        Err(e) => Event {
                            error: Some(e),
                            ..read_event(OpType::Fail, key, Value::Null)
                        },
                    };
                    if let Some((recorder, process)) = &record {
                        recorder.record(
                            *process,
                            Event {
                                node: Some(node.clone()),
                                ..event
                            },
                        );
                    }
                }
                (i, values)
            });
        }
        let mut by_node: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new(); clients.len()];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, values)) = joined {
                by_node[i] = values;
            }
        }
        let agreed = placement.len() == keys.len()
            && placement.iter().all(|(key, replicas)| {
                let mut copies = replicas.iter().map(|&i| by_node[i].get(key));
                let first = copies.next().flatten();
                first.is_some() && copies.all(|c| c == first)
            });
        if agreed || Instant::now() >= deadline {
            return FinalReads {
                rounds,
                agreed,
                waited: started.elapsed(),
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A final read's event on `key`.
fn read_event(kind: OpType, key: &str, value: Value) -> Event {
    Event {
        key: Some(key.to_owned()),
        ..Event::new(kind, F_READ, value)
    }
}

/// Each key's replicas, as node indices: asked of the nodes in turn (any
/// node names a key's preference list), retried until `deadline`. Keys
/// no node answered for are left out.
async fn placement(
    spec: &WorkloadSpec,
    clients: &[Option<Arc<Client>>],
    keys: &[String],
    deadline: Instant,
) -> BTreeMap<String, Vec<usize>> {
    let mut found = BTreeMap::new();
    let mut missing: Vec<&String> = keys.iter().collect();
    let mut turn = 0usize;
    while !missing.is_empty() {
        let mut still = Vec::new();
        for key in missing {
            let i = turn % clients.len();
            turn += 1;
            let answer = match &clients[i] {
                Some(client) => client.local_read_of(spec.nodes[i], key).await.ok(),
                None => None,
            };
            let replicas: Option<Vec<usize>> = answer.and_then(|read| {
                read.replicas
                    .iter()
                    .map(|r| spec.node_ids.iter().position(|id| id == r))
                    .collect()
            });
            match replicas {
                Some(replicas) if !replicas.is_empty() => {
                    found.insert(key.clone(), replicas);
                }
                _ => still.push(key),
            }
        }
        missing = still;
        if missing.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    found
}
