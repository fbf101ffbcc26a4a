//! `mimeo cluster`: a local cluster of real node processes on 127.0.0.1,
//! for trying things out. It writes certificates and configs into one
//! directory, starts `mimeo serve` for each node, waits until every node
//! answers, prints how to reach them, and stops them all on Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use mimeo_client::{Client, ClientConfig};
use mimeo_wire::{NodeRole, TlsIdentity};
use nix::sys::signal::{kill, Signal as NixSignal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use crate::cli::{ensure_certs, ClusterArgs};
use crate::config::{ConfigError, Mode, NodeConfig, PeerConfig, ReplicationSection};

/// How long a node may take to start answering.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

struct NodeProcess {
    id: String,
    addr: SocketAddr,
    log: PathBuf,
    child: Child,
}

pub(crate) async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--nodes must be at least 1");
    }
    let last_port = args.base_port as usize + args.count - 1;
    if last_port > u16::MAX as usize {
        bail!(
            "--base-port {} leaves no room for {} nodes",
            args.base_port,
            args.count
        );
    }
    let ids: Vec<String> = (1..=args.count).map(|i| format!("n{i}")).collect();
    let addrs: Vec<SocketAddr> = (0..args.count)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], args.base_port + i as u16)))
        .collect();
    let mut configs = node_configs(&args, &ids, &addrs)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    claim_dir(&dir, args.mode, args.count)?;
    // A brand-new cluster (no node has data yet) is founded: its nodes vote
    // at once. Otherwise a node without data may have lost it, and must
    // catch up from the others before it votes (it starts as a learner).
    let fresh = ids
        .iter()
        .all(|id| empty_or_absent(&dir.join("data").join(id)));
    for config in &mut configs {
        // Multi-leader has no elections: a node without data catches up.
        config.replication.bootstrap = fresh && config.mode == Mode::LeaderFollower;
    }
    let certs = dir.join("certs");
    ensure_certs(&certs, &dir.join("ca"), &ids)?;

    // Listen before the first node starts, so that a stop asked for during
    // start-up stops the nodes too rather than leaving them running.
    let mut stop = StopSignals::new()?;
    let exe = std::env::current_exe().context("locating the mimeo binary")?;
    let mut nodes = Vec::new();
    for ((id, addr), config) in ids.iter().zip(&addrs).zip(configs) {
        let started = start_node(&exe, &dir, id, *addr, &config);
        match started {
            Ok(node) => nodes.push(node),
            Err(e) => {
                stop_all(&mut nodes).await;
                return Err(e);
            }
        }
    }

    let ready = tokio::select! {
        ready = wait_ready(&mut nodes, &certs, &args.cluster_id, args.mode) => ready,
        () = stop.recv() => Err(anyhow::anyhow!("interrupted during start-up")),
    };
    let leader = match ready {
        Ok(leader) => leader,
        Err(e) => {
            stop_all(&mut nodes).await;
            return Err(e);
        }
    };
    print_banner(&nodes, &dir, &args, leader.as_deref());
    watch(&mut nodes, args.mode, &mut stop).await;
    stop_all(&mut nodes).await;
    Ok(())
}

/// Whether `path` holds nothing (or does not exist).
fn empty_or_absent(path: &Path) -> bool {
    std::fs::read_dir(path).map_or(true, |mut entries| entries.next().is_none())
}

/// Ctrl-C (SIGINT) or SIGTERM.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Refuses a directory that holds a cluster of another mode or size: its
/// data would be taken up by nodes it was not written for (a standalone
/// node's log read as a replicated one, or a log from a node that is no
/// longer a member).
fn claim_dir(dir: &Path, mode: Mode, count: usize) -> anyhow::Result<()> {
    let path = dir.join("cluster.txt");
    let layout = format!("mode = {mode}\nnodes = {count}\n");
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing == layout => Ok(()),
        Ok(existing) => bail!(
            "{} holds a cluster made with different settings ({}); use another --dir. \
             Delete this one only if none of its data is wanted: its nodes' data directories \
             hold every write the cluster acknowledged, and nothing else has a copy",
            dir.display(),
            existing.trim().replace('\n', ", ")
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, layout).with_context(|| format!("writing {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn start_node(
    exe: &Path,
    dir: &Path,
    id: &str,
    addr: SocketAddr,
    config: &NodeConfig,
) -> anyhow::Result<NodeProcess> {
    let config_path = dir.join(format!("{id}.toml"));
    std::fs::write(&config_path, config.to_toml())
        .with_context(|| format!("writing {}", config_path.display()))?;
    let log = dir.join(format!("{id}.log"));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    Ok(NodeProcess {
        id: id.to_string(),
        addr,
        log,
        child,
    })
}

/// Runs until a stop is asked for or every node has exited, saying so when
/// a node exits (a replicated cluster goes on without it: that is how one
/// tries a failover, by killing its leader).
async fn watch(nodes: &mut [NodeProcess], mode: Mode, stop: &mut StopSignals) {
    let mut running = vec![true; nodes.len()];
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            () = stop.recv() => {
                eprintln!("stopping the cluster");
                return;
            }
            _ = poll.tick() => {}
        }
        let mut exited = false;
        for (node, running) in nodes.iter_mut().zip(running.iter_mut()) {
            if !*running {
                continue;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                *running = false;
                exited = true;
                eprintln!(
                    "node {} exited ({status}); its log is {}",
                    node.id,
                    node.log.display()
                );
            }
        }
        let alive = running.iter().filter(|r| **r).count();
        if alive == 0 {
            eprintln!("every node has exited; stopping");
            return;
        }
        // Said once per exit, not on every poll.
        if exited && mode == Mode::LeaderFollower && alive * 2 <= running.len() {
            eprintln!(
                "only {alive} of {} nodes run: no majority, so writes and leader reads will \
                 time out",
                running.len()
            );
        }
    }
}

