//! QUIC endpoints with mutual TLS, the hello exchange, and request/response
//! serving: one bidirectional stream per request, one frame each way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::certs::{CertError, Role, TlsIdentity, NODE_SERVER_NAME};
use crate::frame::{
    encode_frame, read_frame, read_frame_len, read_frame_payload, write_frame, FrameError,
    DEFAULT_MAX_FRAME, FRAME_HEADER_LEN,
};
use crate::message::{ErrorKind, ErrorReply, Hello, HelloReply, Protocol, RefusalReason};
use crate::PROTOCOL_VERSION;

/// The ALPN protocol id Mimeo endpoints negotiate.
const ALPN: &[u8] = b"mimeo/1";

/// Application error codes used when closing connections and streams.
pub mod codes {
    /// Normal close.
    pub const OK: u32 = 0;
    /// The hello was refused; the reply says why.
    pub const REFUSED: u32 = 1;
    /// A frame was malformed.
    pub const MALFORMED: u32 = 2;
    /// A frame exceeded the maximum size.
    pub const TOO_LARGE: u32 = 3;
}

/// Frame size limit, QUIC timers and the limits a server puts on each
/// connection.
///
/// What one accepted connection can make a server hold is bounded: QUIC
/// flow control lets the client have at most [`receive_window`] bytes
/// buffered and unread, and the request frames being read or answered
/// hold at most [`request_bytes`] (a frame's announced length is reserved
/// before its payload is read, and its buffer grows as bytes arrive). A
/// connection may open one stream, for its hello, until the hello is
/// accepted; then [`max_concurrent_streams`] request streams (client and
/// admin protocols, no unidirectional streams) or a few unidirectional ones
/// (the peer protocol, no bidirectional ones). The hello must arrive within
/// [`hello_timeout`], each request frame within [`frame_timeout`] of its
/// stream opening.
///
/// [`receive_window`]: TransportConfig::receive_window
/// [`request_bytes`]: TransportConfig::request_bytes
/// [`max_concurrent_streams`]: TransportConfig::max_concurrent_streams
/// [`hello_timeout`]: TransportConfig::hello_timeout
/// [`frame_timeout`]: TransportConfig::frame_timeout
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// The largest frame payload accepted or sent, in bytes.
    pub max_frame: usize,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive interval; keeps idle connections open and detects dead
    /// peers. Must be well below `idle_timeout`.
    pub keep_alive: Duration,
    /// How many requests one connection may have in flight.
    pub max_concurrent_streams: u32,
    /// How long a new connection may take to send its hello.
    pub hello_timeout: Duration,
    /// How long a request frame may take to arrive whole, from its stream
    /// opening (waiting for [`TransportConfig::request_bytes`] included).
    pub frame_timeout: Duration,
    /// Bytes of request frames one connection may have a server read and
    /// answer at once (never less than one largest frame).
    pub request_bytes: usize,
    /// Bytes a client may send a server beyond what it has read, per
    /// connection (QUIC flow control; never less than one largest frame).
    pub receive_window: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame: DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            max_concurrent_streams: 256,
            hello_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(10),
            request_bytes: 2 * DEFAULT_MAX_FRAME,
            receive_window: DEFAULT_MAX_FRAME + FRAME_HEADER_LEN,
        }
    }
}

/// Unidirectional streams a peer connection may have open (the peer bus
/// uses one, and reopens it after a failure).
const PEER_STREAMS: u32 = crate::peer::MAX_STREAMS_PER_CONNECTION as u32;

impl TransportConfig {
    /// The request budget actually used: room for one largest frame at least.
    fn request_budget(&self) -> usize {
        self.request_bytes.max(self.max_frame + FRAME_HEADER_LEN)
    }

    /// Timers and windows of either side; the stream limits of a client
    /// endpoint (nodes never open streams towards the side that dialled).
    fn quinn(&self) -> Result<quinn::TransportConfig, WireError> {
        let mut transport = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| WireError::config("idle timeout", e))?;
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive))
            .max_concurrent_bidi_streams(0u32.into())
            .max_concurrent_uni_streams(0u32.into());
        Ok(transport)
    }

    /// A server's: one stream (the hello) until the hello is accepted, and
    /// bounded windows.
    fn quinn_server(&self) -> Result<quinn::TransportConfig, WireError> {
        let mut transport = self.quinn()?;
        let window = |bytes: usize, what: &'static str| {
            quinn::VarInt::try_from(bytes as u64).map_err(|e| WireError::config(what, e))
        };
        let stream_window = self.max_frame + FRAME_HEADER_LEN;
        transport
            .max_concurrent_bidi_streams(1u32.into())
            .stream_receive_window(window(stream_window, "stream receive window")?)
            .receive_window(window(
                self.receive_window.max(stream_window),
                "receive window",
            )?);
        Ok(transport)
    }
}

