//! `bench-compare`: one workload definition (`mimeo_node::bench::Workload`)
//! run against Mimeo, etcd or Redis, so the numbers in BENCHMARKS.md are
//! ratios measured the same way (the redb/lmdb comparison style).
//!
//! ```text
//! bench-compare run --target mimeo --endpoint 127.0.0.1:7001 --certs certs -c 64 -d 10s
//! bench-compare run --target etcd  --endpoint 127.0.0.1:2379 -c 64 -d 10s
//! bench-compare run --target redis --endpoint 127.0.0.1:6379 -c 64 -d 10s
//! bench-compare fsync-rate --dir /var/tmp --duration 5s
//! bench-compare failover --target etcd --endpoint a,b,c -c 16 -d 12s \
//!     --kill-after 4s --kill-command 'kill -KILL 1234'
//! # every node takes writes: the load spread over the nodes
//! bench-compare run --target mimeo --endpoint a,b,c --spread -c 64 -d 10s
//! bench-compare run --target postgres --endpoint 127.0.0.1:25432,127.0.0.1:25433 --spread -c 64
//! # replication lag: probes written at the first endpoint, read on the others
//! bench-compare lag --target mimeo --endpoint a,b,c -d 10s --load-concurrency 16
//! # two nodes increment one counter at once: how many increments were lost
//! bench-compare counter-race --target mimeo --endpoint a,b --increments 2000 -c 8
//! bench-compare counter-race --target mimeo --endpoint a,b --register --increments 2000 -c 8
//! ```
//!
//! Every run prints one JSON report on stdout (the `mimeo bench --json`
//! format); `scripts/bench-compare.sh` drives the whole comparison.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mimeo_node::bench::{self, OpError, RunOptions, Stop, Target, Workload};

mod multi;
mod postgres;

use multi::{Counter, LagOptions, RaceOptions, Spread};
use postgres::Postgres;

#[derive(Debug, Parser)]
#[command(name = "bench-compare")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the workload against one store and print a JSON report.
    Run(RunArgs),
    /// Measure the raw rate of append + fdatasync on one file: the physical
    /// limit of `fsync = always` on this disk (by default with zeros written
    /// ahead of the records, as Mimeo's log does).
    FsyncRate {
        /// Directory for the scratch file.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// How long to measure.
        #[arg(long, default_value = "5s", value_parser = parse_secs)]
        duration: Duration,
        /// Bytes appended before each fdatasync.
        #[arg(long, default_value_t = 256)]
        bytes: usize,
        /// Keep this many bytes of zeros written ahead of the records, as
        /// Mimeo's log does, so that most fdatasyncs write data blocks only
        /// (no allocation, no change of length). 0: the file grows with
        /// every write.
        #[arg(long, default_value_t = 1 << 20)]
        preallocate: u64,
    },
    /// Run unique-key writes, run a command (SIGKILL the leader) part-way
    /// through, and report how long writes went unacknowledged around it.
    Failover(FailoverArgs),
    /// Replication lag seen by a client: probe writes at the first
    /// endpoint, read back to back on every other endpoint until there,
    /// under an optional background load spread over every endpoint
    /// (mimeo or postgres; each endpoint is read on its own connection).
    Lag(LagArgs),
    /// Every endpoint (two, usually) increments one counter at once; then
    /// the nodes are read until they agree, and the acknowledged
    /// increments the agreed value lacks are reported as lost (mimeo or
    /// postgres).
    CounterRace(RaceArgs),
}

#[derive(Debug, clap::Args)]
struct LagArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// How long to probe.
    #[arg(short, long, default_value = "10s", value_parser = parse_secs)]
    duration: Duration,
    /// Time between two probes.
    #[arg(long, default_value = "0.01s", value_parser = parse_secs)]
    interval: Duration,
    /// Background load: concurrent writers spread over every endpoint
    /// (0: none).
    #[arg(long, default_value_t = 16)]
    load_concurrency: usize,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
}

