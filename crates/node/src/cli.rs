//! The `mimeo` command line: serve a node, manage certificates, start a
//! local cluster, talk to nodes, and generate load.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mimeo_client::{
    AdminClient, CasOutcome, Client, ClientConfig, LeaderlessStatus, MultiLeaderStatus, NodeStatus,
    Position, QuorumOverride, ReadConsistency, WriteAck,
};
use mimeo_storage::FsyncMode;
use mimeo_wire::{CertRequest, CertificateAuthority, NodeMode, NodeRole, TlsIdentity, Validity};

use crate::bench::{self, RunOptions, Stop, Workload};
use crate::cluster;
use crate::config::{Mode, NodeConfig};

/// Exit code: the operation definitely did not take effect, or the command
/// could not run (bad config, no node reachable).
const EXIT_FAILED: u8 = 1;
/// Exit code: the outcome of the operation is unknown (e.g. a timeout).
const EXIT_UNKNOWN: u8 = 3;

/// Mimeo: replicated key-value nodes over QUIC, and the tools to run them.
///
/// Exit codes: 0 success; 1 failed (the operation certainly did not take
/// effect, or the command could not run); 2 usage error; 3 outcome unknown
/// (a timeout or lost connection: the write may still take effect).
#[derive(Debug, Parser)]
#[command(name = "mimeo", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// How client commands reach the cluster.
#[derive(Debug, Args)]
struct ConnectionArgs {
    /// Node address(es) to talk to, comma-separated.
    #[arg(
        id = "node_addrs",
        long = "node",
        global = true,
        env = "MIMEO_NODES",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001"
    )]
    nodes: Vec<SocketAddr>,
    /// Directory with the certificates written by `mimeo certs init`.
    #[arg(long, global = true, env = "MIMEO_CERTS", default_value = "certs")]
    certs: PathBuf,
    /// Which certificate in --certs to present: `client-<name>` or `admin-<name>`.
    #[arg(long, global = true, env = "MIMEO_IDENTITY")]
    identity: Option<String>,
    /// The cluster id the nodes were configured with.
    #[arg(long, global = true, env = "MIMEO_CLUSTER_ID", default_value = "mimeo")]
    cluster_id: String,
    /// Per-request timeout; past it the outcome is reported unknown.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Leaderless: replicas that must receive this write (default: the
    /// cluster's `w`).
    #[arg(long = "w", global = true, value_name = "N")]
    quorum_w: Option<u32>,
    /// Leaderless: replicas whose answers this read merges (default: the
    /// cluster's `r`).
    #[arg(long = "r", global = true, value_name = "N")]
    quorum_r: Option<u32>,
    /// Leaderless: of the --w, how many must be primary owners.
    #[arg(long = "pw", global = true, value_name = "N")]
    quorum_pw: Option<u32>,
    /// Leaderless: of the --r, how many must be primary owners.
    #[arg(long = "pr", global = true, value_name = "N")]
    quorum_pr: Option<u32>,
    /// Leaderless: of the --w, how many must hold the write durably.
    #[arg(long = "dw", global = true, value_name = "N")]
    quorum_dw: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node.
    Serve {
        /// The node's TOML config (every field has a default).
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Start a local cluster of node processes on 127.0.0.1 and keep it
    /// running until Ctrl-C.
    Cluster(ClusterArgs),
    /// Read a key (prints the value; prints nothing and says so on stderr if
    /// the key is absent).
    Get {
        /// The key.
        key: String,
        /// How fresh the read must be: `leader` (linearizable), `follower`
        /// (any replica, maybe stale) or `session` (at least as fresh as
        /// --after). Default: the node's configured read mode.
        #[arg(long, value_name = "MODE")]
        read: Option<ReadFlag>,
        /// With --read follower: refuse the read if the replica is further
        /// behind its leader than this (e.g. 500ms).
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        max_staleness: Option<Duration>,
        /// With --read session: what the replica must have applied. A
        /// leader-follower position (`TERM:INDEX`, as the write or read
        /// commands print it), or a multi-leader session token (as they
        /// print it after `session:`).
        #[arg(long, value_parser = parse_after, value_name = "TERM:INDEX|TOKEN")]
        after: Option<After>,
    },
    /// Write a value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Acknowledge once this is met instead of the cluster's ack mode:
        /// async, semi-sync:K, quorum or all (replicated modes).
        #[arg(long, value_name = "MODE")]
        ack: Option<WriteAck>,
        /// Multi-leader: the context a get printed; the write supersedes
        /// exactly the values that get saw (without it, the ones the node
        /// holds).
        #[arg(long, value_parser = parse_token, value_name = "TOKEN")]
        context: Option<Token>,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
        /// Acknowledge once this is met instead of the cluster's ack mode:
        /// async, semi-sync:K, quorum or all (replicated modes).
        #[arg(long, value_name = "MODE")]
        ack: Option<WriteAck>,
        /// Multi-leader: the context a get printed; the delete removes
        /// exactly the values that get saw.
        #[arg(long, value_parser = parse_token, value_name = "TOKEN")]
        context: Option<Token>,
    },
    /// Multi-leader: add N (default 1, may be negative) to a counter.
    Incr {
        /// The key.
        key: String,
        /// The change.
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
        /// Acknowledge once this is met instead of the cluster's ack mode:
        /// async (the node that took it), quorum or all.
        #[arg(long, value_name = "MODE")]
        ack: Option<WriteAck>,
    },
    /// Multi-leader: add an element to a set (`mimeo get` lists the members).
    Sadd {
        /// The key.
        key: String,
        /// The element.
        element: String,
        /// Acknowledge once this is met instead of the cluster's ack mode.
        #[arg(long, value_name = "MODE")]
        ack: Option<WriteAck>,
    },
    /// Multi-leader: remove an element from a set.
    Srem {
        /// The key.
        key: String,
        /// The element.
        element: String,
        /// Acknowledge once this is met instead of the cluster's ack mode.
        #[arg(long, value_name = "MODE")]
        ack: Option<WriteAck>,
    },
    /// Compare-and-set: write NEW only if the current value is EXPECTED.
    Cas {
        /// The key.
        key: String,
        /// The value to write.
        new: String,
        /// The value the key must hold for the write to happen.
        #[arg(long, value_name = "VALUE", required_unless_present = "absent")]
        expect: Option<String>,
        /// Require the key to be absent instead.
        #[arg(long, conflicts_with = "expect")]
        absent: bool,
        /// Acknowledge once this is met instead of the cluster's ack mode:
        /// async, semi-sync:K, quorum or all (replicated modes).
        #[arg(long, value_name = "MODE")]
        ack: Option<WriteAck>,
    },
    /// Show each node's status.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Admin operations (need an admin certificate).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Generate load and report throughput and latency percentiles.
    Bench(BenchArgs),
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Write a cluster CA and node, client and admin certificates. The CA
    /// key goes into its own directory (`--ca-dir`), never into `--dir`,
    /// which is what nodes and clients are given.
    Init {
        /// Where to write the certificates nodes and clients use.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Where to write the CA's certificate and key (mode 0700): keep it
        /// apart, offline if you can; `mimeo certs issue` needs it to sign
        /// more certificates. Default: `<dir>-ca` beside `--dir`.
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// Node ids, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "n1,n2,n3")]
        nodes: Vec<String>,
        /// Client names, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "cli,bench")]
        clients: Vec<String>,
        /// Admin names, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "ops")]
        admins: Vec<String>,
        /// Days the node, client and admin certificates are valid.
        #[arg(long, default_value_t = Validity::default().leaf_days)]
        valid_days: u32,
        /// Days the CA certificate is valid.
        #[arg(long, default_value_t = Validity::default().ca_days)]
        ca_valid_days: u32,
        /// Replace an existing CA (every certificate it signed stops working).
        #[arg(long)]
        force: bool,
    },
    /// Sign more certificates (a new node, client or admin, or a
    /// replacement for one about to expire) with the CA `init` wrote.
    Issue {
        /// The CA directory `init` wrote (`ca.pem`, `ca.key`).
        #[arg(long)]
        ca_dir: PathBuf,
        /// Where to write the certificates.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Node ids, comma-separated.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// Client names, comma-separated.
        #[arg(long, value_delimiter = ',')]
        clients: Vec<String>,
        /// Admin names, comma-separated.
        #[arg(long, value_delimiter = ',')]
        admins: Vec<String>,
        /// Days the certificates are valid.
        #[arg(long, default_value_t = Validity::default().leaf_days)]
        valid_days: u32,
        /// Replace certificates of the same names (rotation).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Show a node's status through the admin protocol.
    Status,
    /// Shift a node's clock by MILLIS milliseconds (0 restores it).
    ClockOffset {
        /// Offset from the system clock, in milliseconds (may be negative).
        #[arg(allow_negative_numbers = true)]
        millis: i64,
    },
    /// Ask a node to shut down cleanly.
    Shutdown,
}