/// Errors of the transport layer.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// TLS or QUIC configuration is unusable.
    #[error("transport configuration: {what}: {source}")]
    Config {
        /// The setting that could not be used.
        what: &'static str,
        /// What rustls or quinn reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The connection could not be established (unreachable, TLS failure).
    #[error("connecting to {addr}: {message}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        message: String,
    },
    /// The other side refused the hello.
    #[error("refused ({reason:?}): {message}")]
    Refused {
        /// Why, for programs.
        reason: RefusalReason,
        /// Why, for people.
        message: String,
    },
    /// A frame could not be exchanged.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The connection failed while doing `what`.
    #[error("connection: {what}: {source}")]
    Connection {
        /// What the connection was doing (accepting a stream...).
        what: &'static str,
        /// What quinn reported.
        #[source]
        source: quinn::ConnectionError,
    },
    /// A stream was already closed when it was finished.
    #[error("connection: finishing a request stream: {0}")]
    StreamClosed(#[from] quinn::ClosedStream),
    /// The other side presented no certificate (it cannot, under mutual
    /// TLS: a bug or a misconfigured endpoint).
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The other side's certificate grants no role.
    #[error("the peer's certificate: {0}")]
    PeerCertificate(#[source] CertError),
    /// The other side sent no hello in time.
    #[error("no hello within {after:?}")]
    HelloTimeout {
        /// The configured hello timeout.
        after: Duration,
    },
}

impl WireError {
    /// A [`WireError::Config`]: `what` could not be used because of
    /// `source`.
    fn config(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> WireError {
        WireError::Config {
            what,
            source: source.into(),
        }
    }

    /// A [`WireError::Connection`] for `what`.
    fn connection(what: &'static str) -> impl FnOnce(quinn::ConnectionError) -> WireError {
        move |source| WireError::Connection { what, source }
    }
}

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(identity: &TlsIdentity) -> Result<Arc<RootCertStore>, WireError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(identity.ca().clone())
        .map_err(|e| WireError::config("CA certificate", e))?;
    Ok(Arc::new(roots))
}

/// A server endpoint on `bind` that accepts only clients presenting a
/// certificate signed by the identity's CA.
pub fn server_endpoint(
    bind: SocketAddr,
    identity: &TlsIdentity,
    transport: &TransportConfig,
) -> Result<quinn::Endpoint, WireError> {
    let provider = crypto_provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider.clone())
        .build()
        .map_err(|e| WireError::config("client verifier", e))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| WireError::config("TLS 1.3 with the ring provider", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain(), identity.key())
        .map_err(|e| WireError::config("node certificate", e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|e| WireError::config("QUIC server TLS", e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport.quinn_server()?));
    quinn::Endpoint::server(config, bind).map_err(|source| WireError::Bind { addr: bind, source })
}

/// A client endpoint presenting `identity` and trusting only its CA.
pub fn client_endpoint(
    identity: &TlsIdentity,
    transport: &TransportConfig,
) -> Result<quinn::Endpoint, WireError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| WireError::config("TLS 1.3 with the ring provider", e))?
        .with_root_certificates(roots(identity)?)
        .with_client_auth_cert(identity.chain(), identity.key())
        .map_err(|e| WireError::config("client certificate", e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|e| WireError::config("QUIC client TLS", e))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport.quinn()?));
    let bind = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut endpoint =
        quinn::Endpoint::client(bind).map_err(|source| WireError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// The role granted by the certificate the other side of `conn` presented.
pub fn peer_role(conn: &quinn::Connection) -> Result<Role, WireError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or(WireError::NoPeerCertificate)?;
    let leaf = certs.first().ok_or(WireError::NoPeerCertificate)?;
    Role::from_certificate(leaf).map_err(WireError::PeerCertificate)
}