#[derive(Debug, clap::Args)]
struct RaceArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Increments sent to each endpoint.
    #[arg(long, default_value_t = 2000)]
    increments: u64,
    /// Concurrent incrementers per endpoint.
    #[arg(short, long, default_value_t = 8)]
    concurrency: usize,
    /// Mimeo: increment a plain register by read, add one, write back,
    /// instead of the counter type.
    #[arg(long)]
    register: bool,
    /// The counter's key (a fresh one per run: the count starts at 0).
    #[arg(long, default_value = "race")]
    key: String,
    /// How long the nodes may take to agree once every increment is in.
    #[arg(long, default_value = "60s", value_parser = parse_secs)]
    converge_within: Duration,
}

#[derive(Debug, clap::Args)]
struct FailoverArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(short, long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// How long the whole run lasts.
    #[arg(short, long, default_value = "12s", value_parser = parse_secs)]
    duration: Duration,
    /// When to run the kill command, from the start of the run.
    #[arg(long, default_value = "4s", value_parser = parse_secs)]
    kill_after: Duration,
    /// Shell command run once at `--kill-after` (e.g. `kill -KILL <pid>`).
    #[arg(long)]
    kill_command: String,
}

/// Which store to drive and how to reach it.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// Which store to drive (`failover`: mimeo or etcd).
    #[arg(long)]
    target: Store,
    /// Address of the store; comma-separated addresses of every member for
    /// a cluster.
    #[arg(long)]
    endpoint: String,
    /// Mimeo only: certificate directory.
    #[arg(long, default_value = "certs")]
    certs: PathBuf,
    /// Mimeo only: cluster id.
    #[arg(long, default_value = "mimeo")]
    cluster_id: String,
    /// Mimeo only: the client certificate in --certs to present
    /// (`client-<name>`; `mimeo-harness bench-cluster` writes
    /// client-harness).
    #[arg(long, default_value = "client-bench")]
    identity: String,
    /// Spread the load over every endpoint, operation by operation, one
    /// connection per endpoint (for clusters where every node takes
    /// writes). Without it, one client is given every endpoint: Mimeo's
    /// sends everything to one node (following a leader's redirects), etcd's
    /// balances its own way.
    #[arg(long)]
    spread: bool,
    /// Postgres only: user.
    #[arg(long, default_value = "postgres")]
    pg_user: String,
    /// Postgres only: database.
    #[arg(long, default_value = "bench")]
    pg_dbname: String,
}

impl StoreArgs {
    fn addrs(&self) -> anyhow::Result<Vec<SocketAddr>> {
        self.endpoint
            .split(',')
            .map(|a| a.parse::<SocketAddr>())
            .collect::<Result<Vec<_>, _>>()
            .context("--endpoint: comma-separated host:port")
    }

    /// A Mimeo client that prefers `nodes[0]` and falls back on the rest.
    async fn mimeo(&self, nodes: Vec<SocketAddr>) -> anyhow::Result<mimeo_client::Client> {
        let identity = mimeo_wire::TlsIdentity::from_dir(&self.certs, &self.identity)?;
        let config = mimeo_client::ClientConfig::new(nodes, self.cluster_id.clone(), identity);
        Ok(mimeo_client::Client::connect(config).await?)
    }

    /// One Mimeo client per endpoint, each preferring its own node and
    /// falling back on the others (`local`: its own node only, for reads
    /// that must be that node's).
    async fn mimeo_per_node(&self, local: bool) -> anyhow::Result<Vec<Arc<mimeo_client::Client>>> {
        let addrs = self.addrs()?;
        let mut clients = Vec::new();
        for i in 0..addrs.len() {
            let nodes = if local {
                vec![addrs[i]]
            } else {
                rotated(&addrs, i)
            };
            clients.push(Arc::new(self.mimeo(nodes).await?));
        }
        Ok(clients)
    }

    /// One PostgreSQL connection per endpoint.
    async fn postgres_per_node(&self) -> anyhow::Result<Vec<Arc<Postgres>>> {
        let mut nodes = Vec::new();
        for endpoint in self.endpoint.split(',') {
            nodes.push(Arc::new(
                Postgres::connect(endpoint, &self.pg_user, &self.pg_dbname).await?,
            ));
        }
        Ok(nodes)
    }
}

