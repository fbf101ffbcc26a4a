//! Runs one node: the QUIC endpoint, the hello, the client and admin
//! protocols, the optional metrics endpoint, and a clean shutdown on
//! SIGTERM, SIGINT or an admin request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_storage::{
    Backend, FsBackend, FsyncFaultBackend, Options, PowerLossBackend, Store, FAIL_FSYNC_FILE,
};
use mimeo_wire::{
    AdminRequest, AdminResponse, ClientRequest, ClientResponse, ErrorKind, NodeStatus, PeerBus,
    Protocol, Role, TlsIdentity, TransportConfig,
};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::{Mode, NodeConfig};
use crate::leader_follower::LeaderFollower;
use crate::leaderless::Leaderless;
use crate::metrics::{RequestMetrics, RequestOp};
use crate::multi_leader::MultiLeader;
use crate::standalone::Standalone;

/// The service behind the client protocol, by mode.
#[derive(Clone)]
enum Service {
    Standalone(Arc<Standalone>),
    LeaderFollower(Arc<LeaderFollower>),
    MultiLeader(Arc<MultiLeader>),
    Leaderless(Arc<Leaderless>),
}

impl Service {
    /// Serves one client request and records its latency in `requests`.
    async fn handle(self, requests: &RequestMetrics, request: ClientRequest) -> ClientResponse {
        let started = Instant::now();
        let op = RequestOp::of(&request);
        let refused = match &self {
            Service::Standalone(_) => {
                crate::leaderless::refuse_outside_leaderless(&request, "standalone")
            }
            Service::LeaderFollower(_) => {
                crate::leaderless::refuse_outside_leaderless(&request, "leader-follower")
            }
            Service::MultiLeader(_) => {
                crate::leaderless::refuse_outside_leaderless(&request, "multi-leader")
            }
            Service::Leaderless(_) => None,
        };
        if let Some(response) = refused {
            requests.observe(op, &response, started.elapsed());
            return response;
        }
        let response = match self {
            Service::Standalone(s) => s.handle(request).await,
            Service::LeaderFollower(s) => s.handle(request).await,
            Service::MultiLeader(s) => s.handle(request).await,
            Service::Leaderless(s) => s.handle(request).await,
        };
        requests.observe(op, &response, started.elapsed());
        response
    }

    async fn status(&self) -> Option<NodeStatus> {
        match self {
            Service::Standalone(s) => Some(s.status()),
            Service::LeaderFollower(s) => s.status().await,
            Service::MultiLeader(s) => s.status().await,
            Service::Leaderless(s) => s.status().await,
        }
    }
}

/// What every connection task shares.
struct Shared {
    config: NodeConfig,
    transport: TransportConfig,
    service: Service,
    /// Replication traffic (replicated modes only).
    bus: Option<Arc<PeerBus>>,
    clock: Arc<Clock>,
    /// Latencies of the client requests answered.
    requests: Arc<RequestMetrics>,
    shutdown: Notify,
    /// Set when the node must stop because of a failure (the replication
    /// driver could not persist, or storage was poisoned).
    failure: Arc<Failure>,
    /// Connections open, in all and per certificate role.
    connections: Connections,
}

/// Open connections, counted against `limits.max_connections` and
/// `limits.max_connections_per_identity`.
#[derive(Debug, Default)]
struct Connections {
    open: std::sync::Mutex<(usize, HashMap<String, usize>)>,
}

/// A connection counted in [`Connections`]; uncounted when dropped.
struct Counted<'a> {
    connections: &'a Connections,
    identity: Option<String>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<String, usize>)> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one more connection, unless `max` are open.
    fn admit(&self, max: usize) -> Option<Counted<'_>> {
        let mut open = self.lock();
        (open.0 < max).then(|| {
            open.0 += 1;
            Counted {
                connections: self,
                identity: None,
            }
        })
    }
}

impl Counted<'_> {
    /// Counts the connection against `identity`, unless `max` of its
    /// connections are open; returns how many are.
    fn identify(&mut self, identity: String, max: usize) -> Result<(), usize> {
        let mut open = self.connections.lock();
        let count = open.1.entry(identity.clone()).or_default();
        if *count >= max {
            return Err(*count);
        }
        *count += 1;
        self.identity = Some(identity);
        Ok(())
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        open.0 -= 1;
        if let Some(identity) = &self.identity {
            if let Some(count) = open.1.get_mut(identity) {
                *count -= 1;
                if *count == 0 {
                    open.1.remove(identity);
                }
            }
        }
    }
}

