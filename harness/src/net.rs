//! The fault network: a UDP proxy on every directed node-to-node link,
//! controlled at run time, so that a run can partition, drop, delay,
//! duplicate and reorder the datagrams nodes exchange without root.
//!
//! # The model
//!
//! For every ordered pair of distinct nodes `(i, j)` there is a proxy
//! `P(i→j)`, a UDP socket on 127.0.0.1. Node `i` is configured to reach
//! peer `j` at `P(i→j)` ([`FaultNet::proxy_addr`]) instead of at `j`'s
//! real address. The proxy forwards what `i` sends to `j`'s real address
//! from a dedicated upstream socket, and forwards what `j` answers on that
//! socket back to `i`:
//!
//! ```text
//!            i ──────────▶ P(i→j) ──upstream──▶ j      datagrams i → j
//!            i ◀────────── P(i→j) ◀─upstream── j      datagrams j → i
//! ```
//!
//! So every datagram of a QUIC connection that `i` opened to `j` crosses
//! `P(i→j)`, in both directions. A connection `j` opened to `i` crosses
//! `P(j→i)` instead. Datagrams from `i` to `j` therefore travel on two
//! proxies: forwards on `P(i→j)` and as replies on `P(j→i)`.
//!
//! A fault is set on a **directed link** `(from, to)`: it applies to the
//! datagrams travelling from `from` to `to`, on every proxy that carries
//! them — the forward direction of `P(from→to)` and the reply direction of
//! `P(to→from)`. [`FaultNet::block`]`("n1", "n2")` therefore silences n1
//! towards n2 whoever opened the connection, while n2 can still reach n1
//! (a one-way partition: n1 hears n2 but cannot answer).
//!
//! Only node-to-node traffic crosses the fault network: clients of the
//! harness talk to nodes directly. A node sees its peers' datagrams come
//! from proxy sockets, never from their real addresses, which is fine
//! because a peer is identified by its certificate, never by its address.
//!
//! Each distinct source address seen by `P(i→j)` gets its own upstream
//! socket (a session, as in a NAT), so that two endpoints of `i` — or one
//! endpoint before and after a restart — each receive their own replies.
//! Sessions idle for [`SESSION_IDLE`] are closed; at most [`MAX_SESSIONS`]
//! are kept per proxy, the least recently active one giving way.
//!
//! # Faults
//!
//! Every datagram goes through the same steps, with the link's faults read
//! afresh for each one, so a control call takes effect on the next
//! datagram:
//!
//! 1. **block** ([`FaultNet::block`], [`FaultNet::partition`]): dropped;
//! 2. **loss** ([`FaultNet::set_loss`]): dropped with probability `p`;
//! 3. **duplicate** ([`FaultNet::set_duplicate`]): with probability `p` a
//!    second copy goes through the next steps too;
//! 4. **delay** ([`FaultNet::set_delay`], or [`FaultNet::set_node_delay`]
//!    for the links of one node): each copy waits `base ± jitter`
//!    (uniform, never below zero) in a timer queue, so with jitter
//!    datagrams overtake each other. The queue holds at most [`QUEUE_CAP`]
//!    datagrams per proxy direction (the forward direction of a proxy, and
//!    the reply direction of each of its sessions: about 6 MB each with
//!    QUIC-sized datagrams); beyond, datagrams are dropped and counted as
//!    `overflowed`. A datagram whose link is blocked by the time it
//!    leaves the queue is dropped: a partition also cuts what is in
//!    flight;
//! 5. **reorder** ([`FaultNet::set_reorder`]): with probability `p` a
//!    datagram is held back and sent right behind the next one on the same
//!    proxy direction, or after [`REORDER_HOLD`] if none comes.
//!
//! [`FaultNet::heal`] removes every fault at once. Datagrams already queued
//! or held still leave at their time.
//!
//! Random decisions come from a seeded generator per proxy direction
//! (and per session for replies), derived from the seed given to
//! [`FaultNet::start_seeded`]: the same datagrams on a link meet the same
//! decisions, run after run.
//!
//! # Nodes that go down
//!
//! A killed process no longer holds its port, so its host refuses what is
//! sent there, and a peer that probes the address learns at once that the
//! process is gone (Mimeo's followers do, to replace a crashed leader
//! without waiting for the election timeout). A proxy would hide that: it
//! is alive, and accepts everything. So the harness calls
//! [`FaultNet::node_down`] when it kills a node, which closes every proxy
//! `P(i→j)` leading to it, and [`FaultNet::node_up`] before it starts the
//! node again, which binds them at the same addresses (new sessions, the
//! same counters; each proxy's random decisions start again from its
//! seed). A paused node keeps its proxies, as it keeps its port.
//!
//! [`FaultNet::stats`] counts, per directed link, the bytes sent on it and
//! what was forwarded, dropped, delayed, duplicated, reordered and
//! overflowed, for the report.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use mimeo_harness::net::FaultNet;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let nodes = vec![
//!     ("n1".to_string(), "127.0.0.1:7001".parse().unwrap()),
//!     ("n2".to_string(), "127.0.0.1:7002".parse().unwrap()),
//! ];
//! let net = FaultNet::start_seeded(&nodes, 7).await?;
//! // n1's config says: peer n2 is at this address.
//! let n1_to_n2 = net.proxy_addr("n1", "n2").unwrap();
//! assert_ne!(n1_to_n2.port(), 7002);
//!
//! net.block("n1", "n2");
//! net.set_delay(Duration::from_millis(50), Duration::from_millis(25));
//! net.heal();
//! # Ok(())
//! # }
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

