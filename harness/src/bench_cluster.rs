//! `mimeo-harness bench-cluster`: a cluster for benchmarks, with the fault
//! network between its nodes and the clients left out of it.
//!
//! It starts `--nodes` real `mimeo` processes of one `--mode` exactly as a
//! harness run does ([`Cluster::prepare`]: every node-to-node link through a
//! proxy of the [`FaultNet`], clients straight to the nodes), gives each node
//! a `metrics_listen` address, sets the links' delay (`--delay-ms` on every
//! node-to-node link, or only on the links of `--slow NODE`), waits until
//! every node answers, and prints one JSON line on stdout:
//!
//! ```json
//! {"dir":"...","certs":".../certs","cluster_id":"mimeo",
//!  "endpoints":"127.0.0.1:41001,127.0.0.1:41002,127.0.0.1:41003",
//!  "nodes":[{"id":"n1","addr":"127.0.0.1:41001","metrics":"127.0.0.1:41011"},...]}
//! ```
//!
//! Then it reads commands on stdin, one per line, and answers each with one
//! JSON line on stdout (`{"ok":true,...}` or `{"ok":false,"error":"..."}`):
//!
//! | command | effect |
//! |---|---|
//! | `delay MS` | every node-to-node link delayed by MS ms each way |
//! | `delay MS NODE` | only the links to and from NODE delayed by MS ms (the others keep theirs) |
//! | `partition A,B C` | blocks every link between the groups (space-separated groups of comma-separated ids) |
//! | `heal` | removes blocks and every delay, then sets `--delay-ms`/`--slow` again |
//! | `kill NODE` / `start NODE` | SIGKILL a node / start it again and wait until it answers (30 s at most) |
//! | `stats` | `{"ok":true,"links":[...]}`: bytes and datagrams per directed link since the start ([`crate::net::LinkStats`]) |
//!
//! End of input (the script that holds stdin exits or closes it), SIGTERM
//! or SIGINT stop every node (SIGTERM, then SIGKILL after a bound) and end
//! the command. So a script drives it as a bash coprocess and needs no
//! clean-up of its own beyond closing the pipe; `scripts/bench-lib.sh` has
//! the helpers.
//!
//! It is a subcommand rather than a script of its own because the delay
//! needs the fault network, which lives in this crate; everything else is
//! the harness's own [`Cluster`], unchanged.
//!
//! With `--direct` the nodes reach each other without the proxies (for
//! throughput runs, where the proxy hop would be a cost the peers do not
//! pay); `kill` and `start` still work, `delay` and `partition` do not.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use mimeo_node::config::{Mode, NodeConfig};
use mimeo_storage::FsyncMode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::cluster::{locate_binary, Cluster, ClusterSpec};
use crate::net::FaultNet;

/// How long a node may take to answer after it was started.
const READY_BOUND: Duration = Duration::from_secs(30);

/// The options of `bench-cluster`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchClusterArgs {
    /// Replication mode: leader-follower, multi-leader or leaderless
    /// (standalone has no links to delay; start `mimeo serve` for it).
    #[arg(long)]
    pub mode: String,
    /// Node count.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Directory for certificates, configs, data and logs (created; must
    /// not hold another cluster).
    #[arg(long)]
    pub dir: PathBuf,
    /// One-way delay of every node-to-node link in milliseconds (with
    /// `--slow`, of that node's links only).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Delay only the links to and from this node (e.g. n3).
    #[arg(long)]
    pub slow: Option<String>,
    /// Node-to-node links straight between the nodes, not through the
    /// fault network (throughput runs: no proxy hop, as the peers have
    /// none); `delay` and `partition` are then refused.
    #[arg(long, conflicts_with_all = ["delay_ms", "slow"])]
    pub direct: bool,
    /// The nodes' `storage.fsync`: always, batch or never.
    #[arg(long, default_value = "batch")]
    pub fsync: String,
    /// The nodes' `replication.acks`, when given.
    #[arg(long)]
    pub acks: Option<String>,
    /// A node config line merged into every node's config, `key = value`
    /// or `table.key = value` TOML (repeatable), e.g.
    /// `replication.conflicts = "siblings"`.
    #[arg(long = "node-config")]
    pub node_config: Vec<String>,
    /// The `mimeo` binary (default: $MIMEO_BIN, else next to this
    /// executable).
    #[arg(long)]
    pub mimeo_bin: Option<PathBuf>,
}