/// `addrs` starting at `first`, wrapping around.
fn rotated(addrs: &[SocketAddr], first: usize) -> Vec<SocketAddr> {
    addrs[first..]
        .iter()
        .chain(&addrs[..first])
        .copied()
        .collect()
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Store {
    Mimeo,
    Etcd,
    Redis,
    /// PostgreSQL (the tables of `postgres.rs`'s module docs must exist).
    Postgres,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(short, long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    #[arg(long, default_value_t = 0.0)]
    read_fraction: f64,
    #[arg(short, long, default_value = "10s", value_parser = parse_secs)]
    duration: Duration,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    let seconds = text.strip_suffix('s').unwrap_or(text);
    seconds
        .parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|_| format!("'{text}' is not a number of seconds like 10s"))
}

/// etcd through its v3 gRPC API.
struct Etcd {
    kv: etcd_client::KvClient,
}

impl Target for Etcd {
    async fn put(&self, key: String, value: Vec<u8>) -> Result<(), OpError> {
        let mut kv = self.kv.clone();
        kv.put(key, value, None)
            .await
            .map(|_| ())
            .map_err(etcd_error)
    }

    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, OpError> {
        let mut kv = self.kv.clone();
        let response = kv.get(key, None).await.map_err(etcd_error)?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }
}

fn etcd_error(e: etcd_client::Error) -> OpError {
    // A gRPC error after sending may or may not have applied.
    OpError::Unknown(e.to_string())
}

/// Redis through one multiplexed connection (pipelining concurrent requests).
struct Redis {
    connection: redis::aio::MultiplexedConnection,
}

impl Target for Redis {
    async fn put(&self, key: String, value: Vec<u8>) -> Result<(), OpError> {
        let mut connection = self.connection.clone();
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| OpError::Unknown(e.to_string()))
    }

    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, OpError> {
        let mut connection = self.connection.clone();
        redis::cmd("GET")
            .arg(key)
            .query_async::<Option<Vec<u8>>>(&mut connection)
            .await
            .map_err(|e| OpError::Unknown(e.to_string()))
    }
}

/// The load generator shares the machine with the systems it measures:
/// mimalloc keeps its own allocation cost (and so its CPU share) low, the
/// same for every target.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::FsyncRate {
            dir,
            duration,
            bytes,
            preallocate,
        } => fsync_rate(&dir, duration, bytes, preallocate),
        Command::Failover(args) => failover(args).await,
        Command::Lag(args) => lag(args).await,
        Command::CounterRace(args) => counter_race(args).await,
    }
}

async fn lag(args: LagArgs) -> anyhow::Result<()> {
    let options = LagOptions {
        duration: args.duration,
        interval: args.interval,
        give_up: Duration::from_secs(30),
        load: (args.load_concurrency > 0).then(|| Workload {
            concurrency: args.load_concurrency,
            value_size: args.value_size,
            key_count: args.keys,
            read_fraction: 0.0,
            stop: Stop::After(args.duration),
            unique_keys: false,
            key_prefix: "bench-".into(),
            seed: 1,
        }),
    };
    let report = match args.store.target {
        Store::Mimeo => multi::lag(args.store.mimeo_per_node(true).await?, &options).await?,
        Store::Postgres => multi::lag(args.store.postgres_per_node().await?, &options).await?,
        Store::Etcd | Store::Redis => anyhow::bail!("lag is measured for mimeo and postgres"),
    };
    println!("{report}");
    Ok(())
}

/// A Mimeo node's side of the counter race.
struct MimeoCounter {
    client: Arc<mimeo_client::Client>,
    key: String,
    /// Read, add one, write back a plain value, instead of the counter type.
    register: bool,
}

impl Counter for MimeoCounter {
    async fn increment(&self) -> Result<(), OpError> {
        if !self.register {
            return self
                .client
                .increment(&self.key, 1, None)
                .await
                .map(|_| ())
                .map_err(mimeo_error);
        }
        let current = self.read().await?;
        let next = (current + 1).to_string().into_bytes();
        self.client
            .put(&self.key, next)
            .await
            .map(|_| ())
            .map_err(mimeo_error)
    }