/// `mimeo cluster` options.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// How many nodes.
    #[arg(long = "nodes", default_value_t = 3)]
    pub(crate) count: usize,
    /// Replication mode of every node.
    #[arg(long, default_value = "standalone", value_parser = parse_mode)]
    pub(crate) mode: Mode,
    /// Directory for configs, certificates, data and logs.
    #[arg(long, default_value = "mimeo-cluster")]
    pub(crate) dir: PathBuf,
    /// Port of the first node; the others follow.
    #[arg(long, default_value_t = 7001)]
    pub(crate) base_port: u16,
    /// Storage durability of every node.
    #[arg(long, default_value = "batch")]
    pub(crate) fsync: FsyncMode,
    /// Cluster id.
    #[arg(long, default_value = "mimeo")]
    pub(crate) cluster_id: String,
    /// Replicated modes: when a write is acknowledged. Leader-follower:
    /// async, semi-sync:K, quorum or all; multi-leader: local, quorum or
    /// all. Default: quorum.
    #[arg(long, value_name = "MODE")]
    pub(crate) acks: Option<String>,
    /// Multi-leader only: how concurrent writes to one value are resolved
    /// (siblings: keep them all; lww: the largest timestamp wins).
    /// Default: siblings.
    #[arg(long, value_name = "POLICY")]
    pub(crate) conflicts: Option<String>,
    /// Serve Prometheus metrics on 127.0.0.1 from this port on, one port
    /// per node in order (off unless set).
    #[arg(long)]
    pub(crate) metrics_base_port: Option<u16>,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Concurrent workers, each with one request in flight.
    #[arg(short, long, default_value_t = 16)]
    concurrency: usize,
    /// Bytes per written value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Distinct keys to pick from.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Fraction of operations that are reads (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    read_fraction: f64,
    /// How long to run (e.g. 10s, 500ms, 2m).
    #[arg(short, long, default_value = "10s", value_parser = parse_duration, conflicts_with = "ops")]
    duration: Duration,
    /// Stop after this many operations instead of after --duration.
    #[arg(long)]
    ops: Option<u64>,
    /// Write every value to a fresh key (for durability checks).
    #[arg(long)]
    unique_keys: bool,
    /// Append the key of every acknowledged write to this file.
    #[arg(long)]
    ack_log: Option<PathBuf>,
    /// Prefix of every key.
    #[arg(long, default_value = "bench-")]
    key_prefix: String,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Generate no load: read back every key listed in this acknowledgement
    /// log (written earlier with --ack-log) and check its value; exits 1 if
    /// any acknowledged write is missing.
    #[arg(long, value_name = "ACK_LOG", conflicts_with_all = ["ack_log", "ops"])]
    verify_acks: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