/// Why [`serve`] could not start a node, or why a node stopped other than
/// on request.
///
/// Each message names what failed (the file, address or phase); the
/// underlying error, where there is one, is [`std::error::Error::source`]
/// rather than repeated in the message, so print the chain (`mimeo` prints
/// `error: what failed: cause: ...`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The node's certificate or key could not be loaded.
    #[error(
        "loading certificates for node {node_id} from {dir} (create them with \
         `mimeo certs init --dir {dir} --nodes {node_id}`)"
    )]
    Certificates {
        /// The node's id.
        node_id: String,
        /// The configured `tls.dir`.
        dir: std::path::PathBuf,
        /// What was wrong with the files.
        #[source]
        source: mimeo_wire::CertError,
    },
    /// The certificate found is not this node's.
    #[error("certificate {name} is for {role}, but this node's id is {node_id}")]
    WrongCertificate {
        /// The certificate's file name (without `.pem`).
        name: String,
        /// The role the certificate grants.
        role: Role,
        /// The node's configured id.
        node_id: String,
    },
    /// The node's certificate has expired: no peer would accept it.
    #[error(
        "certificate {path} expired {days} days ago: issue a new one with \
         `mimeo certs issue --ca-dir <the CA directory> --force`"
    )]
    CertificateExpired {
        /// The certificate file.
        path: std::path::PathBuf,
        /// Whole days since it expired.
        days: u64,
    },
    /// The data directory could not be opened (wrong owner of the
    /// directory, corrupt log, another node holding it...).
    #[error("opening data directory {dir}")]
    DataDir {
        /// The configured `data_dir`.
        dir: std::path::PathBuf,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The QUIC endpoint could not be created.
    #[error("listening on {addr}")]
    Listen {
        /// The configured `listen` address.
        addr: std::net::SocketAddr,
        /// What failed.
        #[source]
        source: mimeo_wire::WireError,
    },
    /// The `[replication]` section could not be turned into the
    /// replicator's settings.
    #[error("the [replication] section")]
    Replication(#[source] crate::config::ConfigError),
    /// The leader-follower state could not be recovered from the data
    /// directory.
    #[error("recovering the leader-follower state")]
    Recover(#[source] mimeo_leader_follower::driver::DriverError),
    /// The multi-leader or leaderless state could not be recovered from
    /// the data directory (or, leaderless, the ring it was written with
    /// differs from the configured one).
    #[error("recovering the {mode} state")]
    RecoverReplica {
        /// The mode.
        mode: &'static str,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The endpoint or bus for peer connections could not be created.
    #[error("starting peer connections")]
    Peers(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The metrics endpoint could not listen.
    #[error("binding metrics_listen = {addr}")]
    Metrics {
        /// The configured `metrics_listen` address.
        addr: std::net::SocketAddr,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// SIGTERM and SIGINT handlers could not be installed.
    #[error("installing the SIGTERM and SIGINT handlers")]
    Signals(#[source] std::io::Error),
    /// A blocking storage task panicked or was cancelled.
    #[error("the storage task {what} did not complete")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// The panic or cancellation.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Something failed while the node served (a replication driver error,
    /// poisoned storage), so it stopped; `flush` is the error of the final
    /// storage flush, if that failed too.
    #[error(
        "{reason}{}{}",
        if flush.is_some() { " (and flushing storage at shutdown failed too)" } else { "" },
        advice.as_deref().map(|a| format!("; {a}")).unwrap_or_default()
    )]
    Failed {
        /// What failed.
        reason: String,
        /// What to do about it, when storage was poisoned.
        advice: Option<String>,
        /// The final flush's error, if it failed too.
        #[source]
        flush: Option<Box<mimeo_storage::Error>>,
    },
    /// Flushing storage at shutdown failed.
    #[error("flushing storage at shutdown{}", advice.as_deref().map(|a| format!("; {a}")).unwrap_or_default())]
    Flush {
        /// What to do about it, when storage was poisoned.
        advice: Option<String>,
        /// What the storage engine reported.
        #[source]
        source: Box<mimeo_storage::Error>,
    },
}

/// How long before its certificate expires a node starts warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// Refuses a certificate that has expired (no peer would accept it) and
/// warns of one that expires within [`EXPIRY_WARNING`].
fn check_expiry(
    identity: &TlsIdentity,
    node_id: &str,
    path: &std::path::Path,
) -> Result<(), ServeError> {
    let not_after = identity
        .not_after()
        .map_err(|source| ServeError::Certificates {
            node_id: node_id.to_owned(),
            dir: path.parent().unwrap_or(path).to_path_buf(),
            source,
        })?;
    let renew = "issue a new one with `mimeo certs issue --ca-dir <the CA directory> --force`";
    match not_after.duration_since(std::time::SystemTime::now()) {
        Err(e) => {
            return Err(ServeError::CertificateExpired {
                path: path.to_path_buf(),
                days: e.duration().as_secs() / 86_400,
            })
        }
        Ok(left) if left < EXPIRY_WARNING => {
            tracing::warn!(
                "certificate {} expires in {} days: {renew}",
                path.display(),
                left.as_secs() / 86_400
            );
        }
        Ok(_) => {}
    }
    Ok(())
}

/// Why the node must stop, set by whoever finds out first (the replication
/// driver's task, or the standalone service when storage is poisoned).
#[derive(Default)]
pub(crate) struct Failure {
    reason: std::sync::Mutex<Option<String>>,
    notify: Notify,
}

impl Failure {
    /// Stops the node with `reason` (the first reason given wins).
    pub(crate) fn fail(&self, reason: String) {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::error!(error = %reason, "the node must stop");
            *slot = Some(reason);
            self.notify.notify_one();
        }
    }

    fn take(&self) -> Option<String> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What the exit error adds when storage was poisoned: what happened to the
/// records, and what to do.
fn poisoned_advice(store: &Store) -> String {
    format!(
        "the disk failed a write or fsync, so the node stopped rather than go on with storage it \
         cannot trust. Log records after index {} were never acknowledged as durable and are \
         dropped when the node next starts. Check the disk (kernel log, free space, hardware), \
         then restart the node; if the disk is bad, copy the data directory to a healthy one \
         first (do not delete it: it holds every acknowledged write this node has)",
        store.durable_index()
    )
}

/// Runs a node until SIGTERM, SIGINT or an admin `Shutdown`, then stops
/// accepting, syncs storage and closes connections.
///
/// Prints one line to stdout once the node serves, so scripts can wait for it.
pub async fn serve(config: NodeConfig) -> Result<(), ServeError> {
    let identity_name = format!("node-{}", config.node_id);
    let identity = TlsIdentity::from_dir(&config.tls.dir, &identity_name).map_err(|source| {
        ServeError::Certificates {
            node_id: config.node_id.clone(),
            dir: config.tls.dir.clone(),
            source,
        }
    })?;
    if identity.role() != &Role::Node(config.node_id.clone()) {
        return Err(ServeError::WrongCertificate {
            name: identity_name,
            role: identity.role().clone(),
            node_id: config.node_id.clone(),
        });
    }
    check_expiry(
        &identity,
        &config.node_id,
        &config.tls.dir.join(format!("{identity_name}.pem")),
    )?;
    if config.storage.fsync == mimeo_storage::FsyncMode::Never {
        tracing::warn!(
            allow_unsynced_acks = config.storage.allow_unsynced_acks,
            "fsync = \"never\": writes are acknowledged before they reach the disk, and a \
             power cut loses them (a benchmark or test setting)"
        );
    }

    let mut options = Options {
        fsync: config.storage.fsync,
        segment_bytes: config.storage.segment_bytes,
        ..Options::default()
    };
    if config.mode == Mode::LeaderFollower {
        // The replicated log is never compacted wholesale: a leader ships
        // it and may truncate its uncommitted tail. The leader-follower
        // driver discards only the segments its own snapshots cover
        // (`Store::discard_before`).
        options = mimeo_leader_follower::driver::store_options(options);
    }
    if config.mode == Mode::MultiLeader {
        // The writes in the log are shipped to peers that lack them: only
        // the driver discards segments, once every node holds their writes.
        options = mimeo_multi_leader::driver::store_options(options);
    }
    if config.mode == Mode::Leaderless {
        // The driver compacts after waiting for durability, so that no
        // part of a persist a crash cuts is folded.
        options = mimeo_leaderless::driver::store_options(options);
    }
    let simulate_power_loss = config.storage.simulate_power_loss;
    if simulate_power_loss {
        tracing::warn!(
            data_dir = %config.data_dir.display(),
            fsync = %config.storage.fsync,
            "test mode: unsynced writes live in memory; SIGKILL simulates a power cut \
             (storage.simulate_power_loss = true)"
        );
    }
    let opening = config.clone();
    let store = tokio::task::spawn_blocking(move || open_store(&opening, options))
        .await
        .map_err(|source| ServeError::Task {
            what: "opening the data directory",
            source,
        })?
        .map_err(|source| ServeError::DataDir {
            dir: config.data_dir.clone(),
            source,
        })?;
    let store = Arc::new(store);

    let transport = TransportConfig {
        max_frame: config.limits.max_frame_bytes,
        ..TransportConfig::default()
    };
    let listening = |source| ServeError::Listen {
        addr: config.listen,
        source,
    };
    let endpoint =
        mimeo_wire::server_endpoint(config.listen, &identity, &transport).map_err(listening)?;
    let local = endpoint.local_addr().map_err(|source| {
        listening(mimeo_wire::WireError::Bind {
            addr: config.listen,
            source,
        })
    })?;

    let clock = Arc::new(Clock::default());
    let failure = Arc::new(Failure::default());
    let (service, bus, driver) = match config.mode {
        Mode::Standalone => {
            let service = Arc::new(Standalone::new(
                Arc::clone(&store),
                config.clone(),
                Arc::clone(&clock),
                Arc::clone(&failure),
            ));
            (Service::Standalone(service), None, None)
        }
        Mode::LeaderFollower => {
            let (service, bus, driver) =
                start_leader_follower(&config, &identity, &transport, &store, &clock)?;
            (Service::LeaderFollower(service), Some(bus), Some(driver))
        }
        Mode::MultiLeader => {
            let (service, bus, driver) =
                start_multi_leader(&config, &identity, &transport, &store, &clock)?;
            (Service::MultiLeader(service), Some(bus), Some(driver))
        }
        Mode::Leaderless => {
            let (service, bus, driver) =
                start_leaderless(&config, &identity, &transport, &store, &clock)?;
            (Service::Leaderless(service), Some(bus), Some(driver))
        }
    };
    let shared = Arc::new(Shared {
        config: config.clone(),
        transport,
        service,
        bus,
        clock,
        requests: Arc::default(),
        shutdown: Notify::new(),
        failure,
        connections: Connections::default(),
    });
    if let Some(driver) = driver {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let outcome = match driver.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(e) => format!("the replication driver panicked: {e}"),
            };
            shared.failure.fail(outcome);
        });
    }

    let metrics = match config.metrics_listen {
        Some(addr) => {
            let source = crate::metrics::Source {
                config: config.clone(),
                store: Arc::clone(&store),
                started: std::time::Instant::now(),
                replication: match &shared.service {
                    Service::LeaderFollower(service) => Some(Arc::clone(service)),
                    Service::Standalone(_) | Service::MultiLeader(_) | Service::Leaderless(_) => {
                        None
                    }
                },
                requests: Arc::clone(&shared.requests),
                leaderless: match &shared.service {
                    Service::Leaderless(service) => Some(Arc::clone(service)),
                    _ => None,
                },
                multi_leader: match &shared.service {
                    Service::MultiLeader(service) => Some(Arc::clone(service)),
                    _ => None,
                },
            };
            let (bound, task) = crate::metrics::start(addr, source)
                .await
                .map_err(|source| ServeError::Metrics { addr, source })?;
            tracing::info!(%bound, "Prometheus metrics at http://{bound}/metrics");
            Some(task)
        }
        None => None,
    };

    let last = store.last_position();
    tracing::info!(node = %config.node_id, %local, mode = %config.mode, fsync = %config.storage.fsync, simulate_power_loss, last_index = last.index, "serving");
    println!(
        "mimeo node {} serving {} on {} (fsync = {}, {} log entries)",
        config.node_id, config.mode, local, config.storage.fsync, last.index
    );

    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    tokio::spawn(handle_connection(incoming, Arc::clone(&shared)));
                }
                None => break,
            },
            _ = terminate.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = interrupt.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = shared.shutdown.notified() => { tracing::info!("admin shutdown: shutting down"); break; }
            _ = shared.failure.notify.notified() => { tracing::error!("failure: shutting down"); break; }
        }
    }

    if let Service::LeaderFollower(service) = &shared.service {
        service.step_down().await;
    }
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    endpoint.close(0u32.into(), b"node shutting down");
    let syncing = Arc::clone(&store);
    let synced = tokio::task::spawn_blocking(move || syncing.sync())
        .await
        .map_err(|source| ServeError::Task {
            what: "flushing storage at shutdown",
            source,
        })?;
    if tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!("connections did not close within 2 s; exiting anyway");
    }
    tracing::info!(node = %config.node_id, "stopped");
    let failed = shared.failure.take();
    let advice = store.is_poisoned().then(|| poisoned_advice(&store));
    match (failed, synced) {
        (Some(reason), synced) => Err(ServeError::Failed {
            reason,
            advice,
            flush: synced.err().map(Box::new),
        }),
        (None, Err(source)) => Err(ServeError::Flush {
            advice,
            source: Box::new(source),
        }),
        (None, Ok(())) => Ok(()),
    }
}

