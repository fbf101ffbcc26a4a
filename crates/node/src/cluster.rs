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
use crate::config::{Mode, NodeConfig};

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
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let ids: Vec<String> = (1..=args.count).map(|i| format!("n{i}")).collect();
    let certs = dir.join("certs");
    ensure_certs(&certs, &ids)?;

    let exe = std::env::current_exe().context("locating the mimeo binary")?;
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let addr = SocketAddr::from(([127, 0, 0, 1], args.base_port + i as u16));
        let config = NodeConfig {
            node_id: id.clone(),
            cluster_id: args.cluster_id.clone(),
            listen: addr,
            data_dir: PathBuf::from("data").join(id),
            mode: args.mode,
            tls: crate::config::TlsSection {
                dir: PathBuf::from("certs"),
            },
            storage: crate::config::StorageSection {
                fsync: args.fsync,
                ..Default::default()
            },
            ..NodeConfig::default()
        };
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

    let ready = wait_ready(&mut nodes, &certs, &args.cluster_id).await;
    if let Err(e) = ready {
        stop_all(&mut nodes).await;
        return Err(e);
    }
    print_banner(&nodes, &dir, args.mode);

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

/// Polls each node's status until all answer, a node exits, or the bound
/// passes.
async fn wait_ready(
    nodes: &mut [NodeProcess],
    certs: &Path,
    cluster_id: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    for node in nodes.iter_mut() {
        let identity = TlsIdentity::from_dir(certs, "client-cli")?;
        let mut config = ClientConfig::new(vec![node.addr], cluster_id, identity);
        config.connect_timeout = Duration::from_millis(500);
        config.request_timeout = Duration::from_secs(2);
        let client = Client::new(config)?;
        loop {
            if let Some(status) = node.child.try_wait()? {
                bail!(
                    "node {} exited during start-up ({status}); its log {} ends with:\n{}",
                    node.id,
                    node.log.display(),
                    log_tail(&node.log)
                );
            }
            if client.status_of(node.addr).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} did not answer within {:?}; its log {} ends with:\n{}",
                    node.id,
                    READY_TIMEOUT,
                    node.log.display(),
                    log_tail(&node.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn print_banner(nodes: &[NodeProcess], dir: &Path, mode: Mode) {
    println!("{} {mode} node(s) up in {}:", nodes.len(), dir.display());
    for node in nodes {
        println!("  {}  {}  log {}", node.id, node.addr, node.log.display());
    }
    if mode == Mode::Standalone && nodes.len() > 1 {
        println!("(standalone nodes are independent: nothing is replicated between them)");
    }
    let certs = dir.join("certs");
    let first = nodes[0].addr;
    println!("try:");
    println!(
        "  export MIMEO_CERTS={} MIMEO_NODES={first}",
        certs.display()
    );
    println!("  mimeo put greeting hello && mimeo get greeting");
    println!(
        "  mimeo status --node {}",
        nodes
            .iter()
            .map(|n| n.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("  mimeo bench --concurrency 16 --duration 10s");
    println!("Ctrl-C stops the cluster.");
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
