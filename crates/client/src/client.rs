use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use mimeo_wire::{
    ClientRequest, ClientResponse, NodeStatus, Position, Protocol, ReadConsistency, TlsIdentity,
    TransportConfig,
};

use crate::connector::Connector;
use crate::Error;

/// How to reach a cluster.
#[derive(Debug)]
pub struct ClientConfig {
    /// Nodes to try, in order; the first reachable one is used until a
    /// redirect points elsewhere.
    pub nodes: Vec<SocketAddr>,
    /// The cluster id every node must carry (checked in the hello).
    pub cluster_id: String,
    /// The CA to trust and this client's certificate and key.
    pub identity: TlsIdentity,
    /// How long one request may take before its outcome is reported unknown.
    pub request_timeout: Duration,
    /// How long to wait for a connection before a node counts as unreachable.
    pub connect_timeout: Duration,
    /// How many leader redirects one operation follows before giving up.
    pub max_redirects: usize,
    /// Frame size limit and QUIC timers.
    pub transport: TransportConfig,
}

impl ClientConfig {
    /// A configuration with default timeouts (5 s requests, 2 s connects,
    /// 3 redirects).
    pub fn new(
        nodes: Vec<SocketAddr>,
        cluster_id: impl Into<String>,
        identity: TlsIdentity,
    ) -> Self {
        ClientConfig {
            nodes,
            cluster_id: cluster_id.into(),
            identity,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_redirects: 3,
            transport: TransportConfig::default(),
        }
    }
}

/// The outcome of a compare-and-set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value matched and the new value was written.
    Swapped {
        /// Where the write landed in the log.
        position: Position,
    },
    /// The value did not match; nothing was written.
    Mismatch {
        /// The value the node held (`None`: the key was absent).
        current: Option<Vec<u8>>,
    },
}

/// A value read together with the log position it reflects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// The value, or `None` when the key is absent.
    pub value: Option<Vec<u8>>,
    /// The position of the version read; pass it as
    /// [`ReadConsistency::Session`] to read at least this fresh later.
    pub position: Position,
    /// The node that answered.
    pub node: SocketAddr,
}

/// An async client for the client protocol. Cheap to share behind `Arc`;
/// concurrent calls run on separate QUIC streams of one connection.
pub struct Client {
    connector: Connector,
    nodes: Vec<SocketAddr>,
    max_redirects: usize,
    /// The node requests go to first: the last one that answered, or the
    /// leader a redirect named.
    preferred: Mutex<SocketAddr>,
}

impl Client {
    /// Creates the QUIC endpoint and connects to the first reachable node.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        let client = Client::new(config)?;
        let mut failures = Vec::new();
        for &node in &client.nodes {
            match client.connector.connection(node).await {
                Ok(_) => {
                    client.prefer(node);
                    return Ok(client);
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(Error::Unavailable {
            message: failures.join("; "),
        })
    }

    /// Creates the client without connecting; the first request connects.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let first = *config
            .nodes
            .first()
            .ok_or_else(|| Error::Setup("no node addresses given".into()))?;
        let endpoint = mimeo_wire::client_endpoint(&config.identity, &config.transport)
            .map_err(|e| Error::Setup(e.to_string()))?;
        Ok(Client {
            connector: Connector::new(
                endpoint,
                config.cluster_id,
                Protocol::Client,
                config.transport,
                config.connect_timeout,
                config.request_timeout,
            ),
            nodes: config.nodes,
            max_redirects: config.max_redirects,
            preferred: Mutex::new(first),
        })
    }

    /// Reads a key with the node's default consistency.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.get_with(key, ReadConsistency::Default).await?.value)
    }