    async fn read(&self) -> Result<i64, OpError> {
        if self.register {
            let value = self.client.get(&self.key).await.map_err(mimeo_error)?;
            return Ok(value
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0));
        }
        let read = self
            .client
            .get_versioned(&self.key, None, None)
            .await
            .map_err(mimeo_error)?;
        match read.value {
            mimeo_wire::VersionedValue::Counter(n) => Ok(n as i64),
            mimeo_wire::VersionedValue::Absent => Ok(0),
            other => Err(OpError::Definite(format!(
                "{} holds {other:?}, not a counter",
                self.key
            ))),
        }
    }
}

fn mimeo_error(e: mimeo_client::Error) -> OpError {
    if e.is_definite() {
        OpError::Definite(e.to_string())
    } else {
        OpError::Unknown(e.to_string())
    }
}

/// A PostgreSQL node's side of the counter race.
struct PostgresCounter {
    node: Arc<Postgres>,
    key: String,
}

impl Counter for PostgresCounter {
    async fn increment(&self) -> Result<(), OpError> {
        self.node.increment(&self.key).await
    }

    async fn read(&self) -> Result<i64, OpError> {
        self.node.read_counter(&self.key).await
    }
}

async fn counter_race(args: RaceArgs) -> anyhow::Result<()> {
    let options = RaceOptions {
        increments_per_node: args.increments,
        concurrency: args.concurrency,
        converge_within: args.converge_within,
    };
    let key = args.key.clone();
    let report = match args.store.target {
        Store::Mimeo => {
            let nodes = args.store.mimeo_per_node(true).await?;
            let nodes = nodes
                .into_iter()
                .map(|client| {
                    Arc::new(MimeoCounter {
                        client,
                        key: key.clone(),
                        register: args.register,
                    })
                })
                .collect();
            multi::counter_race(nodes, &options).await?
        }
        Store::Postgres => {
            anyhow::ensure!(
                !args.register,
                "--register is for mimeo; postgres runs v = v + 1"
            );
            let nodes = args.store.postgres_per_node().await?;
            let nodes = nodes
                .into_iter()
                .map(|node| {
                    Arc::new(PostgresCounter {
                        node,
                        key: key.clone(),
                    })
                })
                .collect();
            multi::counter_race(nodes, &options).await?
        }
        Store::Etcd | Store::Redis => anyhow::bail!("counter-race is for mimeo and postgres"),
    };
    println!("{report}");
    Ok(())
}

async fn connect_mimeo(store: &StoreArgs) -> anyhow::Result<mimeo_client::Client> {
    store.mimeo(store.addrs()?).await
}

