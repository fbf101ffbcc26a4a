use std::net::SocketAddr;
use std::time::Duration;

use mimeo_wire::{AdminRequest, AdminResponse, NodeStatus, Protocol, TlsIdentity, TransportConfig};

use crate::connector::Connector;
use crate::Error;

/// A client for the admin protocol of one node: status and fault injection.
///
/// The node accepts the admin protocol only from a certificate whose role is
/// `admin` (`mimeo certs init` writes `admin-<name>.pem`).
pub struct AdminClient {
    connector: Connector,
    node: SocketAddr,
}

impl AdminClient {
    /// Connects to `node` with an admin identity.
    pub async fn connect(
        node: SocketAddr,
        cluster_id: impl Into<String>,
        identity: &TlsIdentity,
        timeout: Duration,
    ) -> Result<AdminClient, Error> {
        let transport = TransportConfig::default();
        let endpoint = mimeo_wire::client_endpoint(identity, &transport)
            .map_err(|e| Error::setup("creating the admin client's QUIC endpoint", e))?;
        let connector = Connector::new(
            endpoint,
            cluster_id.into(),
            Protocol::Admin,
            transport,
            timeout,
            timeout,
        );
        connector.connection(node).await?;
        Ok(AdminClient { connector, node })
    }

    /// The node's status.
    pub async fn status(&self) -> Result<NodeStatus, Error> {
        match self.call(AdminRequest::Status).await? {
            AdminResponse::Status(status) => Ok(status),
            other => Err(self.unexpected("status", &other)),
        }
    }

    /// Shifts the node's clock by `offset_ms` milliseconds from the system
    /// clock (clock-skew fault injection). 0 restores the true time.
    pub async fn set_clock_offset(&self, offset_ms: i64) -> Result<(), Error> {
        self.expect_ok(
            AdminRequest::SetClockOffset { offset_ms },
            "set-clock-offset",
        )
        .await
    }

    /// Asks the node to shut down cleanly (flush storage, close connections).
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.expect_ok(AdminRequest::Shutdown, "shutdown").await
    }

    async fn expect_ok(&self, request: AdminRequest, op: &str) -> Result<(), Error> {
        match self.call(request).await? {
            AdminResponse::Ok => Ok(()),
            other => Err(self.unexpected(op, &other)),
        }
    }

    async fn call(&self, request: AdminRequest) -> Result<AdminResponse, Error> {
        match self.connector.exchange(self.node, &request).await? {
            AdminResponse::Error { kind, message } => Err(Error::Node {
                node: self.node,
                kind,
                message,
            }),
            other => Ok(other),
        }
    }

    fn unexpected(&self, op: &str, response: &AdminResponse) -> Error {
        Error::Protocol {
            node: self.node,
            message: format!("{op} got {response:?}"),
        }
    }
}