    /// Reads a key with an explicit consistency level.
    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        consistency: ReadConsistency,
    ) -> Result<ReadResult, Error> {
        let request = ClientRequest::Get {
            key: key.as_ref().to_vec(),
            consistency,
        };
        match self.request(&request).await? {
            (node, ClientResponse::Value { value, position }) => Ok(ReadResult {
                value,
                position,
                node,
            }),
            (node, other) => Err(unexpected(node, "get", &other)),
        }
    }

    /// Writes a value; returns where it landed in the log.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Position, Error> {
        let request = ClientRequest::Put {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        };
        self.write(&request, "put").await
    }

    /// Deletes a key (deleting an absent key succeeds).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<Position, Error> {
        let request = ClientRequest::Delete {
            key: key.as_ref().to_vec(),
        };
        self.write(&request, "delete").await
    }

    /// Writes `new` only if the current value equals `expected` (`None`: the
    /// key must be absent).
    pub async fn cas(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<impl AsRef<[u8]>>,
        new: impl AsRef<[u8]>,
    ) -> Result<CasOutcome, Error> {
        let request = ClientRequest::Cas {
            key: key.as_ref().to_vec(),
            expected: expected.map(|e| e.as_ref().to_vec()),
            new: new.as_ref().to_vec(),
        };
        match self.request(&request).await? {
            (_, ClientResponse::Written { position }) => Ok(CasOutcome::Swapped { position }),
            (_, ClientResponse::CasMismatch { current }) => Ok(CasOutcome::Mismatch { current }),
            (node, other) => Err(unexpected(node, "cas", &other)),
        }
    }

    /// The status of the node requests currently go to.
    pub async fn status(&self) -> Result<NodeStatus, Error> {
        let node = self.preferred_node();
        self.status_of(node).await
    }

    /// The status of one particular node (no redirects).
    pub async fn status_of(&self, node: SocketAddr) -> Result<NodeStatus, Error> {
        match self
            .connector
            .exchange(node, &ClientRequest::Status)
            .await?
        {
            ClientResponse::Status(status) => Ok(status),
            ClientResponse::Error { kind, message } => Err(Error::Node {
                node,
                kind,
                message,
            }),
            other => Err(unexpected(node, "status", &other)),
        }
    }

    /// The node requests go to first.
    pub fn preferred_node(&self) -> SocketAddr {
        *self
            .preferred
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn prefer(&self, node: SocketAddr) {
        *self
            .preferred
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = node;
    }

    async fn write(&self, request: &ClientRequest, op: &str) -> Result<Position, Error> {
        match self.request(request).await? {
            (_, ClientResponse::Written { position }) => Ok(position),
            (node, other) => Err(unexpected(node, op, &other)),
        }
    }

    /// Sends a request, following redirects and trying other nodes while no
    /// connection can be made. Node errors become [`Error::Node`].
    async fn request(
        &self,
        request: &ClientRequest,
    ) -> Result<(SocketAddr, ClientResponse), Error> {
        let mut node = self.preferred_node();
        let mut redirects = 0;
        loop {
            let response = match self.exchange_with_fallback(node, request).await {
                Ok((answered, response)) => {
                    node = answered;
                    response
                }
                Err(e) => return Err(e),
            };
            match response {
                ClientResponse::Redirect { leader } => {
                    let hint = leader.as_deref().and_then(|l| l.parse::<SocketAddr>().ok());
                    match hint {
                        Some(leader) if redirects < self.max_redirects => {
                            tracing::debug!(from = %node, to = %leader, "following leader hint");
                            redirects += 1;
                            node = leader;
                            self.prefer(leader);
                        }
                        Some(_) => {
                            return Err(Error::Unavailable {
                                message: format!("gave up after {redirects} leader redirects"),
                            })
                        }
                        None => {
                            return Err(Error::Unavailable {
                                message: format!(
                                "{node} is not the leader and knows no leader (hint: {leader:?})"
                            ),
                            })
                        }
                    }
                }
                ClientResponse::Error { kind, message } => {
                    return Err(Error::Node {
                        node,
                        kind,
                        message,
                    })
                }
                other => return Ok((node, other)),
            }
        }
    }

    /// Tries `first`, then every other configured node, as long as the
    /// failure is that no connection could be made (nothing was sent).
    async fn exchange_with_fallback(
        &self,
        first: SocketAddr,
        request: &ClientRequest,
    ) -> Result<(SocketAddr, ClientResponse), Error> {
        let candidates =
            std::iter::once(first).chain(self.nodes.iter().copied().filter(|&n| n != first));
        let mut failures = Vec::new();
        for node in candidates {
            match self.connector.exchange(node, request).await {
                Ok(response) => {
                    if node != first {
                        self.prefer(node);
                    }
                    return Ok((node, response));
                }
                Err(Error::Unavailable { message }) => failures.push(message),
                Err(other) => return Err(other),
            }
        }
        Err(Error::Unavailable {
            message: failures.join("; "),
        })
    }
}

fn unexpected(node: SocketAddr, op: &str, response: &ClientResponse) -> Error {
    Error::Protocol {
        node,
        message: format!("{op} got {response:?}"),
    }
}
