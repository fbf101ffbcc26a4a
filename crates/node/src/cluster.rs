//! `mimeo cluster`: a local cluster of real node processes on 127.0.0.1,
//! for trying things out. It writes certificates and configs into one
//! directory, starts `mimeo serve` for each node, waits until every node
//! answers, prints how to reach them, and stops them all on Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mimeo_client::{Client, ClientConfig};
use mimeo_wire::TlsIdentity;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::cli::{ensure_certs, ClusterArgs};
use crate::config::{Mode, NodeConfig, PeerConfig};

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
    let configs = node_configs(&args, &ids, &addrs)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let certs = dir.join("certs");
    ensure_certs(&certs, &ids)?;

    let exe = std::env::current_exe().context("locating the mimeo binary")?;
    let mut nodes = Vec::new();
    for ((id, addr), config) in ids.iter().zip(&addrs).zip(configs) {
        let addr = *addr;
        let config_path = dir.join(format!("{id}.toml"));
        std::fs::write(&config_path, config.to_toml())
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log = dir.join(format!("{id}.log"));
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(&exe)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        nodes.push(NodeProcess {
            id: id.clone(),
            addr,
            log,
            child,
        });
    }

    let leader = match wait_ready(&mut nodes, &certs, &args.cluster_id, args.mode).await {
        Ok(leader) => leader,
        Err(e) => {
            stop_all(&mut nodes).await;
            return Err(e);
        }
    };
    print_banner(&nodes, &dir, &args, leader.as_deref());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let exited = async {
        loop {
            for node in nodes.iter_mut() {
                if let Ok(Some(status)) = node.child.try_wait() {
                    return (node.id.clone(), status);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("stopping the cluster"),
        _ = terminate.recv() => eprintln!("stopping the cluster"),
        (id, status) = exited => eprintln!("node {id} exited ({status}); stopping the cluster"),
    }
    stop_all(&mut nodes).await;
    Ok(())
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
    if args.mode == Mode::Standalone && args.acks != "quorum" {
        bail!("--acks applies to --mode leader-follower only");
    }
    if let Some(base) = args.metrics_base_port {
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
        if args.mode == Mode::LeaderFollower {
            config.replication.acks = args.acks.clone();
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
        config
            .validate()
            .with_context(|| format!("the configuration of {id}"))?;
        configs.push(config);
    }
    Ok(configs)
}

/// Polls each node's status until all answer and, when the mode elects a
/// leader, one of them leads; fails if a node exits or the bound passes.
/// Returns the leader's id.
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
        let mut answered = 0;
        let mut leader = None;
        let mut silent = None;
        for node in nodes.iter_mut() {
            if let Some(status) = node.child.try_wait()? {
                bail!(
                    "node {} exited during start-up ({status}); its log {} ends with:\n{}",
                    node.id,
                    node.log.display(),
                    log_tail(&node.log)
                );
            }
            match client.status_of(node.addr).await {
                Ok(status) => {
                    answered += 1;
                    if status.role == "leader" {
                        leader = Some(node.id.clone());
                    }
                }
                Err(_) => silent = silent.or(Some(node.id.clone())),
            }
        }
        let elected = mode == Mode::Standalone || leader.is_some();
        if answered == nodes.len() && elected {
            return Ok(leader);
        }
        if Instant::now() > deadline {
            let (id, what) = match &silent {
                Some(id) => (id.clone(), "did not answer"),
                None => (nodes[0].id.clone(), "answered, but no node became leader"),
            };
            let log = &nodes.iter().find(|n| n.id == id).expect("a node").log;
            bail!(
                "node {id} {what} within {READY_TIMEOUT:?}; its log {} ends with:\n{}",
                log.display(),
                log_tail(log)
            );
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
    if mode == Mode::LeaderFollower {
        println!(
            "(acks = {}: clients may talk to any node and follow its leader hint)",
            args.acks
        );
    }
    let certs = dir.join("certs");
    // A standalone cluster is a set of separate stores: point the CLI at
    // one. A replicated one is one store: give the client every node.
    let reach = match mode {
        Mode::Standalone => nodes[0].addr.to_string(),
        Mode::LeaderFollower => all_addrs(nodes),
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

/// SIGTERM to every node, then SIGKILL to any still running after the bound.
async fn stop_all(nodes: &mut [NodeProcess]) {
    for node in nodes.iter() {
        if let Some(pid) = node.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for node in nodes.iter_mut() {
        match tokio::time::timeout(STOP_TIMEOUT, node.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!(
                    "node {} did not stop within {STOP_TIMEOUT:?}; killing it",
                    node.id
                );
                let _ = node.child.kill().await;
            }
        }
    }
}