/// Connects to a node and exchanges the hello. Returns the connection and
/// the id of the node that accepted it.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    cluster_id: &str,
    protocol: Protocol,
    transport: &TransportConfig,
) -> Result<(quinn::Connection, String), WireError> {
    let connect_error = |message: String| WireError::Connect { addr, message };
    let conn = endpoint
        .connect(addr, NODE_SERVER_NAME)
        .map_err(|e| connect_error(e.to_string()))?
        .await
        .map_err(|e| connect_error(e.to_string()))?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        cluster_id: cluster_id.to_string(),
        protocol,
    };
    // A TLS-level refusal of our certificate surfaces here, as the
    // connection closing during the first exchange.
    let reply: HelloReply =
        call(&conn, &hello, transport.max_frame)
            .await
            .map_err(|e| match conn.close_reason() {
                Some(reason) => connect_error(reason.to_string()),
                None => connect_error(format!("hello failed: {e}")),
            })?;
    match reply {
        HelloReply::Accepted { node_id } => Ok((conn, node_id)),
        HelloReply::Refused { reason, message } => Err(WireError::Refused { reason, message }),
    }
}

/// Waits for the hello on a freshly accepted connection and checks it:
/// protocol version, cluster id, and that the peer's certificate allows the
/// protocol asked for. Answers either way; on refusal the connection is
/// closed and the error says why. A hello that has not arrived whole
/// within [`TransportConfig::hello_timeout`] closes the connection.
///
/// On acceptance the connection gets the streams its protocol uses: up to
/// [`TransportConfig::max_concurrent_streams`] bidirectional request
/// streams for the client and admin protocols, a few unidirectional ones
/// for the peer protocol, and none of the other kind.
pub async fn accept_hello(
    conn: &quinn::Connection,
    cluster_id: &str,
    node_id: &str,
    transport: &TransportConfig,
) -> Result<(Protocol, Role), WireError> {
    let role = peer_role(conn)?;
    let hello = async {
        let (send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(WireError::connection("waiting for the hello stream"))?;
        let hello = read_frame::<Hello>(&mut recv, transport.max_frame).await;
        Ok::<_, WireError>((send, hello))
    };
    let (mut send, hello) = match tokio::time::timeout(transport.hello_timeout, hello).await {
        Ok(result) => result?,
        Err(_) => {
            conn.close(codes::REFUSED.into(), b"no hello in time");
            return Err(WireError::HelloTimeout {
                after: transport.hello_timeout,
            });
        }
    };
    let (verdict, reply) = match hello {
        Ok(hello) => check_hello(&hello, &role, cluster_id, node_id),
        Err(e @ (FrameError::Malformed(_) | FrameError::TooLarge { .. })) => {
            refuse(RefusalReason::Malformed, format!("unreadable hello: {e}"))
        }
        Err(e) => return Err(e.into()),
    };
    if let Ok(protocol) = &verdict {
        match protocol {
            Protocol::Client | Protocol::Admin => {
                conn.set_max_concurrent_bi_streams(transport.max_concurrent_streams.into());
            }
            Protocol::Peer => {
                conn.set_max_concurrent_bi_streams(0u32.into());
                conn.set_max_concurrent_uni_streams(PEER_STREAMS.into());
            }
        }
    }
    write_frame(&mut send, &reply, transport.max_frame).await?;
    let _ = send.finish();
    match verdict {
        Ok(protocol) => Ok((protocol, role)),
        Err(e) => {
            // Let the reply reach the client before the close does.
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            conn.close(codes::REFUSED.into(), b"hello refused");
            Err(e)
        }
    }
}

type Verdict = (Result<Protocol, WireError>, HelloReply);

fn refuse(reason: RefusalReason, message: String) -> Verdict {
    let reply = HelloReply::Refused {
        reason,
        message: message.clone(),
    };
    (Err(WireError::Refused { reason, message }), reply)
}

fn check_hello(hello: &Hello, role: &Role, cluster_id: &str, node_id: &str) -> Verdict {
    if hello.version != PROTOCOL_VERSION {
        return refuse(
            RefusalReason::VersionMismatch,
            format!(
                "protocol version {} is not supported by node {node_id}, which speaks version {PROTOCOL_VERSION}",
                hello.version
            ),
        );
    }
    if hello.cluster_id != cluster_id {
        return refuse(
            RefusalReason::ClusterMismatch,
            format!(
                "node {node_id} belongs to cluster '{cluster_id}', not '{}'",
                hello.cluster_id
            ),
        );
    }
    if !role.may_use(hello.protocol) {
        return refuse(
            RefusalReason::Forbidden,
            format!(
                "certificate {role} may not use the {:?} protocol",
                hello.protocol
            ),
        );
    }
    let reply = HelloReply::Accepted {
        node_id: node_id.to_string(),
    };
    (Ok(hello.protocol), reply)
}

/// One request/response exchange on a new stream of `conn`.
pub async fn call<Req, Resp>(
    conn: &quinn::Connection,
    request: &Req,
    max_frame: usize,
) -> Result<Resp, WireError>
where
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(WireError::connection("opening a request stream"))?;
    write_frame(&mut send, request, max_frame).await?;
    send.finish()?;
    Ok(read_frame(&mut recv, max_frame).await?)
}