/// One validated config per node: every node lists the others as its peers
/// when the mode replicates.
fn node_configs(
    args: &ClusterArgs,
    ids: &[String],
    addrs: &[SocketAddr],
) -> anyhow::Result<Vec<NodeConfig>> {
    if args.mode == Mode::LeaderFollower && args.count < 2 {
        bail!("--mode leader-follower needs at least 2 nodes (3 or more to survive a failure)");
    }
    if args.mode == Mode::MultiLeader && args.count < 2 {
        bail!("--mode multi-leader needs at least 2 nodes (every node takes writes and replicates them to the others)");
    }
    if args.mode == Mode::Leaderless && args.count < 2 {
        bail!(
            "--mode leaderless needs at least 2 nodes (5 with the default n = 3 is the usual case)"
        );
    }
    if matches!(args.mode, Mode::Standalone | Mode::Leaderless) && args.acks.is_some() {
        bail!("--acks applies to --mode multi-leader and --mode leader-follower only (leaderless quorums are per request: mimeo put --w N, mimeo get --r N)");
    }
    if !matches!(args.mode, Mode::MultiLeader | Mode::Leaderless) && args.conflicts.is_some() {
        bail!("--conflicts applies to --mode multi-leader only (and to --mode leaderless)");
    }
    if let Some(base) = args.metrics_base_port {
        if base == 0 {
            bail!("--metrics-base-port must be a port number (1 or more)");
        }
        if base as usize + args.count - 1 > u16::MAX as usize {
            bail!(
                "--metrics-base-port {base} leaves no room for {} nodes",
                args.count
            );
        }
    }
    let mut configs = Vec::new();
    for (i, (id, addr)) in ids.iter().zip(addrs).enumerate() {
        let mut config = NodeConfig {
            node_id: id.clone(),
            cluster_id: args.cluster_id.clone(),
            listen: *addr,
            data_dir: PathBuf::from("data").join(id),
            mode: args.mode,
            metrics_listen: args
                .metrics_base_port
                .map(|base| SocketAddr::from(([127, 0, 0, 1], base + i as u16))),
            tls: crate::config::TlsSection {
                dir: PathBuf::from("certs"),
            },
            storage: crate::config::StorageSection {
                fsync: args.fsync,
                ..Default::default()
            },
            ..NodeConfig::default()
        };
        if matches!(args.mode, Mode::MultiLeader | Mode::Leaderless) {
            if let Some(conflicts) = &args.conflicts {
                config.replication.conflicts = conflicts.clone();
            }
            if let Err(ConfigError::Invalid { problem, .. }) = config.replication.conflict_policy()
            {
                bail!("--conflicts {problem}");
            }
        }
        if args.mode != Mode::Standalone {
            if let Some(acks) = &args.acks {
                config.replication.acks = acks.clone();
            }
            config.replication.peers = ids
                .iter()
                .zip(addrs)
                .filter(|(peer, _)| *peer != id)
                .map(|(peer, addr)| PeerConfig {
                    id: peer.clone(),
                    addr: *addr,
                    client_addr: None,
                })
                .collect();
        }
        let acks = match args.mode {
            Mode::MultiLeader => config.replication.multi_leader_acks().map(|_| ()),
            Mode::Leaderless => Ok(()),
            _ => config.replication.ack_mode().map(|_| ()),
        };
        match acks {
            Err(ConfigError::Invalid { problem, .. }) => bail!("--acks {problem}"),
            Err(e) => bail!("--acks: {e}"),
            Ok(_) => {}
        }
        config
            .validate()
            .with_context(|| format!("the configuration of {id}"))?;
        configs.push(config);
    }
    Ok(configs)
}