/// Parses arguments, runs the command, and turns the outcome into an exit
/// code (errors are printed to stderr).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = match e.downcast_ref::<mimeo_client::Error>() {
                Some(client_error) if client_error.is_unknown() => EXIT_UNKNOWN,
                _ => EXIT_FAILED,
            };
            ExitCode::from(code)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: node logs usually go to files.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let connection = &cli.connection;
    match cli.command {
        Command::Serve { config } => {
            let config = NodeConfig::load(&config)?;
            crate::serve(config).await?;
        }
        Command::Certs(CertsCommand::Init {
            dir,
            ca_dir,
            nodes,
            clients,
            admins,
            valid_days,
            ca_valid_days,
            force,
        }) => {
            let ca_dir = ca_dir.unwrap_or_else(|| default_ca_dir(&dir));
            let request = CertRequest {
                nodes,
                clients,
                admins,
            };
            let written = init_certs(&dir, &ca_dir, &request, valid_days, ca_valid_days, force)?;
            println!(
                "wrote {} files to {}; the CA key is in {} (keep it apart: it signs \
                 certificates, with `mimeo certs issue --ca-dir {}`)",
                written,
                dir.display(),
                ca_dir.join("ca.key").display(),
                ca_dir.display()
            );
        }
        Command::Certs(CertsCommand::Issue {
            ca_dir,
            dir,
            nodes,
            clients,
            admins,
            valid_days,
            force,
        }) => {
            let request = CertRequest {
                nodes,
                clients,
                admins,
            };
            if request == CertRequest::default() {
                anyhow::bail!("name at least one certificate: --nodes, --clients or --admins");
            }
            let ca = CertificateAuthority::load(&ca_dir)?;
            let written = ca.issue(&dir, &request, valid_days, force)?;
            println!(
                "wrote {} files to {} (valid {valid_days} days)",
                written.len(),
                dir.display()
            );
        }
        Command::Cluster(args) => cluster::run(args).await?,
        Command::Get {
            key,
            read,
            max_staleness,
            after,
        } => {
            let client = connection.client("client-cli").await?;
            // A multi-leader node answers with every sibling and the tokens;
            // another node refuses the versioned read, and is asked again.
            let token = match &after {
                Some(After::Token(token)) => Some(token.clone()),
                _ => None,
            };
            if token.is_some() && read != Some(ReadFlag::Session) {
                anyhow::bail!("--after applies to --read session only");
            }
            if read.is_none() || token.is_some() {
                match client.get_versioned(&key, token.clone(), None).await {
                    Ok(read) => {
                        print_versioned(&read);
                        return Ok(ExitCode::SUCCESS);
                    }
                    Err(mimeo_client::Error::Node { message, .. })
                        if token.is_none() && message.contains("needs a multi-leader node") => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let position = match after {
                Some(After::Position(position)) => Some(position),
                _ => None,
            };
            let consistency = read_consistency(read, max_staleness, position)?;
            let read = client.get_with(&key, consistency).await?;
            match &read.value {
                Some(value) => println!("{}", String::from_utf8_lossy(value)),
                None => eprintln!("(absent)"),
            }
            if consistency != ReadConsistency::Default {
                eprintln!(
                    "read from {} at position {}:{}",
                    read.node, read.position.term, read.position.index
                );
            }
        }
        Command::Put {
            key,
            value,
            ack,
            context: Some(context),
        } => {
            let client = connection.client("client-cli").await?;
            let written = client
                .put_versioned(&key, Some(value.into_bytes()), Some(context.0), ack)
                .await?;
            print_versioned_write(&written);
        }
        Command::Put {
            key, value, ack, ..
        } => {
            let client = connection.client("client-cli").await?;
            let position = client.put_with(&key, &value, ack).await?;
            eprintln!("ok (position {}:{})", position.term, position.index);
        }
        Command::Delete {
            key,
            ack,
            context: Some(context),
        } => {
            let client = connection.client("client-cli").await?;
            let written = client
                .put_versioned(&key, None, Some(context.0), ack)
                .await?;
            print_versioned_write(&written);
        }
        Command::Delete { key, ack, .. } => {
            let client = connection.client("client-cli").await?;
            let position = client.delete_with(&key, ack).await?;
            eprintln!("ok (position {}:{})", position.term, position.index);
        }
        Command::Incr { key, delta, ack } => {
            let client = connection.client("client-cli").await?;
            print_versioned_write(&client.increment(&key, delta, ack).await?);
        }
        Command::Sadd { key, element, ack } => {
            let client = connection.client("client-cli").await?;
            print_versioned_write(&client.set_add(&key, &element, ack).await?);
        }
        Command::Srem { key, element, ack } => {
            let client = connection.client("client-cli").await?;
            print_versioned_write(&client.set_remove(&key, &element, ack).await?);
        }
        Command::Cas {
            key,
            new,
            expect,
            absent,
            ack,
        } => {
            let client = connection.client("client-cli").await?;
            let expected = if absent { None } else { expect };
            match client
                .cas_with(&key, expected.as_deref(), &new, ack)
                .await?
            {
                CasOutcome::Swapped { position } => {
                    eprintln!("ok (position {}:{})", position.term, position.index)
                }
                CasOutcome::Mismatch { current } => {
                    let current = match current {
                        Some(value) => format!("'{}'", String::from_utf8_lossy(&value)),
                        None => "absent".into(),
                    };
                    eprintln!("not written: the current value is {current}");
                    return Ok(ExitCode::from(EXIT_FAILED));
                }
            }
        }
        Command::Status { json } => {
            let client = connection.client("client-cli").await?;
            let mut statuses = Vec::new();
            for &node in &connection.nodes {
                statuses.push((node, client.status_of(node).await));
            }
            // What each mode reports beyond the common status.
            let mut details = Vec::new();
            for (node, status) in &statuses {
                let mode = status.as_ref().ok().map(|s| s.mode);
                details.push(match mode {
                    Some(NodeMode::Leaderless) => {
                        Details::Leaderless(client.leaderless_status_of(*node).await)
                    }
                    Some(NodeMode::MultiLeader) => {
                        Details::MultiLeader(client.multi_leader_status_of(*node).await)
                    }
                    _ => Details::None,
                });
            }
            print_statuses(&statuses, &details, json)?;
            if !json {
                let mut ring_shown = false;
                for ((node, _), details) in statuses.iter().zip(&details) {
                    match details {
                        Details::Leaderless(Ok(status)) => {
                            print_leaderless(*node, status, !ring_shown);
                            ring_shown = true;
                        }
                        Details::Leaderless(Err(e)) => {
                            println!("{node}: no leaderless status: {e}")
                        }
                        Details::MultiLeader(Ok(status)) => print_multi_leader(*node, status),
                        Details::MultiLeader(Err(e)) => {
                            println!("{node}: no multi-leader status: {e}")
                        }
                        Details::None => {}
                    }
                }
            }
        }
        Command::Admin(command) => {
            let admin = connection.admin().await?;
            match command {
                AdminCommand::Status => {
                    let status = admin.status().await?;
                    println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
                }
                AdminCommand::ClockOffset { millis } => {
                    admin.set_clock_offset(millis).await?;
                    eprintln!("ok: clock offset is now {millis} ms");
                }
                AdminCommand::Shutdown => {
                    admin.shutdown().await?;
                    eprintln!("ok: shutting down");
                }
            }
        }
        Command::Bench(args) => return bench_command(connection, args).await,
    }
    Ok(ExitCode::SUCCESS)
}

impl ConnectionArgs {
    fn identity(&self, default: &str) -> anyhow::Result<TlsIdentity> {
        let name = self.identity.as_deref().unwrap_or(default);
        TlsIdentity::from_dir(&self.certs, name).with_context(|| {
            format!(
                "loading certificate {name} from {} (set --certs or MIMEO_CERTS to the directory `mimeo certs init` wrote)",
                self.certs.display()
            )
        })
    }

    async fn client(&self, default_identity: &str) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new(
            self.nodes.clone(),
            self.cluster_id.clone(),
            self.identity(default_identity)?,
        );
        config.request_timeout = self.timeout;
        let quorum = QuorumOverride {
            w: self.quorum_w,
            r: self.quorum_r,
            pw: self.quorum_pw,
            pr: self.quorum_pr,
            dw: self.quorum_dw,
        };
        if quorum != QuorumOverride::default() {
            config.quorum = Some(quorum);
        }
        Ok(Client::connect(config).await?)
    }

    async fn admin(&self) -> anyhow::Result<AdminClient> {
        let node = self.nodes[0];
        let identity = self.identity("admin-ops")?;
        Ok(AdminClient::connect(node, self.cluster_id.clone(), &identity, self.timeout).await?)
    }
}