/// The task running a replication driver (its error, as text).
type DriverTask = tokio::task::JoinHandle<Result<(), String>>;

/// Recovers the leader-follower core from storage, starts the peer bus and
/// the driver task.
fn start_leader_follower(
    config: &NodeConfig,
    identity: &TlsIdentity,
    transport: &TransportConfig,
    store: &Arc<Store>,
    clock: &Arc<Clock>,
) -> Result<(Arc<LeaderFollower>, Arc<PeerBus>, DriverTask), ServeError> {
    use mimeo_leader_follower::driver::{self, Driver};
    let replication = &config.replication;
    let names = crate::leader_follower::names(config);
    let id = |name: &str| names.id(name).expect("every configured node has an id");
    let mut core_config = mimeo_leader_follower::Config::new(
        id(&config.node_id),
        replication.peers.iter().map(|p| id(&p.id)).collect(),
    );
    core_config.heartbeat_interval_ms = replication.heartbeat_ms;
    core_config.election_timeout_min_ms = replication.election_timeout_min_ms;
    core_config.election_timeout_max_ms = replication.election_timeout_max_ms;
    core_config.probe_leader = replication.probe_leader;
    core_config.write_timeout_ms = replication.write_timeout_ms;
    core_config.read_timeout_ms = replication.read_timeout_ms;
    core_config.ack = replication.ack_mode().map_err(ServeError::Replication)?;
    core_config.default_read = replication.read_mode().map_err(ServeError::Replication)?;
    core_config.snapshot_every = replication.snapshot_every;
    core_config.snapshot_keep = replication.snapshot_keep;
    core_config.bootstrap = replication.bootstrap;
    core_config.snapshot_bytes = replication.snapshot_bytes;
    // What the peer bus accepts from this node (validated against the
    // largest write in `NodeConfig::validate`).
    core_config.max_message_bytes =
        mimeo_wire::max_peer_payload(transport.max_frame, &config.node_id);
    // Different nodes must draw different election timeouts, and restarts
    // of one node different ones too.
    core_config.seed = core_config.id ^ std::process::id() as u64;
    let origin = std::time::Instant::now();
    // The hard state and snapshots go through the store's backend (the
    // data directory), so a simulated power loss covers them too.
    let core = driver::recover(
        core_config,
        store,
        &**store.backend(),
        mimeo_leader_follower::Millis(0),
    )
    .map_err(ServeError::Recover)?;

    let (bus, inbound) = start_peer_bus(config, identity, transport)?;
    let (driver, handle) = Driver::new(
        core,
        names,
        Arc::clone(&bus),
        inbound,
        Arc::clone(store),
        Arc::clone(store.backend()),
        origin,
    );
    let task = tokio::spawn(async move { driver.run().await.map_err(|e| e.to_string()) });
    let service = Arc::new(LeaderFollower::new(
        handle,
        Arc::clone(&bus),
        config.clone(),
        Arc::clone(clock),
    ));
    Ok((service, bus, task))
}

