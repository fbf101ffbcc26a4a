//! Measurements across the nodes of a cluster in which every node takes
//! writes (multi-leader, leaderless, and the PostgreSQL/pglogical peer):
//!
//! - [`Spread`]: the load spread over the nodes, operation by operation,
//!   one connection per node;
//! - [`lag`]: replication lag seen by a client, from a write's
//!   acknowledgement at one node to the moment a read on every other node
//!   returns it, under a background load;
//! - [`counter_race`]: two nodes increment one counter concurrently; how
//!   many acknowledged increments the converged value lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mimeo_node::bench::{self, OpError, RunOptions, Target, Workload};
use serde_json::json;

/// Several nodes of one cluster behind one [`Target`]: each operation goes
/// to the next node in turn, so every node takes an equal share of the
/// load whatever the concurrency.
pub(crate) struct Spread<T> {
    nodes: Vec<Arc<T>>,
    next: AtomicUsize,
}

impl<T> Spread<T> {
    /// Spreads operations over `nodes` (at least one).
    pub(crate) fn new(nodes: Vec<Arc<T>>) -> Spread<T> {
        assert!(!nodes.is_empty(), "a spread needs at least one node");
        Spread {
            nodes,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> &T {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        &self.nodes[i]
    }
}

impl<T: Target> Target for Spread<T> {
    async fn put(&self, key: String, value: Vec<u8>) -> Result<(), OpError> {
        self.pick().put(key, value).await
    }

    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, OpError> {
        self.pick().get(key).await
    }
}

/// What [`lag`] does.
#[derive(Clone, Debug)]
pub(crate) struct LagOptions {
    /// How long to probe.
    pub(crate) duration: Duration,
    /// Time between the starts of two probes (a probe that takes longer
    /// delays the next).
    pub(crate) interval: Duration,
    /// A probe not seen on a peer within this long counts as unseen.
    pub(crate) give_up: Duration,
    /// The background load (spread over every node), if any.
    pub(crate) load: Option<Workload>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

fn percentiles_ms(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
        "mean_ms": h.mean() / 1000.0,
    })
}

/// Measures replication lag from the client side. `nodes[0]` is the
/// origin; every `interval` it writes a fresh key there (`lag-probe-<n>`),
/// and once the write is acknowledged, one reader per other node reads the
/// key back to back until it is there. A probe's lag on a peer is from the
/// acknowledgement to the end of the first read that returned it; its lag
/// "on every peer" is the largest of those. Resolution: one read's round
/// trip (the read that first sees the key may have been sent up to one
/// round trip after the key arrived), and a probe is one write among the
/// load's, so lag is sampled, not measured for every write. One probe at a
/// time: the readers add at most one read in flight per peer to the load.
pub(crate) async fn lag<T: Target>(
    nodes: Vec<Arc<T>>,
    options: &LagOptions,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        nodes.len() >= 2,
        "lag needs an origin and at least one peer"
    );
    let load = options.load.clone().map(|workload| {
        let spread = Arc::new(Spread::new(nodes.clone()));
        tokio::spawn(async move { bench::run(spread, &workload, &RunOptions::default()).await })
    });
    let origin = Arc::clone(&nodes[0]);
    let peers = nodes[1..].to_vec();
    let (mut every, mut per_peer) = (histogram(), vec![histogram(); peers.len()]);
    let (mut unseen, mut failed_writes, mut probes) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while start.elapsed() < options.duration {
        ticker.tick().await;
        probes += 1;
        let key = format!("lag-probe-{probes}");
        if origin
            .put(key.clone(), bench::value_for(&key, 64))
            .await
            .is_err()
        {
            failed_writes += 1;
            continue;
        }
        let acked = Instant::now();
        let mut readers = Vec::new();
        for peer in &peers {
            let (peer, key, give_up) = (Arc::clone(peer), key.clone(), options.give_up);
            readers.push(tokio::spawn(async move {
                while acked.elapsed() < give_up {
                    if let Ok(Some(_)) = peer.get(key.clone()).await {
                        return Some(acked.elapsed());
                    }
                }
                None
            }));
        }
        let mut slowest = Some(Duration::ZERO);
        for (i, reader) in readers.into_iter().enumerate() {
            match reader.await? {
                Some(seen) => {
                    per_peer[i].saturating_record(seen.as_micros().max(1) as u64);
                    slowest = slowest.map(|s| s.max(seen));
                }
                None => {
                    unseen += 1;
                    slowest = None;
                }
            }
        }
        if let Some(slowest) = slowest {
            every.saturating_record(slowest.as_micros().max(1) as u64);
        }
    }
    let load = match load {
        Some(task) => Some(serde_json::to_value(task.await??)?),
        None => None,
    };
    Ok(json!({
        "probes": probes,
        "failed_writes": failed_writes,
        "unseen_on_a_peer": unseen,
        "lag_every_peer": percentiles_ms(&every),
        "lag_per_peer": per_peer.iter().map(percentiles_ms).collect::<Vec<_>>(),
        "load": load,
    }))
}

