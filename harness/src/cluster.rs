//! Real `mimeo` node processes on 127.0.0.1: configs and certificates in the
//! run directory, start, wait until serving (bounded), kill, pause, restart,
//! and a clean-up that leaves no process behind.
//!
//! A node's config is the node's own [`NodeConfig`] (from `mimeo-node`),
//! filled in from the [`ClusterSpec`], with the run's extra knobs
//! (`--acks`, `--reads`, `--node-config`, each a line of TOML such as
//! `replication.acks = "quorum"`) merged over it, checked by the node's
//! own validation, and written with [`NodeConfig::to_toml`]. So a config
//! the harness writes is one the node accepts, and a misspelt knob is
//! refused before any node starts, with the node's own message.
//!
//! A replicated cluster (any mode but `standalone`) also gets a
//! [`FaultNet`]: every node sends its peer traffic for another node to the
//! proxy of that directed link, so the nemesis can partition, drop and delay
//! it. Each node config names its peers in `[[replication.peers]]` tables:
//!
//! ```toml
//! mode = "leader-follower"
//!
//! [[replication.peers]]
//! id = "n2"
//! addr = "127.0.0.1:41002"        # the fault proxy n1->n2
//! client_addr = "127.0.0.1:7002"  # n2's listen address (leader redirects)
//! ```
//!
//! The harness uses nodes only as a user would: it runs the `mimeo` binary
//! (`mimeo certs init`, `mimeo serve --config`), speaks the client protocol
//! to them and the admin protocol for faults. Every child is spawned with
//! `kill_on_drop`, so even a panic or an early return kills it; a paused
//! node is sent SIGKILL too, which works on a stopped process.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mimeo_client::{AdminClient, Client, ClientConfig};
use mimeo_node::config::{Mode, NodeConfig, PeerConfig};
use mimeo_storage::FsyncMode;
use mimeo_wire::TlsIdentity;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::net::FaultNet;

/// The client certificate names `certs init` writes for the harness.
pub const CLIENT_CERT: &str = "client-harness";
/// The admin certificate name the harness uses for faults.
pub const ADMIN_CERT: &str = "admin-harness";

/// Pids of every node process this harness started and has not reaped, for
/// [`kill_all_live`].
static LIVE: std::sync::Mutex<BTreeSet<i32>> = std::sync::Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SIGKILL to every node process still running, from any cluster: the last
/// resort before the harness exits abruptly (a second Ctrl-C).
pub fn kill_all_live() {
    for pid in live().iter() {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

/// How long a node may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to write the node configs of a run.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The run directory (configs, certs, data, logs go under it).
    pub dir: PathBuf,
    /// The `mimeo` binary.
    pub binary: PathBuf,
    /// Node count.
    pub nodes: usize,
    /// The cluster id in configs and hellos.
    pub cluster_id: String,
    /// The replication mode, written to `mode`. Any mode but `standalone`
    /// gets a fault network and peer tables.
    pub mode: Mode,
    /// The nodes' `storage.fsync`.
    pub fsync: FsyncMode,
    /// Keep unsynced bytes in process memory, so SIGKILL is a power cut.
    pub simulate_power_loss: bool,
    /// The nodes' `replication.acks`, when given (otherwise the node's
    /// default).
    pub acks: Option<String>,
    /// The nodes' `replication.reads`, when given (otherwise the node's
    /// default).
    pub reads: Option<String>,
    /// Leaderless: the nodes' `replication.n`, `w`, `r`, `pw`, `pr` and
    /// `sloppy` (each `None` keeps the node's default).
    pub leaderless: Option<crate::run::QuorumArgs>,
    /// Extra TOML lines, `key = value` or `table.key = value`, merged into
    /// every node config (a mode's own knobs); each must name a field of
    /// [`NodeConfig`].
    pub extra_config: Vec<String>,
    /// Seed of the fault network's random decisions (loss, jitter).
    pub seed: u64,
}

/// True for modes whose nodes talk to each other (every mode but
/// `standalone`): they get a fault network and `[[replication.peers]]`.
pub fn is_replicated(mode: Mode) -> bool {
    mode != Mode::Standalone
}

/// One node process (or the place for one, while it is down).
#[derive(Debug)]
pub struct Node {
    /// Its id, `n1`...
    pub id: String,
    /// Its client address.
    pub addr: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    /// Where its stdout and stderr go (appended across restarts).
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    /// True while the process runs (paused or not).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// True while the process is stopped by SIGSTOP.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Takes the child out (it is being killed or has exited).
    fn take_child(&mut self) -> Option<Child> {
        let child = self.child.take()?;
        if let Some(pid) = child.id() {
            live().remove(&(pid as i32));
        }
        self.paused = false;
        Some(child)
    }

    fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .map(|id| Pid::from_raw(id as i32))
    }
}

