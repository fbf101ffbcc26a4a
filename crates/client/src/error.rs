use std::net::SocketAddr;
use std::time::Duration;

use mimeo_wire::ErrorKind;

/// Why a client operation did not return a result.
///
/// The variants split into two groups, which [`Error::is_definite`] tells
/// apart: the operation certainly did not take effect, or its outcome is
/// unknown and it may take effect at any later time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node answered with an error. Whether it took effect depends on
    /// the kind ([`ErrorKind::is_definite`]).
    #[error("node {node} answered {kind:?}: {message}")]
    Node {
        /// The node that answered.
        node: SocketAddr,
        /// What kind of failure the node reported.
        kind: ErrorKind,
        /// The node's explanation.
        message: String,
    },
    /// No node could be reached, so the request was never sent.
    #[error("no node reachable: {message}")]
    Unavailable {
        /// What was tried and why each attempt failed.
        message: String,
    },
    /// No answer came in time; the operation may still take effect.
    #[error("no answer from {node} within {after:?}; the outcome is unknown")]
    Timeout {
        /// The node the request was sent to.
        node: SocketAddr,
        /// The timeout that expired.
        after: Duration,
    },
    /// The connection broke after the request may have been sent.
    #[error(
        "connection to {node} lost after sending the request; the outcome is unknown: {message}"
    )]
    ConnectionLost {
        /// The node the request was sent to.
        node: SocketAddr,
        /// What the transport reported.
        message: String,
    },
    /// The node answered with something that is not a valid answer to the
    /// request; the outcome is unknown.
    #[error("unexpected answer from {node}: {message}")]
    Protocol {
        /// The node that answered.
        node: SocketAddr,
        /// What was wrong with the answer.
        message: String,
    },
    /// The client was given no node address to connect to.
    #[error("client setup failed: no node addresses given")]
    NoNodes,
    /// The client could not be set up: `what` failed (loading
    /// certificates, creating the QUIC endpoint...), for the reason in
    /// `source`.
    #[error("client setup failed: {what}: {source}")]
    Setup {
        /// What was being set up.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// A [`Error::Setup`]: `what` failed because of `source`.
    pub fn setup(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Error {
        Error::Setup {
            what: what.into(),
            source: source.into(),
        }
    }

    /// True when the operation certainly did not take effect, so retrying it
    /// cannot apply it twice.
    pub fn is_definite(&self) -> bool {
        match self {
            Error::Node { kind, .. } => kind.is_definite(),
            Error::Unavailable { .. } | Error::NoNodes | Error::Setup { .. } => true,
            Error::Timeout { .. } | Error::ConnectionLost { .. } | Error::Protocol { .. } => false,
        }
    }

    /// True when the operation may or may not have taken effect (the
    /// opposite of [`Error::is_definite`]).
    pub fn is_unknown(&self) -> bool {
        !self.is_definite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setup_error_names_the_step_and_keeps_its_cause() {
        let dir = std::env::temp_dir().join("mimeo-client-no-such-certs");
        let cause = mimeo_wire::TlsIdentity::from_dir(&dir, "client-app").unwrap_err();
        let error = Error::setup("loading certificate client-app", cause);
        assert!(error.is_definite());
        let text = error.to_string();
        assert!(text.contains("loading certificate client-app"), "{text}");
        let source = std::error::Error::source(&error).expect("the cause is kept");
        assert!(source.is::<mimeo_wire::CertError>(), "{source:?}");
    }

    #[test]
    fn no_nodes_is_its_own_error() {
        assert!(Error::NoNodes.is_definite());
        assert!(Error::NoNodes.to_string().contains("no node addresses"));
    }
}