/// The peer bus of a replicated node (every peer of `[replication]`,
/// over QUIC with this node's certificate) and its inbound messages.
fn start_peer_bus(
    config: &NodeConfig,
    identity: &TlsIdentity,
    transport: &TransportConfig,
) -> Result<
    (
        Arc<PeerBus>,
        tokio::sync::mpsc::Receiver<mimeo_wire::PeerMessage>,
    ),
    ServeError,
> {
    let peer_endpoint = mimeo_wire::client_endpoint(identity, transport)
        .map_err(|e| ServeError::Peers(e.into()))?;
    let peers = config
        .replication
        .peers
        .iter()
        .map(|p| (p.id.clone(), p.addr))
        .collect();
    let (bus, inbound) = PeerBus::new(
        peer_endpoint,
        config.node_id.clone(),
        peers,
        config.cluster_id.clone(),
        transport.clone(),
    )
    .map_err(|e| ServeError::Peers(e.into()))?;
    Ok((Arc::new(bus), inbound))
}

/// The physical time an HLC follows: the system clock in ms since the
/// Unix epoch, shifted by the node's adjustable offset (the clock nemesis).
fn hlc_wall_clock(clock: &Arc<Clock>) -> Arc<dyn Fn() -> u64 + Send + Sync> {
    let wall = Arc::clone(clock);
    Arc::new(move || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        now.saturating_add_signed(wall.offset_ms())
    })
}