/// Parses a mode name as the node's config does.
fn parse_mode(text: &str) -> anyhow::Result<Mode> {
    let mode: Mode =
        serde_json::from_value(serde_json::Value::String(text.into())).map_err(|_| {
            anyhow::anyhow!(
                "--mode must be leader-follower, multi-leader or leaderless, not {text:?}"
            )
        })?;
    if mode == Mode::Standalone {
        bail!("--mode standalone has no node-to-node links; run `mimeo serve` for it");
    }
    Ok(mode)
}

fn parse_fsync(text: &str) -> anyhow::Result<FsyncMode> {
    match text {
        "always" => Ok(FsyncMode::Always),
        "batch" => Ok(FsyncMode::Batch),
        "never" => Ok(FsyncMode::Never),
        _ => bail!("--fsync must be always, batch or never, not {text:?}"),
    }
}

/// A free TCP port on 127.0.0.1 for a node's metrics (taken by the node a
/// moment later; another process could take it first, and the node would
/// then fail to start, saying so).
fn free_tcp_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(listener.local_addr()?)
}

/// Runs `bench-cluster` until its input ends or it is signalled.
pub async fn run(args: BenchClusterArgs) -> anyhow::Result<()> {
    let mode = parse_mode(&args.mode)?;
    let fsync = parse_fsync(&args.fsync)?;
    if args.nodes < 2 {
        bail!("--nodes must be at least 2 (there are no links to delay otherwise)");
    }
    if let Some(slow) = &args.slow {
        let known = (1..=args.nodes).any(|i| format!("n{i}") == *slow);
        if !known {
            bail!(
                "--slow {slow:?} is not a node; the nodes are n1..n{}",
                args.nodes
            );
        }
    }
    if args.dir.join("nodes").exists() {
        bail!(
            "{} already holds a cluster; give a fresh --dir",
            args.dir.display()
        );
    }
    let spec = ClusterSpec {
        dir: args.dir.clone(),
        binary: locate_binary(args.mimeo_bin.as_deref())?,
        nodes: args.nodes,
        cluster_id: "mimeo".into(),
        mode,
        fsync,
        simulate_power_loss: false,
        acks: args.acks.clone(),
        reads: None,
        leaderless: None,
        extra_config: args.node_config.clone(),
        seed: 0,
    };
    let mut cluster = Cluster::prepare(spec).await?;
    let net = cluster
        .net()
        .context("a replicated cluster has a fault network")?;
    // Each node gets its own metrics address: the one thing the harness's
    // configs do not set (they are the same for every node otherwise).
    let mut metrics = BTreeMap::new();
    for node in &cluster.nodes {
        let mut config = NodeConfig::load(&node.config)
            .with_context(|| format!("reading back {}", node.config.display()))?;
        let addr = free_tcp_port()?;
        config.metrics_listen = Some(addr);
        if args.direct {
            for peer in &mut config.replication.peers {
                peer.addr = peer
                    .client_addr
                    .context("the harness names every peer's address")?;
            }
        }
        std::fs::write(
            &node.config,
            format!(
                "# Written by mimeo-harness bench-cluster.\n{}",
                config.to_toml()
            ),
        )
        .with_context(|| format!("writing {}", node.config.display()))?;
        metrics.insert(node.id.clone(), addr);
    }
    set_delays(&net, &args);
    cluster.start_all().await?;
    cluster.wait_all_ready(READY_BOUND).await?;

    let nodes: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "addr": n.addr.to_string(),
                "metrics": metrics[&n.id].to_string()
            })
        })
        .collect();
    let endpoints: Vec<String> = cluster.addrs().iter().map(|a| a.to_string()).collect();
    let mut stdout = tokio::io::stdout();
    let hello = json!({
        "dir": args.dir,
        "certs": cluster.certs(),
        "cluster_id": cluster.cluster_id(),
        "endpoints": endpoints.join(","),
        "nodes": nodes,
    });
    write_line(&mut stdout, &hello).await?;

    let outcome = serve_commands(&mut cluster, &net, &args, &mut stdout).await;
    cluster.stop_all().await;
    outcome
}