/// A set of node processes for one run, and the fault network between
/// them when they replicate.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    certs: PathBuf,
    /// The nodes, in id order.
    pub nodes: Vec<Node>,
    net: Option<Arc<FaultNet>>,
}

impl Cluster {
    /// Writes certificates (with `mimeo certs init`) and one config per node
    /// into `spec.dir`, choosing free UDP ports on 127.0.0.1. For a
    /// replicated mode it first starts the fault network (seeded with
    /// `spec.seed`, on the current tokio runtime) so the configs can route
    /// peer traffic through its proxies; it lives as long as the cluster.
    /// Starts no node.
    pub async fn prepare(spec: ClusterSpec) -> anyhow::Result<Cluster> {
        if spec.nodes == 0 {
            bail!("a cluster needs at least one node");
        }
        std::fs::create_dir_all(spec.dir.join("nodes"))
            .with_context(|| format!("creating {}", spec.dir.display()))?;
        let ids: Vec<String> = (1..=spec.nodes).map(|i| format!("n{i}")).collect();
        let certs = spec.dir.join("certs");
        let output = std::process::Command::new(&spec.binary)
            .args(["certs", "init", "--dir"])
            .arg(&certs)
            .arg("--nodes")
            .arg(ids.join(","))
            .args(["--clients", "harness", "--admins", "harness"])
            .output()
            .with_context(|| format!("running {} certs init", spec.binary.display()))?;
        if !output.status.success() {
            bail!(
                "`mimeo certs init` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // Hold every node's port until the fault network has bound its
        // proxies, so no proxy takes a port a node was given. (Another
        // process may still take one before its node binds it; the node then
        // fails to start with a clear error.)
        let mut reserved = Vec::new();
        let mut addrs = Vec::new();
        for id in ids {
            let socket = UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
            addrs.push((id, socket.local_addr()?));
            reserved.push(socket);
        }
        let net = if is_replicated(spec.mode) {
            let net = FaultNet::start_seeded(&addrs, spec.seed)
                .await
                .context("starting the fault network between the nodes")?;
            Some(Arc::new(net))
        } else {
            None
        };
        drop(reserved);
        let nodes = write_configs(&spec, &addrs, net.as_deref())?;
        Ok(Cluster {
            spec,
            certs,
            nodes,
            net,
        })
    }

    /// The fault network between the nodes (`None` for standalone).
    pub fn net(&self) -> Option<Arc<FaultNet>> {
        self.net.clone()
    }

    /// The certificate directory.
    pub fn certs(&self) -> &Path {
        &self.certs
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.spec.cluster_id
    }

    /// The client addresses of every node, in id order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// The index of node `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Starts node `i` (a no-op when it runs), first binding again the
    /// fault network's proxies that lead to it ([`FaultNet::node_up`]).
    pub async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let binary = self.spec.binary.clone();
        let node = &mut self.nodes[i];
        if node.child.is_some() {
            return Ok(());
        }
        if let Some(net) = &self.net {
            net.node_up(&node.id).await?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let child = Command::new(&binary)
            .arg("serve")
            .arg("--config")
            .arg(&node.config)
            .current_dir(&self.spec.dir)
            .env(
                "RUST_LOG",
                std::env::var("MIMEO_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} serve for {}", binary.display(), node.id))?;
        if let Some(pid) = child.id() {
            live().insert(pid as i32);
        }
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Starts every node that is not running.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.start(i).await?;
        }
        Ok(())
    }

    /// Waits until node `i` answers a status request, failing when it exits
    /// or `bound` passes; the error quotes the end of its log.
    pub async fn wait_ready(&mut self, i: usize, bound: Duration) -> anyhow::Result<()> {
        let identity = TlsIdentity::from_dir(&self.certs, CLIENT_CERT)?;
        let node = &mut self.nodes[i];
        let mut config = ClientConfig::new(vec![node.addr], &self.spec.cluster_id, identity);
        config.connect_timeout = Duration::from_millis(500);
        config.request_timeout = Duration::from_secs(1);
        let client = Client::new(config)?;
        let deadline = Instant::now() + bound;
        loop {
            let Some(child) = node.child.as_mut() else {
                bail!("node {} is not running", node.id);
            };
            if let Some(status) = child.try_wait()? {
                node.take_child();
                bail!(
                    "node {} exited during start-up ({status}); {} ends with:\n{}",
                    node.id,
                    node.log.display(),
                    log_tail(&node.log, 15)
                );
            }
            if client.status_of(node.addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} did not answer within {bound:?}; {} ends with:\n{}",
                    node.id,
                    node.log.display(),
                    log_tail(&node.log, 15)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for every running node.
    pub async fn wait_all_ready(&mut self, bound: Duration) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_running() {
                self.wait_ready(i, bound).await?;
            }
        }
        Ok(())
    }

    /// SIGKILL to node `i` and reaps it, then closes the fault network's
    /// proxies that lead to it ([`FaultNet::node_down`]): as at the dead
    /// process's own address, its peers' datagrams are refused. Returns
    /// false when it was not running.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<bool> {
        let node = &mut self.nodes[i];
        let Some(mut child) = node.take_child() else {
            return Ok(false);
        };
        child
            .kill()
            .await
            .with_context(|| format!("killing {}", node.id))?;
        if let Some(net) = &self.net {
            net.node_down(&node.id).await;
        }
        Ok(true)
    }

