//! One node's QUIC side in the driver tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use mimeo_wire::{
    accept_hello, client_endpoint, generate_certs, server_endpoint, CertRequest, PeerBus,
    PeerMessage, Protocol, TlsIdentity, TransportConfig,
};
use tokio::sync::mpsc;

/// The cluster id the driver tests use.
const CLUSTER: &str = "test";

/// Writes certificates for `ids` (and their CA) to `dir/certs`, where
/// [`PeerHost::new`] reads them.
///
/// # Panics
///
/// If they cannot be generated or written (a test aid).
pub fn cluster_certs(dir: &Path, ids: &[&str]) {
    let request = CertRequest {
        nodes: ids.iter().map(|s| s.to_string()).collect(),
        ..CertRequest::default()
    };
    generate_certs(&dir.join("certs"), &request, false).expect("certificates for the test nodes");
}

/// A node's QUIC server on 127.0.0.1, kept across driver restarts: its
/// accept loop checks each peer's hello and hands the connection to the
/// bus of the running driver ([`connect`](PeerHost::connect)), or drops it
/// while none runs. Must be made inside a tokio runtime.
pub struct PeerHost {
    id: &'static str,
    identity: TlsIdentity,
    addr: SocketAddr,
    /// The bus of the running driver, for the accept loop.
    bus: Arc<Mutex<Option<Arc<PeerBus>>>>,
    _server: quinn::Endpoint,
}

impl std::fmt::Debug for PeerHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHost")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl PeerHost {
    /// Node `id`'s server, with its identity from `dir/certs`
    /// ([`cluster_certs`]).
    ///
    /// # Panics
    ///
    /// If the identity cannot be read or the endpoint cannot bind.
    pub fn new(dir: &Path, id: &'static str) -> PeerHost {
        let identity = TlsIdentity::from_dir(&dir.join("certs"), &format!("node-{id}"))
            .expect("the node's certificate");
        let transport = TransportConfig::default();
        let server = server_endpoint(
            "127.0.0.1:0".parse().expect("an address"),
            &identity,
            &transport,
        )
        .expect("a QUIC server on 127.0.0.1");
        let addr = server.local_addr().expect("a bound address");
        let bus: Arc<Mutex<Option<Arc<PeerBus>>>> = Arc::default();
        let accepting = Arc::clone(&bus);
        let endpoint = server.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let Ok(conn) = incoming.await else { continue };
                let transport = TransportConfig::default();
                if let Ok((Protocol::Peer, _)) = accept_hello(&conn, CLUSTER, id, &transport).await
                {
                    let bus = accepting
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    if let Some(bus) = bus {
                        bus.accept(conn);
                    }
                }
            }
        });
        PeerHost {
            id,
            identity,
            addr,
            bus,
            _server: server,
        }
    }

    /// The node's id.
    pub fn id(&self) -> &'static str {
        self.id
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new peer bus to every other node of `peers`, which the accept
    /// loop then hands incoming connections to, and its inbound queue.
    ///
    /// # Panics
    ///
    /// If the client endpoint or the bus cannot be made.
    pub fn connect(
        &self,
        peers: &[(&'static str, SocketAddr)],
    ) -> (Arc<PeerBus>, mpsc::Receiver<PeerMessage>) {
        let transport = TransportConfig::default();
        let endpoint = client_endpoint(&self.identity, &transport).expect("a QUIC client");
        let peers = peers
            .iter()
            .filter(|(id, _)| *id != self.id)
            .map(|(id, addr)| (id.to_string(), *addr))
            .collect();
        let (bus, inbound) =
            PeerBus::new(endpoint, self.id.into(), peers, CLUSTER.into(), transport)
                .expect("a peer bus");
        let bus = Arc::new(bus);
        *self.bus.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&bus));
        (bus, inbound)
    }

    /// Stops handing connections to the bus (the driver is stopping).
    pub fn disconnect(&self) {
        *self.bus.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