/// One node's side of [`counter_race`].
pub(crate) trait Counter: Send + Sync + 'static {
    /// Adds one to the counter; `Ok` once the node acknowledged it.
    fn increment(&self) -> impl std::future::Future<Output = Result<(), OpError>> + Send;
    /// The counter's value on this node.
    fn read(&self) -> impl std::future::Future<Output = Result<i64, OpError>> + Send;
}

/// What [`counter_race`] does.
#[derive(Clone, Debug)]
pub(crate) struct RaceOptions {
    /// Increments each node is sent (acknowledged or not).
    pub(crate) increments_per_node: u64,
    /// Concurrent incrementers per node.
    pub(crate) concurrency: usize,
    /// How long to wait for the nodes to agree once every increment is in.
    pub(crate) converge_within: Duration,
}

/// Every node of `nodes` (two, in the benchmark) takes increments of one
/// counter at once, `concurrency` at a time each, until each was sent
/// `increments_per_node`. Then the nodes are read until they agree (the
/// same value twice in a row on every node, 200 ms apart) or
/// `converge_within` passes. `lost` is the acknowledged increments the
/// agreed value does not hold (a counter must lose none; a register read,
/// incremented and written back loses those overwritten by a concurrent
/// one). An increment with an unknown outcome may or may not count: the
/// value must lie within acknowledged..=acknowledged + unknown (Jepsen's
/// counter bounds), and `lost` counts only what falls below.
pub(crate) async fn counter_race<C: Counter>(
    nodes: Vec<Arc<C>>,
    options: &RaceOptions,
) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let mut workers = Vec::new();
    for node in &nodes {
        let sent = Arc::new(AtomicUsize::new(0));
        for _ in 0..options.concurrency {
            let (node, sent, limit) = (
                Arc::clone(node),
                Arc::clone(&sent),
                options.increments_per_node as usize,
            );
            workers.push(tokio::spawn(async move {
                let (mut acked, mut unknown, mut failed) = (0u64, 0u64, 0u64);
                while sent.fetch_add(1, Ordering::Relaxed) < limit {
                    match node.increment().await {
                        Ok(()) => acked += 1,
                        Err(OpError::Unknown(_)) => unknown += 1,
                        Err(OpError::Definite(_)) => failed += 1,
                    }
                }
                (acked, unknown, failed)
            }));
        }
    }
    let (mut acked, mut unknown, mut failed) = (0u64, 0u64, 0u64);
    for worker in workers {
        let (a, u, f) = worker.await?;
        acked += a;
        unknown += u;
        failed += f;
    }
    let written = start.elapsed();
    let deadline = Instant::now() + options.converge_within;
    let mut previous: Option<Vec<i64>> = None;
    let (values, converged) = loop {
        let mut values = Vec::new();
        for node in &nodes {
            values.push(node.read().await.unwrap_or(i64::MIN));
        }
        let agreed = values.iter().all(|v| *v == values[0] && *v != i64::MIN);
        if agreed && previous.as_ref() == Some(&values) {
            break (values, true);
        }
        if Instant::now() > deadline {
            break (values, false);
        }
        previous = Some(values);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let final_value = values.iter().copied().max().unwrap_or(0);
    Ok(json!({
        "nodes": nodes.len(),
        "acknowledged": acked,
        "unknown": unknown,
        "failed": failed,
        "final_per_node": values,
        "converged": converged,
        "write_s": written.as_secs_f64(),
        "converge_s": (start.elapsed() - written).as_secs_f64(),
        "lost": (acked as i64 - final_value).max(0),
        "above_bounds": (final_value - (acked + unknown) as i64).max(0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A counter shared by every "node", incremented the way `lossy` says:
    /// atomically, or read, yield, write back (the register race).
    struct Shared {
        value: Arc<Mutex<i64>>,
        lossy: bool,
    }

    impl Counter for Shared {
        async fn increment(&self) -> Result<(), OpError> {
            if self.lossy {
                let read = *self.value.lock().unwrap();
                tokio::task::yield_now().await;
                *self.value.lock().unwrap() = read + 1;
            } else {
                *self.value.lock().unwrap() += 1;
            }
            Ok(())
        }

        async fn read(&self) -> Result<i64, OpError> {
            Ok(*self.value.lock().unwrap())
        }
    }

    async fn race(lossy: bool) -> serde_json::Value {
        let value = Arc::new(Mutex::new(0));
        let nodes = (0..2)
            .map(|_| {
                Arc::new(Shared {
                    value: Arc::clone(&value),
                    lossy,
                })
            })
            .collect();
        let options = RaceOptions {
            increments_per_node: 500,
            concurrency: 4,
            converge_within: Duration::from_secs(5),
        };
        counter_race(nodes, &options).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_atomic_counter_loses_nothing_and_a_read_modify_write_loses_some() {
        let exact = race(false).await;
        assert_eq!(exact["acknowledged"], 1000);
        assert_eq!(exact["lost"], 0, "{exact}");
        assert_eq!(exact["converged"], true);
        let lossy = race(true).await;
        assert_eq!(lossy["acknowledged"], 1000);
        assert!(lossy["lost"].as_i64().unwrap() > 0, "{lossy}");
    }

    /// Node 0 holds writes; node 1 sees each only after `delay`.
    struct Delayed {
        written: Arc<Mutex<Vec<(String, Instant)>>>,
        delay: Duration,
        origin: bool,
    }

    impl Target for Delayed {
        async fn put(&self, key: String, _value: Vec<u8>) -> Result<(), OpError> {
            self.written.lock().unwrap().push((key, Instant::now()));
            Ok(())
        }

        async fn get(&self, key: String) -> Result<Option<Vec<u8>>, OpError> {
            tokio::time::sleep(Duration::from_micros(200)).await;
            let written = self.written.lock().unwrap();
            let visible = written
                .iter()
                .any(|(k, at)| *k == key && (self.origin || at.elapsed() >= self.delay));
            Ok(visible.then(Vec::new))
        }
    }

    #[tokio::test]
    async fn lag_is_measured_from_the_acknowledgement_to_the_first_read_that_sees_it() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let node = |origin| {
            Arc::new(Delayed {
                written: Arc::clone(&written),
                delay: Duration::from_millis(30),
                origin,
            })
        };
        let options = LagOptions {
            duration: Duration::from_millis(300),
            interval: Duration::from_millis(10),
            give_up: Duration::from_secs(2),
            load: None,
        };
        let report = lag(vec![node(true), node(false)], &options).await.unwrap();
        let p50 = report["lag_every_peer"]["p50_ms"].as_f64().unwrap();
        assert!((30.0..45.0).contains(&p50), "{report}");
        assert_eq!(report["unseen_on_a_peer"], 0);
    }
}
