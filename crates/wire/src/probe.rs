//! Port probes: has the process behind a node's address gone?
//!
//! QUIC runs over UDP, so a node whose process dies sends nothing: its
//! peers and clients only notice when a timeout passes. Its host, though,
//! still answers a datagram sent to the now unbound port with an ICMP
//! "port unreachable", which a *connected* UDP socket reports as
//! `ECONNREFUSED` on its next call. [`probe`] sends one empty datagram and
//! listens for that refusal.
//!
//! Only a refusal is evidence: it means no process holds the port. Silence
//! proves nothing (the process may be alive, paused, partitioned away, or
//! its host down or filtering ICMP), so callers fall back on their
//! timeouts. A live QUIC endpoint drops an empty datagram unread.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

/// What a [`probe`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The host refused the datagram: nothing listens at the address.
    Refused,
    /// No refusal within the wait: something may listen there (or the
    /// host did not answer).
    NoRefusal,
}

/// Sends one empty UDP datagram to `addr` from a fresh socket connected to
/// it, and waits up to `wait` for the host to refuse it. The refusal
/// takes one network round trip (microseconds on loopback).
///
/// # Errors
///
/// The socket could not be opened or the datagram not sent, for another
/// reason than a refusal.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::time::Duration;
/// use mimeo_wire::{probe, Probe};
///
/// // A port nothing listens on: bind one, note it, let it go.
/// let addr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
/// assert_eq!(probe(addr, Duration::from_secs(1)).await?, Probe::Refused);
///
/// // A port something holds is not refused.
/// let live = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
/// let found = probe(live.local_addr()?, Duration::from_millis(20)).await?;
/// assert_eq!(found, Probe::NoRefusal);
/// # Ok(())
/// # }
/// ```
pub async fn probe(addr: SocketAddr, wait: Duration) -> io::Result<Probe> {
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(addr).await?;
    match socket.send(&[]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(Probe::Refused),
        Err(e) => return Err(e),
    }
    let mut buf = [0u8; 1];
    match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
        Err(_elapsed) => Ok(Probe::NoRefusal),
        // Something answered: it is certainly there.
        Ok(Ok(_)) => Ok(Probe::NoRefusal),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Probe::Refused),
        Ok(Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_refused_and_a_bound_one_is_not() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(
            probe(closed, Duration::from_secs(5)).await.unwrap(),
            Probe::Refused
        );

        let live = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = live.local_addr().unwrap();
        assert_eq!(
            probe(addr, Duration::from_millis(50)).await.unwrap(),
            Probe::NoRefusal
        );
        // The live socket got one empty datagram, and nothing else.
        let mut buf = [0u8; 16];
        let (n, _) = live.recv_from(&mut buf).await.unwrap();
        assert_eq!(n, 0);
    }
}