/// The largest datagram a proxy carries (the largest UDP payload).
pub const MAX_DATAGRAM: usize = 65_535;
/// How many datagrams one proxy direction may hold in its delay queue.
pub const QUEUE_CAP: usize = 4096;
/// How long a datagram held back for reordering waits for the next one.
pub const REORDER_HOLD: Duration = Duration::from_millis(50);
/// How many sessions (distinct source addresses) one proxy keeps.
pub const MAX_SESSIONS: usize = 64;
/// A session with no datagram either way for this long is closed.
pub const SESSION_IDLE: Duration = Duration::from_secs(60);
/// How often a proxy looks for idle sessions.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Fault settings of the whole network. Loss, duplication, reordering and
/// delay apply to every link; blocks to the listed directed links; a
/// per-link delay replaces the network's delay on its link.
#[derive(Debug, Default)]
struct Faults {
    blocked: HashSet<(usize, usize)>,
    loss: f64,
    duplicate: f64,
    reorder: f64,
    delay: Duration,
    jitter: Duration,
    link_delay: HashMap<(usize, usize), Duration>,
}

/// The faults one datagram on one directed link meets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct LinkFaults {
    blocked: bool,
    loss: f64,
    duplicate: f64,
    reorder: f64,
    delay: Duration,
    jitter: Duration,
}

/// The fault settings, shared by the control calls and every proxy task.
#[derive(Debug, Default)]
struct Control {
    faults: Mutex<Faults>,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn link(&self, from: usize, to: usize) -> LinkFaults {
        let faults = self.lock();
        LinkFaults {
            blocked: faults.blocked.contains(&(from, to)),
            loss: faults.loss,
            duplicate: faults.duplicate,
            reorder: faults.reorder,
            delay: faults
                .link_delay
                .get(&(from, to))
                .copied()
                .unwrap_or(faults.delay),
            jitter: faults.jitter,
        }
    }
}

/// What happened to the datagrams of one directed link.
#[derive(Debug, Default)]
struct LinkCounters {
    /// Bytes of the datagrams the sender put on the link, before faults.
    bytes: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    delayed: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    overflowed: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What happened to the datagrams of one directed link since the start,
/// summed over every proxy that carries them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// The sending node.
    pub from: String,
    /// The receiving node.
    pub to: String,
    /// Bytes the sending node put on the link, before any fault: the UDP
    /// payloads (QUIC packets with their TLS records, acknowledgements and
    /// retransmissions included), so what node-to-node traffic really
    /// costs.
    pub bytes: u64,
    /// Datagrams sent on (copies and late ones included).
    pub forwarded: u64,
    /// Datagrams dropped by a block or by loss.
    pub dropped: u64,
    /// Datagrams that waited in a delay queue.
    pub delayed: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Datagrams held back behind a later one.
    pub reordered: u64,
    /// Datagrams dropped because a delay queue was full.
    pub overflowed: u64,
}

/// A datagram waiting in a delay queue, ordered by due time, then arrival.
#[derive(Debug)]
struct Queued<T> {
    due: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Queued<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl<T> Eq for Queued<T> {}

impl<T> PartialOrd for Queued<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Queued<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// The fault logic of one proxy direction, without I/O: datagrams go in
/// with [`Shaper::admit`], timers fire with [`Shaper::on_timeout`], and both
/// push onto `out` what must be sent now, in order. The driver sleeps until
/// [`Shaper::deadline`].
#[derive(Debug)]
struct Shaper<T> {
    rng: StdRng,
    queue: BinaryHeap<Reverse<Queued<T>>>,
    next_seq: u64,
    /// A datagram held back for reordering, and when to give up waiting.
    held: Option<(Instant, T)>,
    cap: usize,
}

impl<T: Clone> Shaper<T> {
    fn new(rng: StdRng, cap: usize) -> Shaper<T> {
        Shaper {
            rng,
            queue: BinaryHeap::new(),
            next_seq: 0,
            held: None,
            cap,
        }
    }

    /// A datagram arrives at `now` on a link with `faults`.
    fn admit(
        &mut self,
        item: T,
        now: Instant,
        faults: &LinkFaults,
        counters: &LinkCounters,
        out: &mut Vec<T>,
    ) {
        if faults.blocked || chance(&mut self.rng, faults.loss) {
            bump(&counters.dropped);
            return;
        }
        if chance(&mut self.rng, faults.duplicate) {
            bump(&counters.duplicated);
            self.pass(item.clone(), now, faults, counters, out);
        }
        self.pass(item, now, faults, counters, out);
    }