/// Polls the nodes' statuses until all answer and, when the mode elects a
/// leader, one of them leads; fails if a node exits or READY_TIMEOUT
/// passes. Returns the leader's id (the highest term's, should a deposed
/// leader not know yet).
async fn wait_ready(
    nodes: &mut [NodeProcess],
    certs: &Path,
    cluster_id: &str,
    mode: Mode,
) -> anyhow::Result<Option<String>> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let identity = TlsIdentity::from_dir(certs, "client-cli")?;
    let mut config =
        ClientConfig::new(nodes.iter().map(|n| n.addr).collect(), cluster_id, identity);
    config.connect_timeout = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(2);
    let client = Client::new(config)?;
    loop {
        for node in nodes.iter_mut() {
            if let Some(status) = node.child.try_wait()? {
                bail!(
                    "node {} exited during start-up ({status}); its log {} ends with:\n{}",
                    node.id,
                    node.log.display(),
                    log_tail(&node.log)
                );
            }
        }
        let mut statuses = Vec::new();
        for node in nodes.iter() {
            // Each ask is bounded by the client's timeout and by the deadline.
            let status = tokio::time::timeout_at(deadline, client.status_of(node.addr)).await;
            statuses.push((node, status.ok().and_then(Result::ok)));
        }
        let silent: Vec<&NodeProcess> = statuses
            .iter()
            .filter(|(_, status)| status.is_none())
            .map(|(node, _)| *node)
            .collect();
        let leader = statuses
            .iter()
            .filter_map(|(node, status)| status.as_ref().map(|s| (node, s)))
            .filter(|(_, status)| status.role == NodeRole::Leader)
            .max_by_key(|(_, status)| status.term)
            .map(|(node, _)| node.id.clone());
        if silent.is_empty() && (mode != Mode::LeaderFollower || leader.is_some()) {
            return Ok(leader);
        }
        if Instant::now() >= deadline {
            let (what, blamed): (String, Vec<&NodeProcess>) = if silent.is_empty() {
                (
                    "every node answered, but none became leader".into(),
                    nodes.iter().collect(),
                )
            } else {
                let ids: Vec<&str> = silent.iter().map(|n| n.id.as_str()).collect();
                (format!("{} did not answer", ids.join(", ")), silent)
            };
            let logs: Vec<String> = blamed
                .iter()
                .map(|n| format!("{} ends with:\n{}", n.log.display(), log_tail(&n.log)))
                .collect();
            bail!("{what} within {READY_TIMEOUT:?}; {}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn print_banner(nodes: &[NodeProcess], dir: &Path, args: &ClusterArgs, leader: Option<&str>) {
    let mode = args.mode;
    println!("{} {mode} node(s) up in {}:", nodes.len(), dir.display());
    for (i, node) in nodes.iter().enumerate() {
        let role = match leader {
            Some(id) if id == node.id => "  (leader)",
            _ => "",
        };
        let metrics = match args.metrics_base_port {
            Some(base) => format!("  metrics http://127.0.0.1:{}/metrics", base as usize + i),
            None => String::new(),
        };
        println!(
            "  {}  {}  log {}{metrics}{role}",
            node.id,
            node.addr,
            node.log.display()
        );
    }
    if mode == Mode::Standalone && nodes.len() > 1 {
        println!("(standalone nodes are independent: nothing is replicated between them)");
    }
    if mode == Mode::MultiLeader {
        let replication = ReplicationSection::default();
        println!(
            "(every node takes writes; acks = {}, conflicts = {}: a node that exits is \
             reported and the others go on, and it catches up when it comes back)",
            args.acks.clone().unwrap_or(replication.acks),
            args.conflicts.clone().unwrap_or(replication.conflicts)
        );
    }
    if mode == Mode::Leaderless {
        let replication = ReplicationSection::default();
        println!(
            "(any node coordinates any request; n = 3 replicas per key on a consistent-hash ring, \
             w = r = 2 by default (per request: mimeo put --w N, mimeo get --r N), strict quorums, \
             conflicts = {}: a node that exits is reported and the others go on)",
            args.conflicts.clone().unwrap_or(replication.conflicts)
        );
    }
    if mode == Mode::LeaderFollower {
        println!(
            "(acks = {}: clients may talk to any node and follow its leader hint; a node that \
             exits is reported and the others go on)",
            args.acks
                .clone()
                .unwrap_or_else(|| ReplicationSection::default().acks)
        );
    }
    let certs = dir.join("certs");
    // A standalone cluster is a set of separate stores: point the CLI at
    // one. A replicated one is one store: give the client every node.
    let reach = match mode {
        Mode::Standalone => nodes[0].addr.to_string(),
        Mode::LeaderFollower | Mode::MultiLeader | Mode::Leaderless => all_addrs(nodes),
    };
    println!("try:");
    println!(
        "  export MIMEO_CERTS={} MIMEO_NODES={reach}",
        certs.display()
    );
    println!("  mimeo put greeting hello && mimeo get greeting");
    println!("  mimeo status --node {}", all_addrs(nodes));
    println!("  mimeo bench --concurrency 16 --duration 10s");
    println!("Ctrl-C stops the cluster.");
}

fn all_addrs(nodes: &[NodeProcess]) -> String {
    nodes
        .iter()
        .map(|n| n.addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// SIGTERM to every node, then SIGKILL to any still running once
/// STOP_TIMEOUT has passed (one deadline for all of them).
async fn stop_all(nodes: &mut [NodeProcess]) {
    for node in nodes.iter() {
        if let Some(pid) = node.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), NixSignal::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for node in nodes.iter_mut() {
        if tokio::time::timeout_at(deadline, node.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "node {} did not stop within {STOP_TIMEOUT:?}; killing it",
                node.id
            );
            let _ = node.child.kill().await;
        }
    }
}