    /// SIGSTOP to node `i`. Returns false when it was not running or
    /// already paused.
    pub fn pause(&mut self, i: usize) -> anyhow::Result<bool> {
        let node = &mut self.nodes[i];
        let Some(pid) = node.pid() else {
            return Ok(false);
        };
        if node.paused {
            return Ok(false);
        }
        kill(pid, Signal::SIGSTOP).with_context(|| format!("pausing {}", node.id))?;
        node.paused = true;
        Ok(true)
    }

    /// SIGCONT to node `i`. Returns false when it was not paused.
    pub fn resume(&mut self, i: usize) -> anyhow::Result<bool> {
        let node = &mut self.nodes[i];
        let Some(pid) = node.pid() else {
            return Ok(false);
        };
        if !node.paused {
            return Ok(false);
        }
        kill(pid, Signal::SIGCONT).with_context(|| format!("resuming {}", node.id))?;
        node.paused = false;
        Ok(true)
    }

    /// An admin client for node `i`.
    pub async fn admin(&self, i: usize, timeout: Duration) -> anyhow::Result<AdminClient> {
        let identity = TlsIdentity::from_dir(&self.certs, ADMIN_CERT)?;
        Ok(AdminClient::connect(
            self.nodes[i].addr,
            &self.spec.cluster_id,
            &identity,
            timeout,
        )
        .await?)
    }

    /// Reports nodes that exited on their own (not killed by the harness),
    /// with the end of their logs, and forgets their processes.
    pub fn reap_crashed(&mut self) -> Vec<String> {
        let mut crashed = Vec::new();
        for node in &mut self.nodes {
            let exited = match node.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                _ => None,
            };
            if let Some(status) = exited {
                node.take_child();
                crashed.push(format!(
                    "node {} exited on its own ({status}); {} ends with:\n{}",
                    node.id,
                    node.log.display(),
                    log_tail(&node.log, 15)
                ));
            }
        }
        crashed
    }

    /// Stops every node: SIGCONT to paused ones, SIGTERM, then SIGKILL to
    /// any still running after a bound. Safe to call twice.
    pub async fn stop_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(pid) = node.pid() {
                if node.paused {
                    let _ = kill(pid, Signal::SIGCONT);
                    node.paused = false;
                }
                let _ = kill(pid, Signal::SIGTERM);
            }
        }
        for node in &mut self.nodes {
            let Some(mut child) = node.take_child() else {
                continue;
            };
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                tracing::warn!(node = %node.id, "did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // `kill_on_drop` sends SIGKILL as each child drops; this makes it
        // explicit and also covers processes that were paused.
        for node in &mut self.nodes {
            if let Some(pid) = node.pid() {
                let _ = kill(pid, Signal::SIGKILL);
            }
            node.take_child();
        }
    }
}