async fn bench_command(connection: &ConnectionArgs, args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.read_fraction),
        "--read-fraction must be between 0.0 and 1.0"
    );
    anyhow::ensure!(args.keys > 0, "--keys must be at least 1");
    let workload = Workload {
        concurrency: args.concurrency,
        value_size: args.value_size,
        key_count: args.keys,
        read_fraction: args.read_fraction,
        stop: match args.ops {
            Some(ops) => Stop::Ops(ops),
            None => Stop::After(args.duration),
        },
        unique_keys: args.unique_keys,
        key_prefix: args.key_prefix,
        seed: args.seed,
    };
    let client = Arc::new(connection.client("client-bench").await?);
    if let Some(path) = &args.verify_acks {
        return verify_acks(&client, path, args.value_size).await;
    }
    let options = RunOptions {
        progress: !args.quiet,
        ack_log: args.ack_log,
    };
    let report = bench::run(client, &workload, &options)
        .await
        .context("writing the acknowledgement log")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.to_text());
        for error in &report.sample_errors {
            eprintln!("  error: {error}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads back every key of an acknowledgement log and checks its value.
async fn verify_acks(client: &Client, path: &Path, value_size: usize) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading acknowledgement log {}", path.display()))?;
    // A bench killed mid-write may leave its last line incomplete: that
    // write was never reported acknowledged.
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    let keys: Vec<&str> = complete.lines().filter(|l| !l.is_empty()).collect();
    let mut lost = Vec::new();
    for key in &keys {
        let value = client.get(key).await?;
        if value.as_deref() != Some(&bench::value_for(key, value_size)[..]) {
            lost.push(*key);
        }
    }
    if lost.is_empty() {
        println!("valid: all {} acknowledged writes are present", keys.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "invalid: {} of {} acknowledged writes are missing or wrong, e.g. {:?}",
            lost.len(),
            keys.len(),
            &lost[..lost.len().min(5)]
        );
        Ok(ExitCode::from(EXIT_FAILED))
    }
}

/// What a node of one mode reports beyond [`NodeStatus`].
enum Details {
    None,
    Leaderless(Result<LeaderlessStatus, mimeo_client::Error>),
    MultiLeader(Result<MultiLeaderStatus, mimeo_client::Error>),
}

fn print_statuses(
    statuses: &[(SocketAddr, Result<NodeStatus, mimeo_client::Error>)],
    details: &[Details],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let values: Vec<_> = statuses
            .iter()
            .zip(details)
            .map(|((node, status), details)| match status {
                Ok(status) => {
                    let mut value = status_json(status);
                    let (name, extra) = match details {
                        Details::None => return value,
                        Details::Leaderless(s) => ("leaderless", s.as_ref().map(leaderless_json)),
                        Details::MultiLeader(s) => {
                            ("multi_leader", s.as_ref().map(multi_leader_json))
                        }
                    };
                    value[name] =
                        extra.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
                    value
                }
                Err(e) => {
                    serde_json::json!({ "address": node.to_string(), "error": e.to_string() })
                }
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&values)?);
        return Ok(());
    }
    println!(
        "{:<8} {:<22} {:<15} {:<10} {:>6} {:>10} {:>10} {:>10} {:>8} {:>6}",
        "node", "address", "mode", "role", "term", "last", "commit", "durable", "keys", "fsync"
    );
    for (node, status) in statuses {
        match status {
            Ok(s) => println!(
                "{:<8} {:<22} {:<15} {:<10} {:>6} {:>10} {:>10} {:>10} {:>8} {:>6}",
                s.node_id,
                node,
                s.mode,
                s.role,
                s.term,
                s.last_position.index,
                s.commit_index,
                s.durable_index,
                s.live_keys,
                s.fsync
            ),
            Err(e) => println!("{:<8} {:<22} unreachable: {e}", "?", node),
        }
        if let Ok(s) = status {
            if s.mode == NodeMode::MultiLeader {
                // Its applied vector: its own writes, then each origin's.
                println!(
                    "    origin {:<6} applied {:>10} (its own writes; durable {})",
                    s.node_id, s.last_position.index, s.durable_index
                );
            }
            for peer in &s.peers {
                if s.mode == NodeMode::MultiLeader {
                    // How far this node applied each peer's writes.
                    let link = if peer.connected {
                        ""
                    } else {
                        " (disconnected)"
                    };
                    println!(
                        "    origin {:<6} applied {:>10} behind {:>8} writes, latest {:>8} ms ago{link}",
                        peer.node_id, peer.match_index, peer.lag_entries, peer.lag_ms,
                    );
                    continue;
                }
                // Only a leader tracks how far each peer has replicated.
                if s.role == NodeRole::Leader {
                    let link = if peer.connected {
                        ""
                    } else {
                        " (disconnected)"
                    };
                    println!(
                        "    peer {:<8} {:<22} match {:>10} lag {:>8} entries {:>8} ms{link}",
                        peer.node_id, peer.address, peer.match_index, peer.lag_entries, peer.lag_ms,
                    );
                } else {
                    let link = if peer.connected {
                        "connected"
                    } else {
                        "disconnected"
                    };
                    println!("    peer {:<8} {:<22} {link}", peer.node_id, peer.address);
                }
            }
        }
    }
    Ok(())
}