async fn connect_etcd(endpoint: &str) -> anyhow::Result<Etcd> {
    let endpoints: Vec<&str> = endpoint.split(',').collect();
    let client = etcd_client::Client::connect(&endpoints, None)
        .await
        .with_context(|| format!("connecting to etcd at {endpoint}"))?;
    Ok(Etcd {
        kv: client.kv_client(),
    })
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let workload = Workload {
        concurrency: args.concurrency,
        value_size: args.value_size,
        key_count: args.keys,
        read_fraction: args.read_fraction,
        stop: Stop::After(args.duration),
        unique_keys: false,
        key_prefix: "bench-".into(),
        seed: args.seed,
    };
    let options = RunOptions::default();
    let report = match args.store.target {
        Store::Mimeo if args.store.spread => {
            let spread = Spread::new(args.store.mimeo_per_node(false).await?);
            bench::run(Arc::new(spread), &workload, &options).await?
        }
        Store::Mimeo => {
            let client = connect_mimeo(&args.store).await?;
            bench::run(Arc::new(client), &workload, &options).await?
        }
        Store::Postgres => {
            let spread = Spread::new(args.store.postgres_per_node().await?);
            if !args.store.spread {
                anyhow::ensure!(
                    args.store.endpoint.split(',').count() == 1,
                    "postgres with several endpoints: add --spread"
                );
            }
            bench::run(Arc::new(spread), &workload, &options).await?
        }
        Store::Etcd => {
            let target = connect_etcd(&args.store.endpoint).await?;
            bench::run(Arc::new(target), &workload, &options).await?
        }
        Store::Redis => {
            let client = redis::Client::open(format!("redis://{}/", args.store.endpoint))?;
            let connection = client
                .get_multiplexed_async_connection()
                .await
                .with_context(|| format!("connecting to redis at {}", args.store.endpoint))?;
            bench::run(Arc::new(Redis { connection }), &workload, &options).await?
        }
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn fsync_rate(
    dir: &std::path::Path,
    duration: Duration,
    bytes: usize,
    preallocate: u64,
) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;

    let path = dir.join(format!("bench-compare-fsync-{}.tmp", std::process::id()));
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let record = vec![0xA5u8; bytes];
    let (mut len, mut allocated) = (0u64, 0u64);
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let began = Instant::now();
        file.write_all_at(&record, len)?;
        len += bytes as u64;
        if preallocate > 0 && allocated < len + preallocate / 2 {
            // The store's rule: between half and all of `preallocate` ahead.
            let zeros = vec![0u8; (len + preallocate - allocated.max(len)) as usize];
            file.write_all_at(&zeros, allocated.max(len))?;
            allocated = len + preallocate;
        }
        file.sync_data()?;
        latencies.push(began.elapsed());
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let report = serde_json::json!({
        "fsyncs": latencies.len(),
        "elapsed_s": elapsed.as_secs_f64(),
        "fsyncs_per_s": latencies.len() as f64 / elapsed.as_secs_f64(),
        "median_us": median.as_micros() as u64,
        "p99_us": latencies[latencies.len() * 99 / 100].as_micros() as u64,
    });
    println!("{report}");
    Ok(())
}

/// One acknowledged write: when it was sent and when its acknowledgement
/// arrived, as offsets from the start of the run.
#[derive(Clone, Copy, Debug)]
struct Ack {
    sent: Duration,
    acked: Duration,
}

async fn failover(args: FailoverArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.kill_after < args.duration,
        "--kill-after ({:?}) must be shorter than --duration ({:?})",
        args.kill_after,
        args.duration
    );
    let (acks, errors, killed_at, ended_at) = match args.store.target {
        Store::Mimeo => {
            let client = connect_mimeo(&args.store).await?;
            write_through_kill(Arc::new(client), &args).await?
        }
        Store::Etcd => {
            write_through_kill(Arc::new(connect_etcd(&args.store.endpoint).await?), &args).await?
        }
        Store::Redis | Store::Postgres => {
            anyhow::bail!("failover is measured for mimeo and etcd only")
        }
    };
    println!("{}", failover_report(&acks, errors, killed_at, ended_at));
    Ok(())
}

/// Runs `--concurrency` writers of unique keys for `--duration`, runs the
/// kill command at `--kill-after`, and returns every acknowledgement, the
/// number of failed writes, the instant the kill command had returned (the
/// signal was delivered by then) and the instant the last writer finished.
async fn write_through_kill<T: Target>(
    target: Arc<T>,
    args: &FailoverArgs,
) -> anyhow::Result<(Vec<Ack>, u64, Duration, Duration)> {
    let start = Instant::now();
    let mut workers = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let target = Arc::clone(&target);
        let (duration, value_size) = (args.duration, args.value_size);
        workers.push(tokio::spawn(async move {
            let (mut acks, mut errors) = (Vec::new(), 0u64);
            let mut sequence = 0u64;
            while start.elapsed() < duration {
                sequence += 1;
                let key = format!("failover-w{worker}-{sequence}");
                let value = bench::value_for(&key, value_size);
                let sent = start.elapsed();
                match target.put(key, value).await {
                    Ok(()) => acks.push(Ack {
                        sent,
                        acked: start.elapsed(),
                    }),
                    Err(_) => errors += 1,
                }
            }
            (acks, errors)
        }));
    }
    tokio::time::sleep_until((start + args.kill_after).into()).await;
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&args.kill_command)
        .status()
        .await
        .with_context(|| format!("running --kill-command '{}'", args.kill_command))?;
    let killed_at = start.elapsed();
    anyhow::ensure!(
        status.success(),
        "--kill-command '{}' failed: {status}",
        args.kill_command
    );
    let (mut acks, mut errors) = (Vec::new(), 0);
    for worker in workers {
        let (worker_acks, worker_errors) = worker.await?;
        acks.extend(worker_acks);
        errors += worker_errors;
    }
    acks.sort_by_key(|ack| ack.acked);
    Ok((acks, errors, killed_at, start.elapsed()))
}