/// Recovers the multi-leader core from storage, starts the peer bus and
/// the driver task (its HLC reads the node's adjustable clock).
fn start_multi_leader(
    config: &NodeConfig,
    identity: &TlsIdentity,
    transport: &TransportConfig,
    store: &Arc<Store>,
    clock: &Arc<Clock>,
) -> Result<(Arc<MultiLeader>, Arc<PeerBus>, DriverTask), ServeError> {
    use mimeo_multi_leader::driver::{self, Driver, DriverConfig};
    let replication = &config.replication;
    let nodes = replication
        .peers
        .iter()
        .map(|p| p.id.clone())
        .chain(std::iter::once(config.node_id.clone()));
    let mut core_config = mimeo_multi_leader::Config::new(config.node_id.clone(), nodes);
    core_config.policy = replication
        .conflict_policy()
        .map_err(ServeError::Replication)?;
    core_config.acks = replication
        .multi_leader_acks()
        .map_err(ServeError::Replication)?;
    core_config.max_drift_ms = replication.max_drift_ms;
    core_config.read_timeout_ms = replication.read_timeout_ms;
    // A write (the key's whole state) must fit one peer message, with
    // room for its envelope (ids, timestamp, vectors).
    let room = mimeo_wire::max_peer_payload(transport.max_frame, &config.node_id);
    core_config.max_write_bytes = room.saturating_sub(4096 + 128 * (replication.peers.len() + 1));
    if core_config.max_write_bytes < config.limits.max_key_bytes + config.limits.max_value_bytes {
        return Err(ServeError::Replication(
            crate::config::ConfigError::Invalid {
                field: "limits.max_value_bytes",
                problem: format!(
                    "({}) plus limits.max_key_bytes ({}) does not fit one replication message \
                 under limits.max_frame_bytes ({}): lower max_value_bytes or raise \
                 max_frame_bytes",
                    config.limits.max_value_bytes,
                    config.limits.max_key_bytes,
                    config.limits.max_frame_bytes
                ),
            },
        ));
    }
    let origin = std::time::Instant::now();
    let recovered =
        driver::recover(core_config, store, mimeo_multi_leader::Millis(0)).map_err(|e| {
            ServeError::RecoverReplica {
                mode: "multi-leader",
                source: e.into(),
            }
        })?;
    let (bus, inbound) = start_peer_bus(config, identity, transport)?;
    let (driver, handle) = Driver::new(
        recovered,
        Arc::clone(&bus),
        inbound,
        Arc::clone(store),
        origin,
        DriverConfig::default(),
    );
    let driver = driver.with_wall_clock(hlc_wall_clock(clock));
    let task = tokio::spawn(async move { driver.run().await.map_err(|e| e.to_string()) });
    let service = Arc::new(MultiLeader::new(
        handle,
        Arc::clone(&bus),
        config.clone(),
        Arc::clone(clock),
    ));
    Ok((service, bus, task))
}

