//! `bench-compare`: one workload definition (`mimeo_node::bench::Workload`)
//! run against Mimeo, etcd or Redis, so the numbers in BENCHMARKS.md are
//! ratios measured the same way (the redb/lmdb comparison style).
//!
//! ```text
//! bench-compare run --target mimeo --endpoint 127.0.0.1:7001 --certs certs -c 64 -d 10s
//! bench-compare run --target etcd  --endpoint 127.0.0.1:2379 -c 64 -d 10s
//! bench-compare run --target redis --endpoint 127.0.0.1:6379 -c 64 -d 10s
//! bench-compare fsync-rate --dir /var/tmp --duration 5s
//! ```
//!
//! Every run prints one JSON report on stdout (the `mimeo bench --json`
//! format); `scripts/bench-compare.sh` drives the whole comparison.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mimeo_node::bench::{self, OpError, RunOptions, Stop, Target, Workload};

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
    /// limit of `fsync = always` on this disk.
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
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Store {
    Mimeo,
    Etcd,
    Redis,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Which store to drive.
    #[arg(long)]
    target: Store,
    /// Address of the store (Mimeo: comma-separated node addresses).
    #[arg(long)]
    endpoint: String,
    /// Mimeo only: certificate directory.
    #[arg(long, default_value = "certs")]
    certs: PathBuf,
    /// Mimeo only: cluster id.
    #[arg(long, default_value = "mimeo")]
    cluster_id: String,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::FsyncRate {
            dir,
            duration,
            bytes,
        } => fsync_rate(&dir, duration, bytes),
    }
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
    let report = match args.target {
        Store::Mimeo => {
            let nodes = args
                .endpoint
                .split(',')
                .map(|a| a.parse::<SocketAddr>())
                .collect::<Result<Vec<_>, _>>()
                .context("--endpoint for mimeo: comma-separated host:port")?;
            let identity = mimeo_wire::TlsIdentity::from_dir(&args.certs, "client-bench")?;
            let config = mimeo_client::ClientConfig::new(nodes, args.cluster_id, identity);
            let client = mimeo_client::Client::connect(config).await?;
            bench::run(Arc::new(client), &workload, &options).await?
        }
        Store::Etcd => {
            let client = etcd_client::Client::connect([args.endpoint.as_str()], None)
                .await
                .with_context(|| format!("connecting to etcd at {}", args.endpoint))?;
            let target = Etcd {
                kv: client.kv_client(),
            };
            bench::run(Arc::new(target), &workload, &options).await?
        }
        Store::Redis => {
            let client = redis::Client::open(format!("redis://{}/", args.endpoint))?;
            let connection = client
                .get_multiplexed_async_connection()
                .await
                .with_context(|| format!("connecting to redis at {}", args.endpoint))?;
            bench::run(Arc::new(Redis { connection }), &workload, &options).await?
        }
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn fsync_rate(dir: &std::path::Path, duration: Duration, bytes: usize) -> anyhow::Result<()> {
    let path = dir.join(format!("bench-compare-fsync-{}.tmp", std::process::id()));
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let record = vec![0xA5u8; bytes];
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let began = Instant::now();
        file.write_all(&record)?;
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