    /// The delay step for one copy.
    fn pass(
        &mut self,
        item: T,
        now: Instant,
        faults: &LinkFaults,
        counters: &LinkCounters,
        out: &mut Vec<T>,
    ) {
        let delay = self.draw_delay(faults);
        if delay.is_zero() {
            self.emit(item, now, faults, counters, out);
        } else if self.queue.len() >= self.cap {
            bump(&counters.overflowed);
        } else {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.queue.push(Reverse(Queued {
                due: now + delay,
                seq,
                item,
            }));
            bump(&counters.delayed);
        }
    }

    /// The reorder step, then out.
    fn emit(
        &mut self,
        item: T,
        now: Instant,
        faults: &LinkFaults,
        counters: &LinkCounters,
        out: &mut Vec<T>,
    ) {
        if let Some((_, held)) = self.held.take() {
            out.push(item);
            out.push(held);
            counters.forwarded.fetch_add(2, Ordering::Relaxed);
        } else if chance(&mut self.rng, faults.reorder) {
            self.held = Some((now + REORDER_HOLD, item));
            bump(&counters.reordered);
        } else {
            out.push(item);
            bump(&counters.forwarded);
        }
    }

    /// Base ± jitter, uniformly, never below zero.
    fn draw_delay(&mut self, faults: &LinkFaults) -> Duration {
        if faults.jitter.is_zero() {
            return faults.delay;
        }
        let low = faults.delay.saturating_sub(faults.jitter);
        let high = faults.delay.saturating_add(faults.jitter);
        self.rng.random_range(low..=high)
    }