/// Summarises the acknowledgements around the kill, in milliseconds:
/// - `kill_to_first_ack_ms`: from the kill to the first acknowledgement of a
///   write *sent after* the kill (an answer the dead leader had already sent
///   before dying cannot count);
/// - `longest_gap_ms`: the longest interval without any acknowledgement from
///   one second before the kill to `ended_at`, the end of the run (so a run
///   that never recovers reports the whole time after its last ack), and
///   `longest_gap_starts_ms`, where that gap starts relative to the kill
///   (negative: before it);
/// - `acks_before` / `acks_after`: acknowledgements either side of the kill.
fn failover_report(
    acks: &[Ack],
    errors: u64,
    killed_at: Duration,
    ended_at: Duration,
) -> serde_json::Value {
    let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
    let first_fresh = acks
        .iter()
        .filter(|ack| ack.sent >= killed_at)
        .map(|ack| ack.acked)
        .min();
    let window_start = killed_at.saturating_sub(Duration::from_secs(1));
    let times: Vec<Duration> = acks
        .iter()
        .map(|ack| ack.acked)
        .filter(|&t| t >= window_start)
        .chain([ended_at])
        .collect();
    // The longest gap and where it starts (the earliest, on a tie).
    let (longest_gap, gap_start) = times
        .windows(2)
        .map(|pair| (pair[1] - pair[0], pair[0]))
        .fold((Duration::ZERO, killed_at), |best, (gap, start)| {
            if gap > best.0 {
                (gap, start)
            } else {
                best
            }
        });
    serde_json::json!({
        "killed_at_ms": ms(killed_at),
        "ended_at_ms": ms(ended_at),
        "kill_to_first_ack_ms": first_fresh.map(|t| ms(t - killed_at)),
        "longest_gap_ms": ms(longest_gap),
        "longest_gap_starts_ms": ms(gap_start) - ms(killed_at),
        "acks_before": acks.iter().filter(|ack| ack.acked < killed_at).count(),
        "acks_after": acks.iter().filter(|ack| ack.acked >= killed_at).count(),
        "errors": errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_rotate_so_each_client_prefers_its_own_node() {
        let a: Vec<SocketAddr> = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(rotated(&a, 0), a);
        assert_eq!(rotated(&a, 2), vec![a[2], a[0], a[1]]);
    }

    fn ack(sent_ms: u64, acked_ms: u64) -> Ack {
        Ack {
            sent: Duration::from_millis(sent_ms),
            acked: Duration::from_millis(acked_ms),
        }
    }

    #[test]
    fn an_answer_sent_before_the_kill_does_not_end_the_outage() {
        // The kill returns at 1000 ms; the write sent at 995 ms is answered
        // at 1001 ms (the old leader's last reply), the first write sent
        // after the kill is answered at 1400 ms.
        let acks = [
            ack(900, 950),
            ack(990, 999),
            ack(995, 1001),
            ack(1002, 1400),
            ack(1400, 1405),
        ];
        let report = failover_report(
            &acks,
            3,
            Duration::from_millis(1000),
            Duration::from_millis(1500),
        );
        assert_eq!(report["kill_to_first_ack_ms"], 400.0);
        assert_eq!(report["longest_gap_ms"], 399.0);
        assert_eq!(report["longest_gap_starts_ms"], 1.0);
        assert_eq!(report["acks_before"], 2);
        assert_eq!(report["acks_after"], 3);
        assert_eq!(report["errors"], 3);
    }

    #[test]
    fn no_write_acknowledged_after_the_kill_is_reported_as_null() {
        let acks = [ack(900, 950), ack(990, 999)];
        let report = failover_report(
            &acks,
            16,
            Duration::from_millis(1000),
            Duration::from_millis(8000),
        );
        assert!(report["kill_to_first_ack_ms"].is_null());
        assert_eq!(report["longest_gap_ms"], 7001.0);
        assert_eq!(report["longest_gap_starts_ms"], -1.0);
        assert_eq!(report["acks_after"], 0);
    }
}