/// A leaderless node's hints, exchanges and counters; with `ring`, the
/// ring first (every node has the same).
fn print_leaderless(node: SocketAddr, s: &LeaderlessStatus, ring: bool) {
    if ring {
        let shares: Vec<String> = s
            .shares
            .iter()
            .map(|(id, share)| format!("{id} {:.1}%", f64::from(*share) / 1e4))
            .collect();
        println!(
            "ring: n = {} replicas per key; share of keys each node replicates: {}",
            s.n,
            shares.join(", ")
        );
        println!("ring ranges (key position, XXH3-64; replicas, primary first):");
        for range in &s.ring {
            println!(
                "    {:#018x}..={:#018x}  {}",
                range.start,
                range.end,
                range.replicas.join(" ")
            );
        }
    }
    println!("{node}:");
    if s.hints.is_empty() {
        println!("    hints pending: none");
    }
    for (owner, hints, bytes) in &s.hints {
        println!("    hints pending for {owner:<8} {hints:>8} ({bytes} bytes)");
    }
    for (peer, ago) in &s.exchanges {
        match ago {
            Some(ms) => println!("    anti-entropy with {peer:<8} last completed {ms} ms ago"),
            None => println!("    anti-entropy with {peer:<8} never completed (as initiator)"),
        }
    }
    let counters: Vec<String> = s
        .counters
        .iter()
        .map(|(name, value)| format!("{name} {value}"))
        .collect();
    println!("    counters: {}", counters.join(", "));
}

