//! Runs one node: the QUIC endpoint, the hello, the client and admin
//! protocols, and a clean shutdown on SIGTERM, SIGINT or an admin request.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use mimeo_storage::{Options, PowerLossBackend, Store};
use mimeo_wire::{
    AdminRequest, AdminResponse, ClientRequest, Protocol, Role, TlsIdentity, TransportConfig,
};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::standalone::Standalone;

/// What every connection task shares.
struct Shared {
    config: NodeConfig,
    transport: TransportConfig,
    service: Arc<Standalone>,
    clock: Arc<Clock>,
    shutdown: Notify,
}

/// Runs a node until SIGTERM, SIGINT or an admin `Shutdown`, then stops
/// accepting, syncs storage and closes connections.
///
/// Prints one line to stdout once the node serves, so scripts can wait for it.
pub async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    let identity_name = format!("node-{}", config.node_id);
    let identity = TlsIdentity::from_dir(&config.tls.dir, &identity_name).with_context(|| {
        format!(
            "loading certificates for node {} from {} (create them with `mimeo certs init --dir {} --nodes {}`)",
            config.node_id,
            config.tls.dir.display(),
            config.tls.dir.display(),
            config.node_id
        )
    })?;
    if identity.role() != &Role::Node(config.node_id.clone()) {
        bail!(
            "certificate {} is for {:?}, but this node's id is {}",
            identity_name,
            identity.role(),
            config.node_id
        );
    }

    let options = Options {
        fsync: config.storage.fsync,
        segment_bytes: config.storage.segment_bytes,
        ..Options::default()
    };
    let data_dir = config.data_dir.clone();
    let simulate_power_loss = config.storage.simulate_power_loss;
    if simulate_power_loss {
        tracing::warn!(
            data_dir = %config.data_dir.display(),
            fsync = %config.storage.fsync,
            "test mode: unsynced writes live in memory; SIGKILL simulates a power cut \
             (storage.simulate_power_loss = true)"
        );
    }
    let store =
        tokio::task::spawn_blocking(move || open_store(&data_dir, options, simulate_power_loss))
            .await?
            .with_context(|| format!("opening storage in {}", config.data_dir.display()))?;
    let store = Arc::new(store);

    let transport = TransportConfig {
        max_frame: config.limits.max_frame_bytes,
        ..TransportConfig::default()
    };
    let endpoint = mimeo_wire::server_endpoint(config.listen, &identity, &transport)
        .with_context(|| format!("listening on {}", config.listen))?;
    let local = endpoint.local_addr()?;

    let clock = Arc::new(Clock::default());
    let service = Arc::new(Standalone::new(
        Arc::clone(&store),
        config.clone(),
        Arc::clone(&clock),
    ));
    let shared = Arc::new(Shared {
        config: config.clone(),
        transport,
        service,
        clock,
        shutdown: Notify::new(),
    });

    let last = store.last_position();
    tracing::info!(node = %config.node_id, %local, mode = %config.mode, fsync = %config.storage.fsync, simulate_power_loss, last_index = last.index, "serving");
    println!(
        "mimeo node {} serving {} on {} (fsync = {}, {} log entries)",
        config.node_id, config.mode, local, config.storage.fsync, last.index
    );

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
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
        }
    }

    endpoint.close(0u32.into(), b"node shutting down");
    let syncing = Arc::clone(&store);
    tokio::task::spawn_blocking(move || syncing.sync())
        .await?
        .context("flushing storage at shutdown")?;
    if tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!("connections did not close within 2 s; exiting anyway");
    }
    tracing::info!(node = %config.node_id, "stopped");
    Ok(())
}

/// Opens the store on the real disk or, with `simulate_power_loss`, on a
/// [`PowerLossBackend`] that keeps unsynced bytes in process memory.
fn open_store(
    data_dir: &Path,
    options: Options,
    simulate_power_loss: bool,
) -> anyhow::Result<Store> {
    if !simulate_power_loss {
        return Ok(Store::open(data_dir, options)?);
    }
    let backend = PowerLossBackend::new(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    Ok(Store::open_with_backend(Arc::new(backend), options)?)
}

async fn handle_connection(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "connection failed during the TLS handshake");
            return;
        }
    };
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
    let max_frame = shared.transport.max_frame;
    let result = match protocol {
        Protocol::Client => {
            let service = Arc::clone(&shared.service);
            mimeo_wire::serve_rpc(conn, max_frame, move |request: ClientRequest| {
                Arc::clone(&service).handle(request)
            })
            .await
        }
        Protocol::Admin => {
            let shared = Arc::clone(&shared);
            mimeo_wire::serve_rpc(conn, max_frame, move |request: AdminRequest| {
                let shared = Arc::clone(&shared);
                async move { admin(&shared, request) }
            })
            .await
        }
        Protocol::Peer => {
            conn.close(1u32.into(), b"standalone nodes take no peer connections");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended");
    }
}

fn admin(shared: &Shared, request: AdminRequest) -> AdminResponse {
    match request {
        AdminRequest::Status => AdminResponse::Status(shared.service.status()),
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