/// Serves requests on `conn` until it closes: each incoming stream carries
/// one request frame, answered with one response frame by `handler`.
/// Requests run concurrently, holding at most
/// [`TransportConfig::request_bytes`] of request frames at once: a frame's
/// announced length is reserved before its payload is read, and released
/// when its response has been sent; a frame that has not arrived within
/// [`TransportConfig::frame_timeout`] is dropped and its stream stopped.
///
/// A stream whose frame is malformed or too large is answered with an error
/// response and closed; the connection and every other stream keep going.
pub async fn serve_rpc<Req, Resp, H, F>(
    conn: quinn::Connection,
    transport: &TransportConfig,
    handler: H,
) -> Result<(), WireError>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + ErrorReply + Send + 'static,
    H: Fn(Req) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Resp> + Send + 'static,
{
    let handler = Arc::new(handler);
    let remote = conn.remote_address();
    let max_frame = transport.max_frame;
    let frame_timeout = transport.frame_timeout;
    let budget = transport.request_budget();
    let request_bytes = Arc::new(Semaphore::new(budget));
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(
                quinn::ConnectionError::ApplicationClosed(_)
                | quinn::ConnectionError::LocallyClosed,
            ) => return Ok(()),
            Err(e) => return Err(WireError::connection("accepting a request stream")(e)),
        };
        let handler = Arc::clone(&handler);
        let request_bytes = Arc::clone(&request_bytes);
        tokio::spawn(async move {
            // Held until the response is sent.
            let mut reserved = None;
            let read = async {
                let len = read_frame_len(&mut recv, max_frame).await?;
                let bytes = u32::try_from(len + FRAME_HEADER_LEN).unwrap_or(u32::MAX);
                reserved = Some(
                    Arc::clone(&request_bytes)
                        .acquire_many_owned(bytes)
                        .await
                        .map_err(|e| FrameError::Transport(e.to_string()))?,
                );
                read_frame_payload::<Req>(&mut recv, len).await
            };
            let read = match tokio::time::timeout(frame_timeout, read).await {
                Ok(read) => read,
                Err(_) => {
                    tracing::debug!(%remote, "a request frame did not arrive in time; stopping its stream");
                    let _ = recv.stop(codes::REFUSED.into());
                    return;
                }
            };
            let response = match read {
                Ok(request) => handler(request).await,
                Err(e) => {
                    let (kind, code) = match e {
                        FrameError::TooLarge { .. } => (ErrorKind::TooLarge, codes::TOO_LARGE),
                        FrameError::Malformed(_) => (ErrorKind::BadRequest, codes::MALFORMED),
                        // The stream itself broke: nobody to answer.
                        FrameError::Truncated { .. } | FrameError::Transport(_) => {
                            tracing::debug!(%remote, error = %e, "request stream ended early");
                            return;
                        }
                    };
                    tracing::warn!(%remote, error = %e, "refusing a bad request frame");
                    // Stop the peer sending the rest of an oversized frame.
                    let _ = recv.stop(code.into());
                    Resp::error_reply(kind, format!("request refused: {e}"))
                }
            };
            let frame = encode_frame(&response, max_frame).or_else(|e| {
                tracing::warn!(%remote, error = %e, "response too large to send");
                let refusal =
                    Resp::error_reply(ErrorKind::TooLarge, format!("response refused: {e}"));
                encode_frame(&refusal, max_frame)
            });
            let sent = match frame {
                Ok(frame) => send.write_all(&frame).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(()) => {
                    let _ = send.finish();
                }
                Err(e) => tracing::debug!(%remote, error = %e, "could not send a response"),
            }
        });
    }
}