/// A multi-leader node's tombstones, siblings, drift refusals and
/// counters (its applied vector and lag per origin are in the table).
fn print_multi_leader(node: SocketAddr, s: &MultiLeaderStatus) {
    println!("{node}:");
    println!(
        "    tombstones pending collection {} ({} bytes); HLC drift refusals {}",
        s.tombstones_pending, s.tombstone_bytes, s.drift_refusals
    );
    if s.siblings.is_empty() {
        println!("    siblings per key: no keys with siblings");
    } else {
        let histogram: Vec<String> = s
            .siblings
            .iter()
            .map(|(siblings, keys)| {
                let plural = if *keys == 1 { "" } else { "s" };
                format!("{siblings}: {keys} key{plural}")
            })
            .collect();
        println!("    siblings per key: {}", histogram.join(", "));
    }
    let counters: Vec<String> = s
        .counters
        .iter()
        .map(|(name, value)| format!("{name} {value}"))
        .collect();
    println!("    counters: {}", counters.join(", "));
}

/// `mimeo status --json`: a multi-leader node's details.
fn multi_leader_json(s: &MultiLeaderStatus) -> serde_json::Value {
    serde_json::json!({
        "applied": s.origins.iter().map(|o| (o.origin.clone(), o.applied.into()))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
        "origins": s.origins.iter().map(|o| serde_json::json!({
            "origin": o.origin,
            "applied": o.applied,
            "behind_writes": o.behind_writes,
            "behind_ms": o.behind_ms,
        })).collect::<Vec<_>>(),
        "tombstones_pending": s.tombstones_pending,
        "tombstone_bytes": s.tombstone_bytes,
        "siblings_per_key": s.siblings.iter().map(|(siblings, keys)| serde_json::json!({
            "siblings": siblings,
            "keys": keys,
        })).collect::<Vec<_>>(),
        "drift_refusals": s.drift_refusals,
        "counters": s.counters.iter().map(|(name, value)| (name.clone(), (*value).into()))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
    })
}

/// `mimeo status --json`: a leaderless node's ring, hints, exchanges and
/// counters.
fn leaderless_json(s: &LeaderlessStatus) -> serde_json::Value {
    serde_json::json!({
        "n": s.n,
        "ring": s.ring.iter().map(|r| serde_json::json!({
            "start": r.start,
            "end": r.end,
            "replicas": r.replicas,
        })).collect::<Vec<_>>(),
        "shares_ppm": s.shares.iter().map(|(node, share)| (node.clone(), (*share).into()))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
        "hints": s.hints.iter().map(|(owner, hints, bytes)| serde_json::json!({
            "owner": owner,
            "hints": hints,
            "bytes": bytes,
        })).collect::<Vec<_>>(),
        "exchanges": s.exchanges.iter().map(|(peer, ago)| serde_json::json!({
            "peer": peer,
            "last_completed_ms_ago": ago,
        })).collect::<Vec<_>>(),
        "counters": s.counters.iter().map(|(name, value)| (name.clone(), (*value).into()))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
    })
}