/// Sets the delays the options ask for, on a network with no delay.
fn set_delays(net: &FaultNet, args: &BenchClusterArgs) {
    let delay = Duration::from_millis(args.delay_ms);
    match &args.slow {
        Some(slow) => net.set_node_delay(slow, delay),
        None => net.set_delay(delay, Duration::ZERO),
    }
}

async fn write_line(
    stdout: &mut tokio::io::Stdout,
    value: &serde_json::Value,
) -> anyhow::Result<()> {
    stdout.write_all(format!("{value}\n").as_bytes()).await?;
    stdout.flush().await?;
    Ok(())
}

/// Reads and answers commands until stdin ends or a signal comes.
async fn serve_commands(
    cluster: &mut Cluster,
    net: &FaultNet,
    args: &BenchClusterArgs,
    stdout: &mut tokio::io::Stdout,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line.context("reading commands from stdin")?,
            _ = term.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        };
        let Some(line) = line else {
            return Ok(());
        };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match command(cluster, net, args, &line).await {
            Ok(mut answer) => {
                answer["ok"] = json!(true);
                answer
            }
            Err(e) => json!({"ok": false, "error": format!("{line}: {e:#}")}),
        };
        write_line(stdout, &answer).await?;
    }
}

/// Carries out one command line.
async fn command(
    cluster: &mut Cluster,
    net: &FaultNet,
    args: &BenchClusterArgs,
    line: &str,
) -> anyhow::Result<serde_json::Value> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if args.direct && matches!(words.first(), Some(&"delay" | &"partition")) {
        bail!("the links are direct (--direct): there is no fault network to delay or partition");
    }
    let node = |id: &str| {
        cluster
            .index_of(id)
            .with_context(|| format!("no node {id:?}"))
    };
    match words.as_slice() {
        ["delay", ms] => {
            net.set_delay(Duration::from_millis(ms.parse()?), Duration::ZERO);
        }
        ["delay", ms, id] => {
            node(id)?;
            net.set_node_delay(id, Duration::from_millis(ms.parse()?));
        }
        ["partition", groups @ ..] if groups.len() >= 2 => {
            let groups: Vec<Vec<String>> = groups
                .iter()
                .map(|g| g.split(',').map(str::to_owned).collect())
                .collect();
            for id in groups.iter().flatten() {
                node(id)?;
            }
            net.partition(&groups);
        }
        ["heal"] => {
            net.heal();
            set_delays(net, args);
        }
        ["kill", id] => {
            let i = node(id)?;
            cluster.kill(i).await?;
        }
        ["start", id] => {
            let i = node(id)?;
            cluster.start(i).await?;
            cluster.wait_ready(i, READY_BOUND).await?;
        }
        ["stats"] => return Ok(json!({ "links": net.stats() })),
        _ => bail!(
            "unknown command; the commands are: delay MS [NODE], partition A,B C, heal, \
             kill NODE, start NODE, stats"
        ),
    }
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_fsync_are_parsed_as_the_node_does() {
        assert_eq!(parse_mode("multi-leader").unwrap(), Mode::MultiLeader);
        assert_eq!(parse_mode("leaderless").unwrap(), Mode::Leaderless);
        let err = parse_mode("standalone").unwrap_err().to_string();
        assert!(err.contains("mimeo serve"), "{err}");
        let err = parse_mode("multileader").unwrap_err().to_string();
        assert!(err.contains("multileader"), "{err}");
        assert!(matches!(parse_fsync("batch"), Ok(FsyncMode::Batch)));
        assert!(parse_fsync("sometimes").is_err());
    }
}