/// Recovers the leaderless core from storage (refusing a changed ring),
/// starts the peer bus and the driver task (its HLC reads the node's
/// adjustable clock).
fn start_leaderless(
    config: &NodeConfig,
    identity: &TlsIdentity,
    transport: &TransportConfig,
    store: &Arc<Store>,
    clock: &Arc<Clock>,
) -> Result<(Arc<Leaderless>, Arc<PeerBus>, DriverTask), ServeError> {
    use mimeo_leaderless::driver::{self, Driver, DriverConfig};
    let replication = &config.replication;
    let mut core_config = replication
        .leaderless_config(&config.node_id)
        .map_err(ServeError::Replication)?;
    // The core answers (unknown / unavailable) before the node's own
    // request timeout gives up on it.
    let timeout = config.limits.request_timeout_ms;
    core_config.request_timeout_ms = (timeout - timeout / 10).max(1);
    let n = core_config.n;
    let origin = std::time::Instant::now();
    let recover_error =
        |source: Box<dyn std::error::Error + Send + Sync>| ServeError::RecoverReplica {
            mode: "leaderless",
            source,
        };
    let ring = mimeo_leaderless::Ring::new(&core_config.nodes, core_config.vnodes)
        .map_err(|e| recover_error(Box::new(mimeo_leaderless::ConfigError::from(e))))?;
    let core = driver::recover(core_config, store, mimeo_leaderless::Millis(0))
        .map_err(|e| recover_error(e.into()))?;
    for (node, share) in core.ring().replica_ownership(n) {
        tracing::info!(%node, share = format!("{:.1}%", share * 100.0), "ring: share of keys replicated");
    }
    let (bus, inbound) = start_peer_bus(config, identity, transport)?;
    let (driver, handle) = Driver::new(
        core,
        Arc::clone(&bus),
        inbound,
        Arc::clone(store),
        origin,
        DriverConfig::default(),
    );
    let driver = driver.with_wall_clock(hlc_wall_clock(clock));
    let task = tokio::spawn(async move { driver.run().await.map_err(|e| e.to_string()) });
    let service = Arc::new(Leaderless::new(
        handle,
        Arc::clone(&bus),
        config.clone(),
        Arc::clone(clock),
        n,
        ring,
        origin,
    ));
    Ok((service, bus, task))
}