/// Writes `nodes/<id>.toml` for every node of `addrs` (id, listen address),
/// routing peer traffic through `net` when there is one.
fn write_configs(
    spec: &ClusterSpec,
    addrs: &[(String, SocketAddr)],
    net: Option<&FaultNet>,
) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for (id, addr) in addrs {
        let mut peers = Vec::new();
        if let Some(net) = net {
            for (other, client_addr) in addrs.iter().filter(|(other, _)| other != id) {
                let proxy = net
                    .proxy_addr(id, other)
                    .with_context(|| format!("the fault network has no link {id}->{other}"))?;
                // Peer traffic goes through the fault proxy of the directed
                // link; redirects name the peer's own listen address.
                peers.push(PeerConfig {
                    id: other.clone(),
                    addr: proxy,
                    client_addr: Some(*client_addr),
                });
            }
        }
        let config = spec.dir.join("nodes").join(format!("{id}.toml"));
        let text = format!(
            "# Written by mimeo-harness.\n{}",
            node_config(spec, id, *addr, peers)?.to_toml()
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        nodes.push(Node {
            log: spec.dir.join("nodes").join(format!("{id}.log")),
            id: id.clone(),
            addr: *addr,
            config,
            child: None,
            paused: false,
        });
    }
    Ok(nodes)
}

/// One node's config: the node's own [`NodeConfig`] from `spec`, with
/// `spec.extra_config` merged over it (each line parsed as TOML, so
/// `replication.acks = "quorum"` sets that field) and validated as the node
/// will validate it.
fn node_config(
    spec: &ClusterSpec,
    id: &str,
    addr: SocketAddr,
    peers: Vec<PeerConfig>,
) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig {
        node_id: id.to_owned(),
        cluster_id: spec.cluster_id.clone(),
        listen: addr,
        // Paths in a node config are relative to the config file; write
        // them absolute.
        data_dir: spec.dir.join("data").join(id),
        mode: spec.mode,
        ..NodeConfig::default()
    };
    config.tls.dir = spec.dir.join("certs");
    config.storage.fsync = spec.fsync;
    // A deliberate test setting: whatever acks the run asks for, the
    // harness is there to show what fsync = never loses.
    config.storage.allow_unsynced_acks = spec.fsync == FsyncMode::Never && is_replicated(spec.mode);
    config.storage.simulate_power_loss = spec.simulate_power_loss;
    if is_replicated(spec.mode) {
        // Each run starts a brand-new cluster in a fresh directory: its
        // nodes found it (a restart finds their data and ignores this).
        config.replication.bootstrap = true;
        config.replication.peers = peers;
    }
    if let Some(acks) = &spec.acks {
        config.replication.acks = acks.clone();
    }
    if let Some(reads) = &spec.reads {
        config.replication.reads = reads.clone();
    }
    if let Some(q) = &spec.leaderless {
        let r = &mut config.replication;
        (r.n, r.w, r.r, r.pw, r.pr, r.sloppy) = (q.n, q.w, q.r, q.pw, q.pr, q.sloppy);
    }
    if spec.extra_config.is_empty() {
        config.validate()?;
        return Ok(config);
    }
    let mut table = toml::Table::try_from(&config).context("a NodeConfig as a TOML table")?;
    for line in &spec.extra_config {
        let extra: toml::Table = toml::from_str(line).with_context(|| {
            format!("node config line {line:?} is not `key = value` or `table.key = value` TOML")
        })?;
        merge(&mut table, extra);
    }
    let config: NodeConfig = toml::Value::Table(table).try_into().with_context(|| {
        format!(
            "the node config lines {:?} do not fit the node's config",
            spec.extra_config
        )
    })?;
    config.validate().with_context(|| {
        format!(
            "the node refuses its config with the lines {:?}",
            spec.extra_config
        )
    })?;
    Ok(config)
}