    /// When [`Shaper::on_timeout`] has work to do next.
    fn deadline(&self) -> Option<Instant> {
        let queued = self.queue.peek().map(|Reverse(q)| q.due);
        let held = self.held.as_ref().map(|(until, _)| *until);
        match (queued, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Releases what is due at `now`: queued datagrams (dropped if the
    /// link is blocked by now) and a held one that waited long enough.
    fn on_timeout(
        &mut self,
        now: Instant,
        faults: &LinkFaults,
        counters: &LinkCounters,
        out: &mut Vec<T>,
    ) {
        while self.queue.peek().is_some_and(|Reverse(q)| q.due <= now) {
            let Some(Reverse(queued)) = self.queue.pop() else {
                break;
            };
            if faults.blocked {
                bump(&counters.dropped);
            } else {
                self.emit(queued.item, now, faults, counters, out);
            }
        }
        if self.held.as_ref().is_some_and(|(until, _)| *until <= now) {
            if let Some((_, held)) = self.held.take() {
                if faults.blocked {
                    bump(&counters.dropped);
                } else {
                    out.push(held);
                    bump(&counters.forwarded);
                }
            }
        }
    }
}

/// True with probability `p` (which the setters keep within 0..=1); draws
/// nothing when `p` is zero, so a healthy link consumes no randomness.
fn chance(rng: &mut StdRng, p: f64) -> bool {
    p > 0.0 && rng.random_bool(p)
}

/// The generator of one proxy direction: `stream` 0 is the forward
/// direction of `P(i→j)`, `k + 1` the replies of its `k`-th session.
fn stream_rng(seed: u64, i: usize, j: usize, stream: u64) -> StdRng {
    let mut bytes = [0u8; 32];
    bytes[0..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    bytes[16..24].copy_from_slice(&(j as u64).to_le_bytes());
    bytes[24..32].copy_from_slice(&stream.to_le_bytes());
    StdRng::from_seed(bytes)
}

/// A datagram to send: from which socket, to whom.
#[derive(Clone, Debug)]
struct Outgoing {
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

async fn send_all(out: &mut Vec<Outgoing>) {
    for datagram in out.drain(..) {
        if let Err(e) = datagram.socket.send_to(&datagram.bytes, datagram.to).await {
            tracing::debug!(to = %datagram.to, error = %e, "fault network: send failed");
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A directed link as the tasks see it.
#[derive(Clone, Debug)]
struct Link {
    from: usize,
    to: usize,
    counters: Arc<LinkCounters>,
}

impl Link {
    fn faults(&self, control: &Control) -> LinkFaults {
        control.link(self.from, self.to)
    }
}

/// Milliseconds since `epoch`, for session activity.
fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One source address seen by a proxy, with its upstream socket.
struct Session {
    upstream: Arc<UdpSocket>,
    last_active: Arc<AtomicU64>,
    replies: AbortHandle,
}

/// Everything the task of proxy `P(i→j)` needs.
struct Proxy {
    front: Arc<UdpSocket>,
    target: SocketAddr,
    /// Datagrams from `i` to `j`.
    forward: Link,
    /// Datagrams from `j` to `i`.
    reply: Link,
    control: Arc<Control>,
    seed: u64,
    epoch: Instant,
}

impl Proxy {
    /// Forwards datagrams until the task is aborted.
    async fn run(self) {
        let mut shaper = Shaper::new(
            stream_rng(self.seed, self.forward.from, self.forward.to, 0),
            QUEUE_CAP,
        );
        let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
        // Owns the reply tasks: dropping it (when this task is aborted)
        // aborts them.
        let mut replies: JoinSet<()> = JoinSet::new();
        let mut opened: u64 = 0;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = Vec::new();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = self.front.recv_from(&mut buf) => {
                    let (len, source) = match received {
                        Ok(received) => received,
                        Err(e) => {
                            tracing::debug!(proxy = %self.target, error = %e, "fault network: receive failed");
                            continue;
                        }
                    };
                    let upstream = match sessions.get(&source) {
                        Some(session) => {
                            session.last_active.store(millis_since(self.epoch), Ordering::Relaxed);
                            Arc::clone(&session.upstream)
                        }
                        None => {
                            opened += 1;
                            match self.open_session(source, opened, &mut sessions, &mut replies).await {
                                Ok(upstream) => upstream,
                                Err(e) => {
                                    tracing::warn!(%source, target = %self.target, error = %e, "fault network: cannot open an upstream socket; datagram dropped");
                                    continue;
                                }
                            }
                        }
                    };
                    self.forward.counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
                    let datagram = Outgoing { socket: upstream, to: self.target, bytes: buf[..len].to_vec() };
                    let faults = self.forward.faults(&self.control);
                    shaper.admit(datagram, Instant::now(), &faults, &self.forward.counters, &mut out);
                }
                () = sleep_until(shaper.deadline()) => {
                    let faults = self.forward.faults(&self.control);
                    shaper.on_timeout(Instant::now(), &faults, &self.forward.counters, &mut out);
                }
                Some(_) = replies.join_next(), if !replies.is_empty() => {}
                _ = sweep.tick() => {
                    let now = millis_since(self.epoch);
                    let idle = u64::try_from(SESSION_IDLE.as_millis()).unwrap_or(u64::MAX);
                    sessions.retain(|_, session| {
                        let keep = now.saturating_sub(session.last_active.load(Ordering::Relaxed)) < idle;
                        if !keep {
                            session.replies.abort();
                        }
                        keep
                    });
                }
            }
            send_all(&mut out).await;
        }
    }

    /// Binds the upstream socket of a new session and starts its reply
    /// task, making room first if the proxy is at [`MAX_SESSIONS`].
    async fn open_session(
        &self,
        source: SocketAddr,
        ordinal: u64,
        sessions: &mut HashMap<SocketAddr, Session>,
        replies: &mut JoinSet<()>,
    ) -> io::Result<Arc<UdpSocket>> {
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_active.load(Ordering::Relaxed))
                .map(|(addr, _)| *addr);
            if let Some(session) = oldest.and_then(|addr| sessions.remove(&addr)) {
                session.replies.abort();
            }
        }
        let unspecified = match self.target.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let upstream = Arc::new(UdpSocket::bind(SocketAddr::new(unspecified, 0)).await?);
        let last_active = Arc::new(AtomicU64::new(millis_since(self.epoch)));
        let task = Replies {
            upstream: Arc::clone(&upstream),
            front: Arc::clone(&self.front),
            client: source,
            target: self.target,
            link: self.reply.clone(),
            control: Arc::clone(&self.control),
            shaper: Shaper::new(
                stream_rng(self.seed, self.forward.from, self.forward.to, ordinal),
                QUEUE_CAP,
            ),
            last_active: Arc::clone(&last_active),
            epoch: self.epoch,
        };
        let abort = replies.spawn(task.run());
        sessions.insert(
            source,
            Session {
                upstream: Arc::clone(&upstream),
                last_active,
                replies: abort,
            },
        );
        Ok(upstream)
    }
}

/// The reply direction of one session of `P(i→j)`: what `j` sends to the
/// upstream socket goes back to the session's client.
struct Replies {
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddr,
    link: Link,
    control: Arc<Control>,
    shaper: Shaper<Outgoing>,
    last_active: Arc<AtomicU64>,
    epoch: Instant,
}

impl Replies {
    async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = Vec::new();
        loop {
            tokio::select! {
                received = self.upstream.recv_from(&mut buf) => {
                    let len = match received {
                        Ok((len, sender)) if sender == self.target => len,
                        Ok((_, sender)) => {
                            tracing::debug!(%sender, expected = %self.target, "fault network: stray datagram dropped");
                            continue;
                        }
                        Err(e) => {
                            tracing::debug!(target = %self.target, error = %e, "fault network: receive failed");
                            continue;
                        }
                    };
                    self.last_active.store(millis_since(self.epoch), Ordering::Relaxed);
                    self.link.counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
                    let datagram = Outgoing {
                        socket: Arc::clone(&self.front),
                        to: self.client,
                        bytes: buf[..len].to_vec(),
                    };
                    let faults = self.link.faults(&self.control);
                    self.shaper.admit(datagram, Instant::now(), &faults, &self.link.counters, &mut out);
                }
                () = sleep_until(self.shaper.deadline()) => {
                    let faults = self.link.faults(&self.control);
                    self.shaper.on_timeout(Instant::now(), &faults, &self.link.counters, &mut out);
                }
            }
            send_all(&mut out).await;
        }
    }
}

/// The fault network of one run: the proxies of every directed link and
/// their controls. Dropping it stops every proxy task and closes every
/// socket.
#[derive(Debug)]
pub struct FaultNet {
    ids: Vec<String>,
    /// The nodes' real addresses.
    targets: Vec<SocketAddr>,
    /// `proxies[i][j]`: the address of `P(i→j)` (`None` on the diagonal).
    proxies: Vec<Vec<Option<SocketAddr>>>,
    /// `counters[i][j]`: datagrams from `i` to `j`.
    counters: Vec<Vec<Arc<LinkCounters>>>,
    control: Arc<Control>,
    seed: u64,
    epoch: Instant,
    /// `tasks[i][j]`: the running proxy `P(i→j)`; `None` on the diagonal
    /// and while node `j` is down ([`FaultNet::node_down`]).
    tasks: Mutex<Vec<Vec<Option<ProxyTask>>>>,
}

/// A running proxy: its task, and its front socket (to know when it is
/// closed).
#[derive(Debug)]
struct ProxyTask {
    handle: JoinHandle<()>,
    front: Weak<UdpSocket>,
}

impl FaultNet {
    /// Starts a proxy for every directed link between `nodes` (id, real
    /// address), with seed 0. See [`FaultNet::start_seeded`].
    pub async fn start(nodes: &[(String, SocketAddr)]) -> io::Result<FaultNet> {
        FaultNet::start_seeded(nodes, 0).await
    }

    /// Starts a proxy for every directed link between `nodes` (id, real
    /// address), each on an ephemeral port of 127.0.0.1, with its random
    /// decisions drawn from generators seeded by `seed`. Must be called
    /// within a tokio runtime; the proxy tasks run on it until the
    /// `FaultNet` is dropped.
    ///
    /// Fails if two nodes share an id or a socket cannot be bound.
    pub async fn start_seeded(nodes: &[(String, SocketAddr)], seed: u64) -> io::Result<FaultNet> {
        let n = nodes.len();
        let mut seen = HashSet::new();
        for (id, _) in nodes {
            if !seen.insert(id.as_str()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("fault network: node id {id:?} is listed twice"),
                ));
            }
        }
        let counters: Vec<Vec<Arc<LinkCounters>>> = (0..n)
            .map(|_| (0..n).map(|_| Arc::default()).collect())
            .collect();
        // Bind everything before spawning anything, so a failure leaves no
        // task behind.
        let mut fronts = Vec::new();
        let mut proxies = vec![vec![None; n]; n];
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    continue;
                }
                let bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
                let front = UdpSocket::bind(bind).await.map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "fault network: binding the proxy {}→{} on {bind}: {e}",
                            nodes[i].0, nodes[j].0
                        ),
                    )
                })?;
                proxies[i][j] = Some(front.local_addr()?);
                fronts.push((i, j, front));
            }
        }
        let net = FaultNet {
            ids: nodes.iter().map(|(id, _)| id.clone()).collect(),
            targets: nodes.iter().map(|(_, addr)| *addr).collect(),
            proxies,
            counters,
            control: Arc::new(Control::default()),
            seed,
            epoch: Instant::now(),
            tasks: Mutex::new((0..n).map(|_| (0..n).map(|_| None).collect()).collect()),
        };
        {
            let mut tasks = net.lock_tasks();
            for (i, j, front) in fronts {
                tasks[i][j] = Some(net.spawn_proxy(i, j, front));
            }
        }
        Ok(net)
    }

    /// Starts the task of proxy `P(i→j)` on `front`.
    fn spawn_proxy(&self, i: usize, j: usize, front: UdpSocket) -> ProxyTask {
        let front = Arc::new(front);
        let proxy = Proxy {
            front: Arc::clone(&front),
            target: self.targets[j],
            forward: Link {
                from: i,
                to: j,
                counters: Arc::clone(&self.counters[i][j]),
            },
            reply: Link {
                from: j,
                to: i,
                counters: Arc::clone(&self.counters[j][i]),
            },
            control: Arc::clone(&self.control),
            seed: self.seed,
            epoch: self.epoch,
        };
        ProxyTask {
            handle: tokio::spawn(proxy.run()),
            front: Arc::downgrade(&front),
        }
    }

    fn lock_tasks(&self) -> MutexGuard<'_, Vec<Vec<Option<ProxyTask>>>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Node `id`'s process is gone: closes every proxy that leads to it,
    /// so that, as at a dead node's own address, nothing listens at the
    /// addresses its peers reach it by, and their hosts refuse what is
    /// sent there (a peer probing it learns at once that it is gone;
    /// without this the proxies would answer for it). Returns once the
    /// sockets are closed (bounded: 5 s). A no-op for a node already down.
    ///
    /// # Panics
    ///
    /// If `id` is not a node of this network.
    pub async fn node_down(&self, id: &str) {
        let j = self.index(id);
        let stopped: Vec<ProxyTask> = {
            let mut tasks = self.lock_tasks();
            tasks.iter_mut().filter_map(|row| row[j].take()).collect()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        for task in stopped {
            task.handle.abort();
            let _ = task.handle.await;
            // The proxy's reply tasks hold the socket too; they end soon
            // after their owner.
            while task.front.strong_count() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if task.front.strong_count() > 0 {
                tracing::warn!(
                    node = id,
                    "fault network: a proxy socket to a downed node is still open"
                );
            }
        }
    }

    /// Node `id` is about to start again: binds the proxies that lead to
    /// it at their old addresses again (retrying for up to 5 s while
    /// another socket holds one). A no-op for a node that is up.
    ///
    /// # Errors
    ///
    /// An address could not be bound again.
    ///
    /// # Panics
    ///
    /// If `id` is not a node of this network.
    pub async fn node_up(&self, id: &str) -> io::Result<()> {
        let j = self.index(id);
        for i in 0..self.ids.len() {
            let Some(addr) = self.proxies[i][j] else {
                continue;
            };
            if self.lock_tasks()[i][j].is_some() {
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            let front = loop {
                match UdpSocket::bind(addr).await {
                    Ok(front) => break front,
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!(
                                "fault network: binding the proxy {}→{} on {addr} again: {e}",
                                self.ids[i], id
                            ),
                        ))
                    }
                }
            };
            let task = self.spawn_proxy(i, j, front);
            self.lock_tasks()[i][j] = Some(task);
        }
        Ok(())
    }

    /// The seed of the random decisions.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The node ids, in the order given to [`FaultNet::start_seeded`].
    pub fn nodes(&self) -> &[String] {
        &self.ids
    }

    /// The address at which node `from` must reach node `to`: the proxy
    /// `P(from→to)`. `None` for an unknown id or when `from == to`.
    pub fn proxy_addr(&self, from: &str, to: &str) -> Option<SocketAddr> {
        let i = self.ids.iter().position(|id| id == from)?;
        let j = self.ids.iter().position(|id| id == to)?;
        self.proxies[i][j]
    }

    fn index(&self, id: &str) -> usize {
        self.ids
            .iter()
            .position(|known| known == id)
            .unwrap_or_else(|| {
                panic!(
                    "fault network: no node {id:?}; the nodes are {}",
                    self.ids.join(", ")
                )
            })
    }

    /// Drops every datagram from `from` to `to` (one direction only), on
    /// every proxy that carries them, until [`FaultNet::heal`].
    ///
    /// # Panics
    ///
    /// If either id is not a node of this network.
    pub fn block(&self, from: &str, to: &str) {
        let link = (self.index(from), self.index(to));
        self.control.lock().blocked.insert(link);
    }

    /// Blocks every link, both ways, between nodes of different `groups`.
    /// Links within a group, and those of nodes named in no group, are left
    /// as they are; blocks already in force stay.
    ///
    /// # Panics
    ///
    /// If a group names an unknown node, or a node is in two groups.
    pub fn partition(&self, groups: &[Vec<String>]) {
        let mut group_of: HashMap<usize, usize> = HashMap::new();
        for (g, group) in groups.iter().enumerate() {
            for id in group {
                if let Some(other) = group_of.insert(self.index(id), g) {
                    assert!(
                        other == g,
                        "fault network: node {id:?} is in partition groups {other} and {g}"
                    );
                }
            }
        }
        let mut faults = self.control.lock();
        for (&a, &ga) in &group_of {
            for (&b, &gb) in &group_of {
                if ga != gb {
                    faults.blocked.insert((a, b));
                }
            }
        }
    }

    /// Removes every fault: blocks, loss, delay, duplication, reordering.
    /// Datagrams already in a delay queue still leave at their time.
    pub fn heal(&self) {
        *self.control.lock() = Faults::default();
    }

    /// Drops each datagram, on every link, with probability `p`.
    ///
    /// # Panics
    ///
    /// If `p` is not within 0..=1.
    pub fn set_loss(&self, p: f64) {
        self.control.lock().loss = probability("loss", p);
    }

    /// Delays each datagram, on every link, by `base ± jitter` drawn
    /// uniformly (and never below zero).
    pub fn set_delay(&self, base: Duration, jitter: Duration) {
        let mut faults = self.control.lock();
        faults.delay = base;
        faults.jitter = jitter;
    }

    /// Delays each datagram on every link to and from node `id` by `base`
    /// (both directions), in place of [`FaultNet::set_delay`]'s base on
    /// those links (its jitter still applies): one slow node, or one
    /// distant region. `Duration::ZERO` makes its links prompt while the
    /// others keep the network's delay. [`FaultNet::heal`] removes it.
    ///
    /// # Panics
    ///
    /// If `id` is not a node of this network.
    pub fn set_node_delay(&self, id: &str, base: Duration) {
        let me = self.index(id);
        let mut faults = self.control.lock();
        for other in (0..self.ids.len()).filter(|&other| other != me) {
            faults.link_delay.insert((me, other), base);
            faults.link_delay.insert((other, me), base);
        }
    }

    /// Sends a second copy of each datagram, on every link, with
    /// probability `p`.
    ///
    /// # Panics
    ///
    /// If `p` is not within 0..=1.
    pub fn set_duplicate(&self, p: f64) {
        self.control.lock().duplicate = probability("duplicate", p);
    }

    /// Holds each datagram, on every link, with probability `p` back behind
    /// the next one (or for [`REORDER_HOLD`] if none comes).
    ///
    /// # Panics
    ///
    /// If `p` is not within 0..=1.
    pub fn set_reorder(&self, p: f64) {
        self.control.lock().reorder = probability("reorder", p);
    }

    /// The counters of every directed link, ordered by (from, to) in node
    /// order.
    pub fn stats(&self) -> Vec<LinkStats> {
        let mut stats = Vec::new();
        for (i, row) in self.counters.iter().enumerate() {
            for (j, c) in row.iter().enumerate() {
                if i == j {
                    continue;
                }
                let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                stats.push(LinkStats {
                    from: self.ids[i].clone(),
                    to: self.ids[j].clone(),
                    bytes: read(&c.bytes),
                    forwarded: read(&c.forwarded),
                    dropped: read(&c.dropped),
                    delayed: read(&c.delayed),
                    duplicated: read(&c.duplicated),
                    reordered: read(&c.reordered),
                    overflowed: read(&c.overflowed),
                });
            }
        }
        stats
    }

    /// The counters of the directed link from `from` to `to`.
    pub fn link_stats(&self, from: &str, to: &str) -> Option<LinkStats> {
        self.stats()
            .into_iter()
            .find(|s| s.from == from && s.to == to)
    }
}