fn status_json(s: &NodeStatus) -> serde_json::Value {
    serde_json::json!({
        "node_id": s.node_id,
        "cluster_id": s.cluster_id,
        "mode": s.mode,
        "role": s.role,
        "term": s.term,
        "last_position": { "term": s.last_position.term, "index": s.last_position.index },
        "commit_index": s.commit_index,
        "durable_index": s.durable_index,
        "live_keys": s.live_keys,
        "uptime_ms": s.uptime_ms,
        "clock_offset_ms": s.clock_offset_ms,
        "fsync": s.fsync,
        // Only a leader tracks how far each peer has replicated: null elsewhere.
        "peers": s.peers.iter().map(|p| {
            // Multi-leader: every node tracks how far it applied each origin.
            let leader = s.role == NodeRole::Leader || s.mode == NodeMode::MultiLeader;
            serde_json::json!({
                "node_id": p.node_id,
                "address": p.address,
                "match_index": leader.then_some(p.match_index),
                "lag_entries": leader.then_some(p.lag_entries),
                "lag_ms": leader.then_some(p.lag_ms),
                "connected": p.connected,
            })
        }).collect::<Vec<_>>(),
    })
}

fn parse_mode(text: &str) -> Result<Mode, String> {
    match text {
        "standalone" => Ok(Mode::Standalone),
        "leader-follower" => Ok(Mode::LeaderFollower),
        "multi-leader" => Ok(Mode::MultiLeader),
        "leaderless" => Ok(Mode::Leaderless),
        other => Err(format!(
            "unknown mode '{other}' (available: standalone, leader-follower, multi-leader, leaderless)"
        )),
    }
}

/// The read modes `mimeo get --read` offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ReadFlag {
    /// Linearizable: a leader that has confirmed it still leads.
    Leader,
    /// The asked node's own state, maybe stale.
    Follower,
    /// At least as fresh as --after.
    Session,
}

/// The consistency a `get`'s flags ask for; flags that do not fit the read
/// mode are refused rather than ignored.
fn read_consistency(
    read: Option<ReadFlag>,
    max_staleness: Option<Duration>,
    after: Option<Position>,
) -> anyhow::Result<ReadConsistency> {
    if max_staleness.is_some() && read != Some(ReadFlag::Follower) {
        anyhow::bail!("--max-staleness applies to --read follower only");
    }
    if after.is_some() && read != Some(ReadFlag::Session) {
        anyhow::bail!("--after applies to --read session only");
    }
    Ok(match read {
        None => ReadConsistency::Default,
        Some(ReadFlag::Leader) => ReadConsistency::Leader,
        Some(ReadFlag::Follower) => ReadConsistency::Follower {
            max_staleness_ms: max_staleness.map(|d| d.as_millis().max(1) as u64),
        },
        Some(ReadFlag::Session) => ReadConsistency::Session {
            after: after.ok_or_else(|| {
                anyhow::anyhow!(
                    "--read session needs --after TERM:INDEX (the position a put printed)"
                )
            })?,
        },
    })
}

/// What `--after` names: a leader-follower position or a multi-leader
/// session token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum After {
    Position(Position),
    Token(Vec<u8>),
}

fn parse_after(text: &str) -> Result<After, String> {
    if text.contains(':') {
        parse_position(text).map(After::Position)
    } else {
        parse_token(text).map(|t| After::Token(t.0)).map_err(|e| {
            format!("{e}; a leader-follower position is written TERM:INDEX, e.g. 3:120")
        })
    }
}

/// Tokens (contexts, sessions) are printed and read as lowercase hex:
/// written by hand here, two short functions not worth a dependency.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A context or session token, as bytes (a newtype: clap would take a
/// `Vec<u8>` for many arguments).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Token(Vec<u8>);

fn parse_token(text: &str) -> Result<Token, String> {
    let bad = || format!("'{text}' is not a token (an even number of hex digits, as printed)");
    if text.is_empty() || text.len() % 2 != 0 {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(bad)
        })
        .collect::<Result<Vec<u8>, String>>()
        .map(Token)
}

/// Prints a multi-leader read: the value(s) on stdout, one per line; the
/// context and session tokens on stderr.
fn print_versioned(read: &mimeo_client::VersionedRead) {
    use mimeo_client::VersionedValue;
    match &read.value {
        VersionedValue::Absent => eprintln!("(absent)"),
        VersionedValue::Register {
            values,
            deleted,
            context,
        } => {
            for value in values {
                println!("{}", String::from_utf8_lossy(value));
            }
            if values.len() > 1 {
                eprintln!("({} concurrent values: siblings)", values.len());
            }
            if *deleted {
                eprintln!(
                    "{}",
                    if values.is_empty() {
                        "(deleted)"
                    } else {
                        "(and a concurrent delete)"
                    }
                );
            }
            if !context.is_empty() {
                eprintln!("context: {}", hex(context));
            }
        }
        VersionedValue::Counter(n) => println!("{n}"),
        VersionedValue::Set(members) => {
            for member in members {
                println!("{}", String::from_utf8_lossy(member));
            }
            if members.is_empty() {
                eprintln!("(empty set)");
            }
        }
    }
    // A leaderless node has no sessions (its reads are quorum reads).
    if !read.session.is_empty() {
        eprintln!("session: {}", hex(&read.session));
    }
}