/// Sets every value of `extra` in `table`, descending into tables both
/// have, so `[replication] acks = ..` changes one field and keeps the rest.
fn merge(table: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (table.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(extra)) => merge(inner, extra),
            (_, value) => {
                table.insert(key, value);
            }
        }
    }
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Finds the `mimeo` binary: `explicit`, else `$MIMEO_BIN`, else next to
/// this executable (`target/<profile>/mimeo`, also from `target/<profile>/deps`
/// for tests), else builds it with cargo in the workspace this crate lives in.
pub fn locate_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    // Nodes run in the run directory, so a relative path is made absolute.
    let absolute = |path: &Path, source: &str| -> anyhow::Result<PathBuf> {
        if !path.is_file() {
            bail!("{source} {} is not a file", path.display());
        }
        path.canonicalize()
            .with_context(|| format!("resolving {source} {}", path.display()))
    };
    if let Some(path) = explicit {
        return absolute(path, "--mimeo-bin");
    }
    if let Some(path) = std::env::var_os("MIMEO_BIN") {
        return absolute(Path::new(&path), "MIMEO_BIN");
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    if dir.as_deref().and_then(Path::file_name) == Some("deps".as_ref()) {
        dir = dir.and_then(|d| d.parent().map(Path::to_path_buf));
    }
    let profile_dir = dir.context("this executable has no parent directory")?;
    let candidate = profile_dir.join("mimeo");
    let release = profile_dir.file_name() == Some("release".as_ref());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("harness crate has no parent directory")?;
    // Build (or bring up to date) when the binary is missing; cargo is a
    // no-op when it is fresh.
    if !candidate.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!(
            "building the mimeo binary ({})...",
            if release { "release" } else { "debug" }
        );
        let mut build = std::process::Command::new(cargo);
        build.current_dir(workspace).args([
            "build",
            "--quiet",
            "-p",
            "mimeo-node",
            "--bin",
            "mimeo",
        ]);
        if release {
            build.arg("--release");
        }
        let status = build.status().context("running cargo build for mimeo")?;
        if !status.success() {
            bail!("cargo build -p mimeo-node failed ({status})");
        }
    }
    if candidate.is_file() {
        Ok(candidate)
    } else {
        bail!(
            "no mimeo binary at {}; build it with `cargo build -p mimeo-node` or pass --mimeo-bin",
            candidate.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_binary_path_is_made_absolute() {
        // Tests run in the crate directory, where Cargo.toml is a file.
        let found = locate_binary(Some(Path::new("Cargo.toml"))).unwrap();
        assert!(found.is_absolute(), "{}", found.display());
        assert!(found.ends_with("harness/Cargo.toml"), "{}", found.display());
        let err = locate_binary(Some(Path::new("no/such/mimeo"))).unwrap_err();
        assert!(
            err.to_string()
                .contains("--mimeo-bin no/such/mimeo is not a file"),
            "{err}"
        );
    }

    fn spec(extra: &[&str]) -> ClusterSpec {
        ClusterSpec {
            dir: PathBuf::from("/tmp/x"),
            binary: PathBuf::from("mimeo"),
            nodes: 1,
            cluster_id: "c".into(),
            mode: Mode::Standalone,
            fsync: FsyncMode::Always,
            simulate_power_loss: true,
            acks: None,
            reads: None,
            leaderless: None,
            extra_config: extra.iter().map(|s| s.to_string()).collect(),
            seed: 0,
        }
    }

    #[test]
    fn node_config_is_the_nodes_own_with_extra_knobs_merged_in() {
        let config = node_config(
            &spec(&[
                "storage.segment_bytes = 4096",
                "limits.max_key_bytes = 64",
                "limits.max_value_bytes=99",
            ]),
            "n1",
            "127.0.0.1:7001".parse().unwrap(),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(config.node_id, "n1");
        assert_eq!(config.storage.fsync, FsyncMode::Always);
        assert!(config.storage.simulate_power_loss);
        assert_eq!(config.storage.segment_bytes, 4096);
        assert_eq!(config.limits.max_key_bytes, 64);
        assert_eq!(config.limits.max_value_bytes, 99);
        // The knobs the lines do not name keep the node's defaults.
        let default = NodeConfig::default();
        assert_eq!(
            config.limits.max_frame_bytes,
            default.limits.max_frame_bytes
        );
        assert!(config.replication.peers.is_empty());
        assert!(
            !config.replication.bootstrap,
            "standalone: nothing to found"
        );
        // What is written is what the node reads back.
        assert_eq!(NodeConfig::parse(&config.to_toml()).unwrap(), config);
    }

    /// `--n --w --r --pw --pr --sloppy` land in the node's own config
    /// fields; the ones not given keep the node's defaults.
    #[test]
    fn leaderless_quorums_are_written_into_the_nodes_config() {
        let mut spec = spec(&["replication.read_repair = \"off\""]);
        spec.mode = Mode::Leaderless;
        spec.nodes = 5;
        spec.leaderless = Some(crate::run::QuorumArgs {
            w: Some(1),
            r: Some(1),
            pr: Some(1),
            sloppy: true,
            ..Default::default()
        });
        let peers = (2..=5)
            .map(|i| PeerConfig {
                id: format!("n{i}"),
                addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                client_addr: None,
            })
            .collect();
        let config = node_config(&spec, "n1", "127.0.0.1:7001".parse().unwrap(), peers).unwrap();
        let r = &config.replication;
        assert_eq!(
            (r.n, r.w, r.r, r.pw, r.pr),
            (None, Some(1), Some(1), None, Some(1))
        );
        assert!(r.sloppy);
        assert_eq!(r.read_repair, "off");
        let text = config.to_toml();
        assert_eq!(NodeConfig::parse(&text).unwrap(), config, "{text}");
    }

    #[test]
    fn a_misspelt_or_invalid_knob_is_refused_before_any_node_starts() {
        let addr = "127.0.0.1:7001".parse().unwrap();
        for (line, expected) in [
            ("storage.segmnet_bytes = 4096", "segmnet_bytes"),
            ("limits.max_key_bytes = \"many\"", "max_key_bytes"),
            ("replication.acks = \"most\"", "most"),
            ("not toml", "not toml"),
        ] {
            let mut spec = spec(&[line]);
            spec.mode = Mode::LeaderFollower;
            let error = node_config(&spec, "n1", addr, Vec::new()).unwrap_err();
            let chain = format!("{error:#}");
            assert!(chain.contains(expected), "{line}: {chain}");
        }
    }

    #[tokio::test]
    async fn replicated_configs_route_peer_traffic_through_the_fault_network() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("nodes")).unwrap();
        let mut spec = spec(&[
            "replication.acks = \"async\"",
            "storage.segment_bytes = 4096",
            "replication.heartbeat_ms = 50",
        ]);
        spec.dir = dir.path().to_path_buf();
        spec.nodes = 3;
        spec.mode = Mode::LeaderFollower;
        let addrs: Vec<(String, SocketAddr)> = (1..=3)
            .map(|i| {
                (
                    format!("n{i}"),
                    format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                )
            })
            .collect();
        let net = FaultNet::start_seeded(&addrs, 5).await.unwrap();
        let nodes = write_configs(&spec, &addrs, Some(&net)).unwrap();
        assert_eq!(nodes.len(), 3);
        for (node, (id, addr)) in nodes.iter().zip(&addrs) {
            assert_eq!((&node.id, node.addr), (id, *addr));
            let text = std::fs::read_to_string(&node.config).unwrap();
            assert!(text.starts_with("# Written by mimeo-harness."), "{text}");
            assert_eq!(text.matches("[replication]").count(), 1, "{text}");
            let value: toml::Value =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(value["mode"].as_str(), Some("leader-follower"));
            assert_eq!(value["listen"].as_str(), Some(addr.to_string().as_str()));
            assert_eq!(value["storage"]["segment_bytes"].as_integer(), Some(4096));
            let replication = value["replication"].as_table().unwrap();
            assert_eq!(replication["acks"].as_str(), Some("async"), "{text}");
            assert_eq!(replication["heartbeat_ms"].as_integer(), Some(50));
            assert_eq!(replication["bootstrap"].as_bool(), Some(true), "{text}");
            assert_eq!(
                NodeConfig::parse(&text).unwrap().replication.peers.len(),
                2,
                "the node reads what was written: {text}"
            );
            let peers: Vec<[&str; 3]> = replication["peers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|peer| {
                    assert_eq!(peer.as_table().unwrap().len(), 3, "{text}");
                    ["id", "addr", "client_addr"].map(|k| peer[k].as_str().unwrap())
                })
                .collect();
            let expected: Vec<[String; 3]> = addrs
                .iter()
                .filter(|(other, _)| other != id)
                .map(|(other, client_addr)| {
                    let proxy = net.proxy_addr(id, other).unwrap();
                    assert!(
                        !addrs.iter().any(|(_, a)| *a == proxy),
                        "{id}->{other}: {proxy}"
                    );
                    [other.clone(), proxy.to_string(), client_addr.to_string()]
                })
                .collect();
            assert_eq!(peers, expected, "{text}");
        }
    }
}