impl Drop for FaultNet {
    fn drop(&mut self) {
        for task in self.lock_tasks().iter().flatten().flatten() {
            task.handle.abort();
        }
    }
}

fn probability(what: &str, p: f64) -> f64 {
    assert!(
        (0.0..=1.0).contains(&p),
        "fault network: {what} probability {p} is not within 0..=1"
    );
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shaper(seed: u64) -> Shaper<u32> {
        Shaper::new(StdRng::seed_from_u64(seed), 8)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_healthy_link_passes_everything_at_once_in_order() {
        let mut s = shaper(1);
        let counters = LinkCounters::default();
        let mut out = Vec::new();
        let now = Instant::now();
        for i in 0..5 {
            s.admit(i, now, &LinkFaults::default(), &counters, &mut out);
        }
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
        assert_eq!(s.deadline(), None);
        assert_eq!(counters.forwarded.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn blocked_and_certain_loss_drop_everything() {
        let counters = LinkCounters::default();
        let mut out = Vec::new();
        let now = Instant::now();
        let mut s = shaper(2);
        let blocked = LinkFaults {
            blocked: true,
            ..LinkFaults::default()
        };
        let lossy = LinkFaults {
            loss: 1.0,
            ..LinkFaults::default()
        };
        for i in 0..10 {
            s.admit(i, now, &blocked, &counters, &mut out);
            s.admit(i, now, &lossy, &counters, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 20);
    }

    #[test]
    fn delay_holds_until_due_and_keeps_order_without_jitter() {
        let mut s = shaper(3);
        let counters = LinkCounters::default();
        let mut out = Vec::new();
        let t0 = Instant::now();
        let faults = LinkFaults {
            delay: ms(100),
            ..LinkFaults::default()
        };
        s.admit(1, t0, &faults, &counters, &mut out);
        s.admit(2, t0 + ms(10), &faults, &counters, &mut out);
        assert!(out.is_empty());
        assert_eq!(s.deadline(), Some(t0 + ms(100)));
        s.on_timeout(t0 + ms(99), &faults, &counters, &mut out);
        assert!(out.is_empty(), "released early: {out:?}");
        s.on_timeout(t0 + ms(100), &faults, &counters, &mut out);
        assert_eq!(out, vec![1]);
        s.on_timeout(t0 + ms(200), &faults, &counters, &mut out);
        assert_eq!(out, vec![1, 2]);
        assert_eq!(s.deadline(), None);
        assert_eq!(counters.delayed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn jittered_delays_stay_within_bounds_and_reorder() {
        let mut s: Shaper<u32> = Shaper::new(StdRng::seed_from_u64(4), 10_000);
        let counters = LinkCounters::default();
        let mut out = Vec::new();
        let t0 = Instant::now();
        let faults = LinkFaults {
            delay: ms(50),
            jitter: ms(25),
            ..LinkFaults::default()
        };
        for i in 0..1000 {
            s.admit(i, t0, &faults, &counters, &mut out);
        }
        s.on_timeout(t0 + ms(24), &faults, &counters, &mut out);
        assert!(out.is_empty(), "below base - jitter: {out:?}");
        s.on_timeout(t0 + ms(75), &faults, &counters, &mut out);
        assert_eq!(out.len(), 1000);
        assert_ne!(out, (0..1000).collect::<Vec<_>>(), "jitter should reorder");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let mut s = shaper(5);
        let counters = LinkCounters::default();
        let mut out = Vec::new();
        let faults = LinkFaults {
            delay: ms(10),
            ..LinkFaults::default()
        };
        for i in 0..20 {
            s.admit(i, Instant::now(), &faults, &counters, &mut out);
        }
        assert_eq!(s.queue.len(), 8);
        assert_eq!(counters.overflowed.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn a_partition_cuts_what_is_in_flight() {
        let mut s = shaper(6);
        let counters = LinkCounters::default();
        let mut out = Vec::new();
        let t0 = Instant::now();
        let mut faults = LinkFaults {
            delay: ms(10),
            ..LinkFaults::default()
        };
        s.admit(1, t0, &faults, &counters, &mut out);
        faults.blocked = true;
        s.on_timeout(t0 + ms(10), &faults, &counters, &mut out);
        assert!(out.is_empty());
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn certain_duplication_doubles() {
        let mut s = shaper(7);
        let counters = LinkCounters::default();
        let mut out = Vec::new();
        let faults = LinkFaults {
            duplicate: 1.0,
            ..LinkFaults::default()
        };
        for i in 0..3 {
            s.admit(i, Instant::now(), &faults, &counters, &mut out);
        }
        assert_eq!(out, vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(counters.duplicated.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn certain_reordering_swaps_pairs_and_releases_a_lone_datagram_in_time() {
        let mut s = shaper(8);
        let counters = LinkCounters::default();
        let mut out = Vec::new();
        let t0 = Instant::now();
        let faults = LinkFaults {
            reorder: 1.0,
            ..LinkFaults::default()
        };
        for i in 0..5 {
            s.admit(i, t0, &faults, &counters, &mut out);
        }
        assert_eq!(out, vec![1, 0, 3, 2]);
        assert_eq!(s.deadline(), Some(t0 + REORDER_HOLD));
        s.on_timeout(t0 + REORDER_HOLD, &faults, &counters, &mut out);
        assert_eq!(out, vec![1, 0, 3, 2, 4]);
        assert_eq!(counters.reordered.load(Ordering::Relaxed), 3);
        assert_eq!(counters.forwarded.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn the_same_seed_makes_the_same_decisions() {
        let run = |seed| {
            let mut s = shaper(seed);
            let counters = LinkCounters::default();
            let mut out = Vec::new();
            let faults = LinkFaults {
                loss: 0.5,
                duplicate: 0.3,
                ..LinkFaults::default()
            };
            for i in 0..200 {
                s.admit(i, Instant::now(), &faults, &counters, &mut out);
            }
            out
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    /// Sends `payload` from a fresh socket through `P(from→to)` and returns
    /// how long it took to reach `to`'s socket.
    async fn trip(net: &FaultNet, from: &str, to: &str, receiver: &UdpSocket) -> Duration {
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let began = Instant::now();
        sender
            .send_to(&[7u8; 100], net.proxy_addr(from, to).unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 200];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), receiver.recv_from(&mut buf))
            .await
            .expect("the datagram arrives within 5 s")
            .unwrap();
        assert_eq!(len, 100);
        began.elapsed()
    }

    #[tokio::test]
    async fn a_node_delay_slows_only_that_nodes_links_and_bytes_are_counted() {
        let mut sockets = Vec::new();
        let mut nodes = Vec::new();
        for id in ["n1", "n2", "n3"] {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            nodes.push((id.to_string(), socket.local_addr().unwrap()));
            sockets.push(socket);
        }
        let net = FaultNet::start(&nodes).await.unwrap();
        net.set_node_delay("n3", ms(300));
        assert!(trip(&net, "n1", "n2", &sockets[1]).await < ms(250));
        assert!(trip(&net, "n1", "n3", &sockets[2]).await >= ms(300));
        assert!(trip(&net, "n3", "n2", &sockets[1]).await >= ms(300));
        // The network's delay applies where no node delay is set.
        net.set_delay(ms(300), Duration::ZERO);
        net.set_node_delay("n3", Duration::ZERO);
        assert!(trip(&net, "n1", "n2", &sockets[1]).await >= ms(300));
        assert!(trip(&net, "n2", "n3", &sockets[2]).await < ms(250));
        net.heal();
        assert!(trip(&net, "n1", "n3", &sockets[2]).await < ms(250));
        let bytes = |from, to| net.link_stats(from, to).unwrap().bytes;
        assert_eq!(bytes("n1", "n2"), 200);
        assert_eq!(bytes("n1", "n3"), 200);
        assert_eq!(bytes("n3", "n2"), 100);
        assert_eq!(bytes("n2", "n3"), 100);
        assert_eq!(bytes("n2", "n1"), 0);
    }

    #[test]
    fn stream_generators_differ_per_link_and_stream() {
        let draw = |i, j, k| stream_rng(1, i, j, k).random::<u64>();
        assert_ne!(draw(0, 1, 0), draw(1, 0, 0));
        assert_ne!(draw(0, 1, 0), draw(0, 1, 1));
        assert_eq!(draw(0, 1, 2), draw(0, 1, 2));
    }
}