fn print_versioned_write(written: &mimeo_client::VersionedWrite) {
    if written.origin.is_empty() {
        // Leaderless: a counter or set write names no dot.
        eprintln!("ok");
    } else {
        eprintln!("ok (write {}:{})", written.origin, written.seq);
    }
    if let Some(context) = &written.context {
        eprintln!("context: {}", hex(context));
    }
    if !written.session.is_empty() {
        eprintln!("session: {}", hex(&written.session));
    }
}

/// Parses a log position written `TERM:INDEX`.
fn parse_position(text: &str) -> Result<Position, String> {
    let (term, index) = text
        .split_once(':')
        .ok_or_else(|| format!("'{text}' is not a position (write TERM:INDEX, e.g. 3:120)"))?;
    let number = |part: &str, what: &str| {
        part.trim()
            .parse::<u64>()
            .map_err(|_| format!("'{text}': the {what} must be a whole number"))
    };
    Ok(Position {
        term: number(term, "term")?,
        index: number(index, "index")?,
    })
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (try 500ms, 10s or 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit in '{text}' (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("'{text}': {e}"))
}

/// `<dir>-ca`, beside `dir`: where `certs init` puts the CA by default.
fn default_ca_dir(dir: &Path) -> PathBuf {
    let mut name = dir
        .file_name()
        .map_or_else(|| "certs".into(), |n| n.to_os_string());
    name.push("-ca");
    dir.with_file_name(name)
}

/// Writes a new CA into `ca_dir` and the requested certificates (with
/// `ca.pem`, without the CA key) into `dir`; returns how many files were
/// written. Refuses one directory for both.
fn init_certs(
    dir: &Path,
    ca_dir: &Path,
    request: &CertRequest,
    valid_days: u32,
    ca_valid_days: u32,
    force: bool,
) -> anyhow::Result<usize> {
    let same = |a: &Path, b: &Path| {
        a == b
            || (a.canonicalize().ok().is_some() && a.canonicalize().ok() == b.canonicalize().ok())
    };
    if same(dir, ca_dir) {
        anyhow::bail!(
            "--ca-dir and --dir are both {}: the CA key must not be handed out with the \
             certificates (anyone holding it can make an admin or node certificate); \
             give --ca-dir a directory of its own",
            dir.display()
        );
    }
    let ca = CertificateAuthority::generate(ca_valid_days)?;
    // Check both directories before writing either.
    for path in [
        dir.join("ca.pem"),
        ca_dir.join("ca.pem"),
        ca_dir.join("ca.key"),
    ] {
        if !force && path.exists() {
            return Err(mimeo_wire::CertError::Exists { path }.into());
        }
    }
    let saved = ca.save(ca_dir, force)?;
    let issued = ca.issue(dir, request, valid_days, force)?;
    Ok(saved.len() + issued.len())
}

/// Certificates for a local cluster, created unless already present (a
/// directory made for other nodes is refused, naming the missing one). The
/// CA goes to `ca_dir`.
pub(crate) fn ensure_certs(dir: &Path, ca_dir: &Path, nodes: &[String]) -> anyhow::Result<()> {
    if dir.join("ca.pem").exists() {
        if let Some(id) = nodes
            .iter()
            .find(|id| !dir.join(format!("node-{id}.pem")).exists())
        {
            anyhow::bail!(
                "{} holds certificates for other nodes (no node-{id}.pem): use a fresh --dir",
                dir.display()
            );
        }
        return Ok(());
    }
    let request = CertRequest {
        nodes: nodes.to_vec(),
        clients: vec!["cli".into(), "bench".into(), "harness".into()],
        admins: vec!["ops".into()],
    };
    let validity = Validity::default();
    init_certs(
        dir,
        ca_dir,
        &request,
        validity.leaf_days,
        validity.ca_days,
        false,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn positions_parse() {
        assert_eq!(
            parse_position("3:120"),
            Ok(Position {
                term: 3,
                index: 120
            })
        );
        assert!(parse_position("120").is_err());
        assert!(parse_position("3:x").is_err());
        assert!(parse_position("-1:2").is_err());
    }

    #[test]
    fn get_flags_that_do_not_fit_the_read_mode_are_refused() {
        let second = Some(Duration::from_secs(1));
        let position = Position { term: 1, index: 2 };
        let at = Some(position);
        assert!(read_consistency(None, second, None).is_err());
        assert!(read_consistency(Some(ReadFlag::Leader), None, at).is_err());
        assert!(read_consistency(Some(ReadFlag::Session), None, None).is_err());
        assert_eq!(
            read_consistency(Some(ReadFlag::Follower), second, None).unwrap(),
            ReadConsistency::Follower {
                max_staleness_ms: Some(1000)
            }
        );
        assert_eq!(
            read_consistency(Some(ReadFlag::Session), None, at).unwrap(),
            ReadConsistency::Session { after: position }
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }
}