/// Opens the store on the real disk or, with `simulate_power_loss`, on a
/// [`PowerLossBackend`] that keeps unsynced bytes in process memory.
///
/// First checks what the directory was created for against `config`
/// (refusing another mode, cluster or node: [`crate::data_dir`]); the
/// store then locks the directory; only then, under the lock, is a missing
/// identity file written.
fn open_store(
    config: &NodeConfig,
    options: Options,
) -> Result<Store, Box<dyn std::error::Error + Send + Sync + 'static>> {
    let data_dir = &config.data_dir;
    let mut backend: Arc<dyn Backend> = if config.storage.simulate_power_loss {
        Arc::new(PowerLossBackend::new(data_dir)?)
    } else {
        Arc::new(FsBackend::new(data_dir)?)
    };
    if config.storage.inject_fsync_errors {
        tracing::warn!(
            trigger = %data_dir.join(FAIL_FSYNC_FILE).display(),
            "test mode: log fsyncs fail with EIO while the trigger file exists \
             (storage.inject_fsync_errors = true)"
        );
        backend = Arc::new(FsyncFaultBackend::new(backend));
    }
    let found = crate::data_dir::check(&*backend, data_dir, config)?;
    let store = Store::open_with_backend(Arc::clone(&backend), options)?;
    crate::data_dir::record(&*backend, data_dir, &found, config)?;
    Ok(store)
}

async fn handle_connection(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let remote = incoming.remote_address();
    let limits = &shared.config.limits;
    let Some(mut counted) = shared.connections.admit(limits.max_connections) else {
        tracing::warn!(%remote, limit = limits.max_connections, "refusing a connection: limits.max_connections are open");
        incoming.refuse();
        return;
    };
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "connection failed during the TLS handshake");
            return;
        }
    };
    let identity = match mimeo_wire::peer_role(&conn) {
        Ok(role) => role.to_string(),
        Err(e) => {
            tracing::warn!(%remote, error = %e, "no usable certificate");
            conn.close(mimeo_wire::codes::REFUSED.into(), b"no usable certificate");
            return;
        }
    };
    if let Err(open) = counted.identify(identity.clone(), limits.max_connections_per_identity) {
        tracing::warn!(%remote, %identity, open, "refusing a connection: limits.max_connections_per_identity are open for this certificate");
        conn.close(
            mimeo_wire::codes::REFUSED.into(),
            format!("{identity} has {open} connections open, the most this node takes (limits.max_connections_per_identity)").as_bytes(),
        );
        return;
    }
    let hello = mimeo_wire::accept_hello(
        &conn,
        &shared.config.cluster_id,
        &shared.config.node_id,
        &shared.transport,
    )
    .await;
    let (protocol, role) = match hello {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "hello refused");
            return;
        }
    };
    tracing::debug!(%remote, ?protocol, ?role, "connection accepted");
    let transport = shared.transport.clone();
    let result = match protocol {
        Protocol::Client => {
            let service = shared.service.clone();
            let requests = Arc::clone(&shared.requests);
            mimeo_wire::serve_rpc(conn, &transport, move |request: ClientRequest| {
                let service = service.clone();
                let requests = Arc::clone(&requests);
                async move { service.handle(&requests, request).await }
            })
            .await
        }
        Protocol::Admin => {
            let shared = Arc::clone(&shared);
            mimeo_wire::serve_rpc(conn, &transport, move |request: AdminRequest| {
                let shared = Arc::clone(&shared);
                async move { admin(&shared, request).await }
            })
            .await
        }
        Protocol::Peer => {
            match &shared.bus {
                Some(bus) => bus.accept(conn),
                None => conn.close(1u32.into(), b"standalone nodes take no peer connections"),
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended");
    }
}

async fn admin(shared: &Shared, request: AdminRequest) -> AdminResponse {
    match request {
        AdminRequest::Status => match shared.service.status().await {
            Some(status) => AdminResponse::Status(status),
            None => AdminResponse::Error {
                kind: ErrorKind::Internal,
                message: "the replication driver has stopped".into(),
            },
        },
        AdminRequest::SetClockOffset { offset_ms } => {
            tracing::info!(offset_ms, "clock offset set by admin");
            shared.clock.set_offset_ms(offset_ms);
            AdminResponse::Ok
        }
        AdminRequest::Shutdown => {
            shared.shutdown.notify_one();
            AdminResponse::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn config(dir: &std::path::Path) -> NodeConfig {
        NodeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.join("data"),
            tls: crate::config::TlsSection {
                dir: dir.join("certs"),
            },
            ..NodeConfig::default()
        }
    }

    #[tokio::test]
    async fn missing_certificates_are_named_with_their_cause() {
        let dir = tempfile::tempdir().unwrap();
        let error = serve(config(dir.path())).await.unwrap_err();
        assert!(
            matches!(&error, ServeError::Certificates { node_id, .. } if node_id == "n1"),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(text.contains("mimeo certs init"), "{text}");
        assert!(
            text.contains(&dir.path().join("certs").display().to_string()),
            "{text}"
        );
        let source = error.source().expect("the cause is kept");
        assert!(source.is::<mimeo_wire::CertError>(), "{source:?}");
    }

    #[tokio::test]
    async fn an_unusable_data_directory_is_named_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let request = mimeo_wire::CertRequest {
            nodes: vec!["n1".into()],
            ..Default::default()
        };
        mimeo_wire::generate_certs(&dir.path().join("certs"), &request, false).unwrap();
        // A file where the data directory should be.
        std::fs::write(dir.path().join("data"), b"not a directory").unwrap();
        let error = serve(config(dir.path())).await.unwrap_err();
        assert!(
            matches!(&error, ServeError::DataDir { dir: d, .. } if *d == dir.path().join("data")),
            "{error:?}"
        );
        assert!(error.source().is_some(), "{error:?}");
    }
}
