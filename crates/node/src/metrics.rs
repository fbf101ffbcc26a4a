//! Prometheus metrics on the optional `metrics_listen` HTTP address.
//!
//! `GET /metrics` answers in the Prometheus text exposition format
//! (version 0.0.4). Every value is read at scrape time from the same
//! sources as `mimeo status` (the replication core's status, the peer bus
//! and the storage engine), so nothing is counted twice and nothing has to
//! be kept in step with the node's state. Every sample carries the label
//! `node` (this node's id).
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `mimeo_up` | gauge | | 1 while the node serves |
//! | `mimeo_info` | gauge | `cluster`, `mode`, `fsync` | always 1 |
//! | `mimeo_uptime_seconds` | gauge | | since the node started |
//! | `mimeo_last_index` / `mimeo_last_term` | gauge | | the last log position |
//! | `mimeo_durable_index` | gauge | | every entry up to it is durable here |
//! | `mimeo_live_keys` | gauge | | keys holding a value |
//! | `mimeo_storage_disk_bytes` | gauge | | segment files and snapshot |
//! | `mimeo_storage_garbage_bytes` | gauge | | superseded records |
//! | `mimeo_storage_segments` | gauge | | segment files in use |
//! | `mimeo_storage_compactions_total` | counter | | since the node started |
//! | `mimeo_storage_write_seconds` | histogram | | one append's writes (and a segment roll's, fsyncs included, when one fills); not the group commit |
//! | `mimeo_storage_fsync_seconds` | histogram | | one group-commit fsync of the log (one per batch of writes) |
//! | `mimeo_request_duration_seconds` | histogram | `op`, `outcome` | client requests, from decoded to answered |
//!
//! `op` is `get`, `put`, `delete`, `cas` or `status`; `outcome` is `ok`
//! (a value, a write, a cas mismatch or a status), `redirect` (not the
//! leader) or the error kind (`bad_request`, `too_large`, `unavailable`,
//! `timeout`, `internal`, `storage_failed`). A pair appears once a request
//! of that kind was answered. Histogram buckets are the 1-2-5 series from
//! 10 µs to 10 s ([`mimeo_storage::LATENCY_BOUNDS_US`]); `_sum` is exact.
//!
//! Leader-follower nodes add:
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `mimeo_role` | gauge | `role` | 1 for the current role, 0 for the others |
//! | `mimeo_term` | gauge | | the current term |
//! | `mimeo_commit_index` / `mimeo_applied_index` | gauge | | |
//! | `mimeo_snapshot_index` | gauge | | the last index of the latest durable snapshot (0: none) |
//! | `mimeo_first_index` | gauge | | the lowest index still in the log |
//! | `mimeo_staleness_seconds` | gauge | | since this node last had applied all the leader committed (0 on the leader, `+Inf` if never) |
//! | `mimeo_elections_started_total` / `mimeo_elections_won_total` | counter | | |
//! | `mimeo_rolled_back_entries_total` | counter | | uncommitted entries replaced by a leader's log |
//! | `mimeo_leaders_gone_total` | counter | | leaders found gone by a refused probe of their address (then an election is held early) |
//! | `mimeo_follower_lag_entries` | gauge | `follower` | entries it lacks (leader only) |
//! | `mimeo_follower_lag_seconds` | gauge | `follower` | age of the oldest entry it lacks (leader only) |
//! | `mimeo_follower_match_index` | gauge | `follower` | (leader only) |
//! | `mimeo_follower_inflight_messages` | gauge | `follower` | (leader only) |
//! | `mimeo_follower_replication_seconds` | histogram | `follower` | appends sent to it while this node led, from queued to its answer that they are durable (the trip both ways, its write and fsync); a follower appears once one was timed |
//! | `mimeo_follower_last_heard_seconds` | gauge | `follower` | (leader only; absent until it answers in this term) |
//! | `mimeo_peer_connected` | gauge | `peer` | 1 while the outgoing link is up |
//! | `mimeo_peer_sent_messages_total` | counter | `peer` | frames handed to QUIC |
//! | `mimeo_peer_dropped_messages_total` | counter | `peer` | frames dropped on a full queue |
//! | `mimeo_peer_reconnects_total` | counter | `peer` | |
//! | `mimeo_peer_queued_messages` | gauge | `peer` | frames waiting to be sent |
//! | `mimeo_peer_restarts_noticed_total` | counter | `peer` | times the peer dialed in from a new process while the link to its old one looked up (the link was re-dialed at once) |
//!
//! Multi-leader nodes add the `mimeo_peer_*` link metrics above and:
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `mimeo_multi_leader_applied` | gauge | `origin` | the origin's writes applied here (this node's applied vector); an origin is a node's incarnation, `<node>.<epoch>` (a data directory from before incarnations: the node id), so a node that lost its disk comes back as a new series |
//! | `mimeo_multi_leader_behind_writes` | gauge | `origin` | the origin's writes known to exist and not applied here |
//! | `mimeo_multi_leader_behind_seconds` | gauge | `origin` | from the HLC time of the origin's latest write applied here to now (0: none, or its clock is ahead) |
//! | `mimeo_multi_leader_apply_lag_seconds` | histogram | `origin` | for each of the origin's writes applied here, this node's clock then less the write's HLC physical time (replication lag, clock skew included); an origin appears once one of its writes was applied |
//! | `mimeo_multi_leader_tombstones_pending` / `_tombstone_bytes` | gauge | | keys holding only tombstones, waiting to be collected, and their bytes |
//! | `mimeo_multi_leader_tombstones_collected_total` | counter | | |
//! | `mimeo_multi_leader_keys_by_siblings` | gauge | `siblings` | keys holding that many siblings (`conflicts = "siblings"`) |
//! | `mimeo_multi_leader_drift_refusals_total` | counter | | remote timestamps the HLC refused to follow (too far ahead) |
//! | `mimeo_multi_leader_duplicate_writes_total` / `_out_of_order_writes_total` / `_type_conflicts_total` | counter | | writes received twice, after a gap, or merging two types |
//! | `mimeo_multi_leader_pending_acks` / `_pending_ack_bytes` | gauge | | local writes waiting for their acknowledgements |
//!
//! Leaderless nodes add (counters since the node started):
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `mimeo_leaderless_writes_coordinated_total` / `_reads_coordinated_total` | counter | | requests this node coordinated |
//! | `mimeo_leaderless_writes_unknown_total` / `_reads_unavailable_total` | counter | | requests that did not gather their quorum in time |
//! | `mimeo_leaderless_not_enough_replicas_total` | counter | | requests refused at once |
//! | `mimeo_leaderless_read_repairs_total` | counter | | read-repair writes sent |
//! | `mimeo_leaderless_hints_stored_total` / `_delivered_total` / `_expired_total` / `_refused_total` | counter | | hinted handoff |
//! | `mimeo_leaderless_hints_pending` / `_hints_pending_bytes` | gauge | `owner` | hints held for each owner |
//! | `mimeo_leaderless_ae_exchanges_total` / `_ae_segments_compared_total` / `_ae_keys_shipped_total` / `_ae_bytes_shipped_total` | counter | | anti-entropy |
//! | `mimeo_leaderless_last_exchange_seconds` | gauge | `peer` | since the last anti-entropy exchange with it completed (`+Inf`: never) |
//!
//! The replication metrics are left out of a scrape if the replication
//! driver does not report within one second (the rest is still served).
//!
//! The link metrics use the label `peer`, not `follower`: every node has
//! links, and on a follower they lead to the leader too.
//!
//! The text is written here rather than with a metrics crate: almost every
//! value is a snapshot taken at scrape time, so a registry of live metric
//! objects would only be filled to be read once, and the format is a few
//! lines (the label escaping is the only subtle part, and it is tested).
//! The latency histograms are the live objects: the store's
//! ([`mimeo_storage::LatencyHistogram`]) and [`RequestMetrics`].
//!
//! The HTTP side is deliberately small: HTTP/1.x, one request per
//! connection (`Connection: close`), requests parsed by `httparse` from at
//! most [`MAX_REQUEST_BYTES`] bytes, each connection bounded by
//! [`CONNECTION_TIMEOUT`] (and [`REQUEST_TIMEOUT`] until its request has
//! arrived), and at most [`MAX_CONNECTIONS`] open at once. When a new
//! connection finds them all taken, the oldest one that has not yet sent a
//! whole request is closed to make room (a scraper sends its request at
//! once; idle connections are what a hostile or broken client holds), and
//! only when every connection is busy answering is the new one refused. So
//! idle or slow clients cannot starve the scrapes. Only `GET` (and `HEAD`)
//! of `/metrics` succeed; other paths get 404, other methods 405,
//! malformed or oversized requests 400. `/metrics` has no authentication:
//! a node warns at start-up when it listens beyond loopback.

use std::collections::VecDeque;
use std::fmt::{Display, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mimeo_leader_follower::Role;
use mimeo_storage::{Latencies, LatencyHistogram, Store};
use mimeo_wire::{ClientRequest, ClientResponse, ErrorKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::NodeConfig;
use crate::leader_follower::LeaderFollower;

/// The largest request (request line and headers) read.
pub(crate) const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long one connection may take, from accept to the last byte written.
pub(crate) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a scrape waits for the replication driver's status; without it
/// the replication metrics are left out of that scrape.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Input discarded after the response, so that closing does not reset
/// the connection before the client has read the response.
const MAX_LINGER_BYTES: usize = 1024 * 1024;
/// Connections open at once.
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// How long a connection may take to send its whole request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where the metrics come from.
pub(crate) struct Source {
    pub(crate) config: NodeConfig,
    pub(crate) store: Arc<Store>,
    pub(crate) started: std::time::Instant,
    /// The replication service (leader-follower mode only).
    pub(crate) replication: Option<Arc<LeaderFollower>>,
    /// The client requests served.
    pub(crate) requests: Arc<RequestMetrics>,
    /// The leaderless service (leaderless mode only).
    pub(crate) leaderless: Option<Arc<crate::leaderless::Leaderless>>,
    /// The multi-leader service (multi-leader mode only).
    pub(crate) multi_leader: Option<Arc<crate::multi_leader::MultiLeader>>,
}

/// The operations of the client protocol, as `op` labels.
const OPS: [&str; 5] = ["get", "put", "delete", "cas", "status"];

/// The outcomes of a client request, as `outcome` labels: a served
/// request, a redirect, then one per [`ErrorKind`].
const OUTCOMES: [&str; 8] = [
    "ok",
    "redirect",
    "bad_request",
    "too_large",
    "unavailable",
    "timeout",
    "internal",
    "storage_failed",
];

/// Latencies of the client requests a node answered, by operation and
/// outcome (`mimeo_request_duration_seconds`).
#[derive(Debug, Default)]
pub(crate) struct RequestMetrics {
    by_op: [[LatencyHistogram; OUTCOMES.len()]; OPS.len()],
}

/// The operation of a client request (its index in [`OPS`]), taken before
/// the request is handed to the service.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestOp(usize);

impl RequestOp {
    pub(crate) fn of(request: &ClientRequest) -> RequestOp {
        RequestOp(match request {
            ClientRequest::Get { .. }
            | ClientRequest::GetVersioned { .. }
            | ClientRequest::LocalRead { .. } => 0,
            // Multi-leader writes count as puts, deletes as deletes.
            ClientRequest::Put { .. }
            | ClientRequest::PutVersioned { value: Some(_), .. }
            | ClientRequest::Increment { .. }
            | ClientRequest::SetAdd { .. }
            | ClientRequest::SetRemove { .. } => 1,
            ClientRequest::Delete { .. } | ClientRequest::PutVersioned { value: None, .. } => 2,
            ClientRequest::Cas { .. } => 3,
            ClientRequest::Status
            | ClientRequest::LeaderlessStatus
            | ClientRequest::MultiLeaderStatus => 4,
            ClientRequest::WithQuorum { request, .. } => return RequestOp::of(request),
        })
    }
}

impl RequestMetrics {
    /// Records that a request of kind `op` was answered with `response`
    /// after `latency`.
    pub(crate) fn observe(&self, op: RequestOp, response: &ClientResponse, latency: Duration) {
        let outcome = match response {
            ClientResponse::Value { .. }
            | ClientResponse::Written { .. }
            | ClientResponse::CasMismatch { .. }
            | ClientResponse::Status(_)
            | ClientResponse::Versioned { .. }
            | ClientResponse::WrittenVersioned { .. }
            | ClientResponse::LeaderlessStatus(_)
            | ClientResponse::MultiLeaderStatus(_)
            | ClientResponse::LocalRead { .. } => 0,
            ClientResponse::Redirect { .. } => 1,
            ClientResponse::Error { kind, .. } => match kind {
                ErrorKind::BadRequest => 2,
                ErrorKind::TooLarge => 3,
                ErrorKind::Unavailable => 4,
                ErrorKind::Timeout => 5,
                ErrorKind::Internal => 6,
                ErrorKind::StorageFailed => 7,
            },
        };
        self.by_op[op.0][outcome].observe(latency);
    }

    /// `(op, outcome, latencies)` for every pair answered at least once.
    fn answered(&self) -> impl Iterator<Item = (&'static str, &'static str, Latencies)> + '_ {
        OPS.iter().zip(&self.by_op).flat_map(|(&op, outcomes)| {
            OUTCOMES
                .iter()
                .zip(outcomes)
                .map(move |(&outcome, histogram)| (op, outcome, histogram.snapshot()))
                .filter(|(_, _, latencies)| latencies.count() > 0)
        })
    }
}

/// Binds `addr` and serves metrics from `source` until the task is aborted.
pub(crate) async fn start(
    addr: SocketAddr,
    source: Source,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    if let Some(warning) = exposure_warning(addr) {
        tracing::warn!("{warning}");
    }
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, Arc::new(source)));
    Ok((local, task))
}

/// What to warn of when metrics listen on `addr`: anything beyond loopback
/// serves them, unauthenticated, to whoever can reach it.
pub(crate) fn exposure_warning(addr: SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "metrics_listen = {addr} is not a loopback address: /metrics has no \
             authentication, and anyone who can reach {addr} reads this node's figures \
             (keep it on 127.0.0.1, or behind a firewall or an authenticating proxy)"
        )
    })
}

/// An open connection, as the accept loop sees it.
struct Open {
    /// Set once its whole request has arrived: it is being answered.
    busy: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

/// Makes room for one more connection: forgets the finished ones and, when
/// [`MAX_CONNECTIONS`] are still open, closes the oldest idle one (no whole
/// request yet). False when every open connection is busy.
fn make_room(open: &mut VecDeque<Open>) -> bool {
    open.retain(|c| !c.task.is_finished());
    if open.len() < MAX_CONNECTIONS {
        return true;
    }
    match open.iter().position(|c| !c.busy.load(Ordering::Acquire)) {
        Some(i) => {
            if let Some(idle) = open.remove(i) {
                idle.task.abort();
            }
            true
        }
        None => false,
    }
}

async fn accept_loop(listener: TcpListener, source: Arc<Source>) {
    // Oldest first.
    let mut open: VecDeque<Open> = VecDeque::with_capacity(MAX_CONNECTIONS);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep going.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !make_room(&mut open) {
            tracing::debug!(%remote, "metrics: every connection is busy; closing");
            continue;
        }
        let source = Arc::clone(&source);
        let busy = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let busy = Arc::clone(&busy);
            async move {
                match tokio::time::timeout(
                    CONNECTION_TIMEOUT,
                    serve_connection(stream, &source, &busy),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "metrics: connection failed")
                    }
                    Err(_) => tracing::debug!(%remote, "metrics: connection timed out"),
                }
            }
        });
        open.push_back(Open {
            busy,
            task: task.abort_handle(),
        });
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Metrics { head: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest(&'static str),
}

async fn serve_connection(
    mut stream: TcpStream,
    source: &Source,
    busy: &AtomicBool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut filled = 0;
    // The whole request, or `None` when the client closed before sending it.
    let read_request = async {
        loop {
            if filled == buf.len() {
                return Ok::<_, std::io::Error>(Some(Route::BadRequest(
                    "request headers too large",
                )));
            }
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Ok(None);
            }
            filled += n;
            if let Some(route) = route(&buf[..filled]) {
                return Ok(Some(route));
            }
        }
    };
    let route = match tokio::time::timeout(REQUEST_TIMEOUT, read_request).await {
        Ok(Ok(Some(route))) => route,
        // Closed, or silent too long: nobody to answer.
        Ok(Ok(None)) | Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
    };
    busy.store(true, Ordering::Release);
    let head = route == Route::Metrics { head: true };
    let (status, body) = match route {
        Route::Metrics { .. } => ("200 OK", render(source).await),
        Route::NotFound => (
            "404 Not Found",
            "not found: metrics are at /metrics\n".into(),
        ),
        Route::MethodNotAllowed => ("405 Method Not Allowed", "only GET is served\n".into()),
        Route::BadRequest(why) => ("400 Bad Request", format!("bad request: {why}\n")),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if route == Route::MethodNotAllowed {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if !head {
        // A HEAD response has the headers of the GET one, without the body.
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    // Closing a socket with unread input makes the kernel send a reset,
    // which can destroy the response before the client reads it (an
    // oversized request is answered before it is read whole). So read and
    // discard, bounded, until the client closes.
    let mut discarded = 0;
    while discarded < MAX_LINGER_BYTES {
        match stream.read(&mut buf).await? {
            0 => break,
            n => discarded += n,
        }
    }
    Ok(())
}

/// Routes a request from its first bytes; `None` while it is incomplete.
fn route(bytes: &[u8]) -> Option<Route> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Route::BadRequest("too many headers")),
        Err(_) => Some(Route::BadRequest("malformed HTTP request")),
        Ok(httparse::Status::Complete(_)) => {
            let path = request.path.unwrap_or_default();
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            if path != "/metrics" {
                return Some(Route::NotFound);
            }
            Some(match request.method {
                Some("GET") => Route::Metrics { head: false },
                Some("HEAD") => Route::Metrics { head: true },
                _ => Route::MethodNotAllowed,
            })
        }
    }
}

/// The whole exposition, read now.
async fn render(source: &Source) -> String {
    let config = &source.config;
    let mut out = Exposition::new(&config.node_id);
    out.gauge("mimeo_up", "1 while the node serves.");
    out.sample(&[], 1u8);
    out.gauge(
        "mimeo_info",
        "The node's cluster, replication mode and fsync mode (always 1).",
    );
    out.sample(
        &[
            ("cluster", &config.cluster_id),
            ("mode", &config.mode.to_string()),
            ("fsync", &config.storage.fsync.to_string()),
        ],
        1u8,
    );
    out.gauge("mimeo_uptime_seconds", "Seconds since the node started.");
    out.sample(&[], source.started.elapsed().as_secs_f64());

    let stats = source.store.stats();
    let status = match &source.replication {
        // A stalled driver must not stall the scrape: the storage metrics
        // are still served, and the missing replication ones show it.
        Some(service) => match tokio::time::timeout(STATUS_TIMEOUT, service.metrics()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(
                    "metrics: the replication driver did not report its status within {} ms",
                    STATUS_TIMEOUT.as_millis()
                );
                None
            }
        },
        None => None,
    };
    let (last_index, last_term, durable_index, live_keys) = match &status {
        Some((s, _)) => (s.last.index, s.last.term, s.durable_index, s.live_keys),
        None => (
            stats.last_position.index,
            stats.last_position.term,
            stats.durable_index,
            stats.live_keys as u64,
        ),
    };
    out.gauge("mimeo_last_index", "Index of the last log entry.");
    out.sample(&[], last_index);
    out.gauge("mimeo_last_term", "Term of the last log entry.");
    out.sample(&[], last_term);
    out.gauge(
        "mimeo_durable_index",
        "Every log entry up to this index is durable on this node.",
    );
    out.sample(&[], durable_index);
    out.gauge(
        "mimeo_live_keys",
        "Keys whose latest applied entry is a value.",
    );
    out.sample(&[], live_keys);
    out.gauge(
        "mimeo_storage_disk_bytes",
        "Bytes in segment files and the snapshot.",
    );
    out.sample(&[], stats.disk_bytes);
    out.gauge(
        "mimeo_storage_garbage_bytes",
        "Bytes of records superseded by later ones.",
    );
    out.sample(&[], stats.garbage_bytes);
    out.gauge("mimeo_storage_segments", "Segment files in use.");
    out.sample(&[], stats.segments);
    out.counter(
        "mimeo_storage_compactions_total",
        "Compactions completed since the node started.",
    );
    out.sample(&[], stats.compactions);
    out.histogram(
        "mimeo_storage_write_seconds",
        "How long one append took to write its records (a segment roll included; not the group-commit fsync).",
    );
    out.observations(&[], &stats.write_latency);
    out.histogram(
        "mimeo_storage_fsync_seconds",
        "How long one group-commit fsync of the log took.",
    );
    out.observations(&[], &stats.fsync_latency);
    out.histogram(
        "mimeo_request_duration_seconds",
        "Client requests, from decoded to answered, by operation and outcome.",
    );
    for (op, outcome, latencies) in source.requests.answered() {
        out.observations(&[("op", op), ("outcome", outcome)], &latencies);
    }

    if let Some((status, links)) = status {
        out.gauge(
            "mimeo_role",
            "1 for the node's current role, 0 for the others.",
        );
        for role in [Role::Leader, Role::Follower, Role::Candidate] {
            out.sample(&[("role", role.as_str())], u8::from(status.role == role));
        }
        out.gauge("mimeo_term", "The node's current term.");
        out.sample(&[], status.term);
        out.gauge(
            "mimeo_commit_index",
            "The highest index this node knows to be committed.",
        );
        out.sample(&[], status.commit_index);
        out.gauge(
            "mimeo_applied_index",
            "The highest index applied to this node's key-value view.",
        );
        out.sample(&[], status.applied_index);
        out.gauge(
            "mimeo_snapshot_index",
            "The last index of this node's latest durable snapshot (0: none).",
        );
        out.sample(&[], status.snapshot.index);
        out.gauge(
            "mimeo_first_index",
            "The lowest index still in this node's log (older entries are in the snapshot).",
        );
        out.sample(&[], status.first_index);
        out.gauge(
            "mimeo_staleness_seconds",
            "Seconds since this node last had applied everything the leader had committed \
             (0 on the leader, +Inf if never).",
        );
        out.sample(&[], seconds(status.staleness_ms));
        out.counter(
            "mimeo_elections_started_total",
            "Elections this node started.",
        );
        out.sample(&[], status.elections_started);
        out.counter("mimeo_elections_won_total", "Elections this node won.");
        out.sample(&[], status.elections_won);
        out.counter(
            "mimeo_rolled_back_entries_total",
            "Uncommitted entries this node dropped because a leader's log replaced them.",
        );
        out.sample(&[], status.rolled_back_entries);
        out.counter(
            "mimeo_leaders_gone_total",
            "Leaders this node found gone by a refused probe of their address.",
        );
        out.sample(&[], status.leaders_gone);

        let followers: Vec<_> = status
            .followers
            .iter()
            .map(|f| (service_name(&source.replication, f.id), f))
            .collect();
        out.gauge(
            "mimeo_follower_lag_entries",
            "Entries the follower lacks (exported by the leader).",
        );
        for (name, f) in &followers {
            out.sample(&[("follower", name)], f.lag_entries);
        }
        out.gauge(
            "mimeo_follower_lag_seconds",
            "How long ago the leader received the oldest entry the follower lacks (0 if none).",
        );
        for (name, f) in &followers {
            out.sample(&[("follower", name)], seconds(Some(f.lag_ms)));
        }
        out.gauge(
            "mimeo_follower_match_index",
            "The highest index known durable on the follower and matching the leader.",
        );
        for (name, f) in &followers {
            out.sample(&[("follower", name)], f.match_index);
        }
        out.gauge(
            "mimeo_follower_inflight_messages",
            "Append messages in flight to the follower.",
        );
        for (name, f) in &followers {
            out.sample(&[("follower", name)], f.inflight_msgs);
        }
        out.gauge(
            "mimeo_follower_last_heard_seconds",
            "Seconds since the follower last answered (absent until it answers in this term).",
        );
        for (name, f) in &followers {
            if let Some(ms) = f.last_heard_ms {
                out.sample(&[("follower", name)], seconds(Some(ms)));
            }
        }

        peer_links(&mut out, &links);
    }
    if let Some(service) = &source.multi_leader {
        match tokio::time::timeout(STATUS_TIMEOUT, service.core_status()).await {
            Ok(Some(status)) => multi_leader(&mut out, &status),
            _ => tracing::warn!(
                "metrics: the multi-leader driver did not report its status within {} ms",
                STATUS_TIMEOUT.as_millis()
            ),
        }
        peer_links(&mut out, &service.links());
    }
    if let Some(service) = &source.leaderless {
        match tokio::time::timeout(STATUS_TIMEOUT, service.core_status()).await {
            Ok(Some((status, since_start_ms))) => {
                let peers: Vec<&str> = config
                    .replication
                    .peers
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect();
                leaderless(&mut out, &status, since_start_ms, &peers);
            }
            _ => tracing::warn!(
                "metrics: the leaderless driver did not report its status within {} ms",
                STATUS_TIMEOUT.as_millis()
            ),
        }
    }
    if let Some(service) = &source.replication {
        // Kept by the driver outside its event loop: served even when the
        // status above timed out.
        out.histogram(
            "mimeo_follower_replication_seconds",
            "From queueing an append for the follower to reading its answer that the append is durable (while leading).",
        );
        for (follower, latencies) in service.replication_latency() {
            if latencies.count() > 0 {
                out.observations(&[("follower", &follower)], &latencies);
            }
        }
    }
    out.finish()
}

/// The peer bus's links.
fn peer_links(out: &mut Exposition, links: &[mimeo_wire::PeerStats]) {
    out.gauge(
        "mimeo_peer_connected",
        "1 while the outgoing link to the peer is up.",
    );
    for link in links {
        out.sample(&[("peer", &link.node_id)], u8::from(link.connected));
    }
    out.counter(
        "mimeo_peer_sent_messages_total",
        "Frames handed to QUIC on the link to the peer.",
    );
    for link in links {
        out.sample(&[("peer", &link.node_id)], link.sent);
    }
    out.counter(
        "mimeo_peer_dropped_messages_total",
        "Frames to the peer dropped because its queue was full.",
    );
    for link in links {
        out.sample(&[("peer", &link.node_id)], link.dropped);
    }
    out.counter(
        "mimeo_peer_reconnects_total",
        "Outgoing connections to the peer established after the first.",
    );
    for link in links {
        out.sample(&[("peer", &link.node_id)], link.reconnects);
    }
    out.gauge(
        "mimeo_peer_queued_messages",
        "Frames waiting in the queue to the peer.",
    );
    for link in links {
        out.sample(&[("peer", &link.node_id)], link.queued);
    }
    out.counter(
        "mimeo_peer_restarts_noticed_total",
        "Times the peer dialed in from a new process while the link to its old one looked up.",
    );
    for link in links {
        out.sample(&[("peer", &link.node_id)], link.restarts_noticed);
    }
}

/// The multi-leader core's vector, lag, tombstones, siblings and counters.
fn multi_leader(out: &mut Exposition, status: &mimeo_multi_leader::Status) {
    out.gauge(
        "mimeo_multi_leader_applied",
        "The origin's writes applied on this node (its applied vector).",
    );
    for (origin, lag) in &status.origins {
        out.sample(&[("origin", origin.as_str())], lag.applied);
    }
    out.gauge(
        "mimeo_multi_leader_behind_writes",
        "The origin's writes known to exist and not applied on this node.",
    );
    for (origin, lag) in &status.origins {
        out.sample(&[("origin", origin.as_str())], lag.behind_writes);
    }
    out.gauge(
        "mimeo_multi_leader_behind_seconds",
        "From the HLC time of the origin's latest write applied here to now (0: none, or the origin's clock is ahead).",
    );
    for (origin, lag) in &status.origins {
        out.sample(
            &[("origin", origin.as_str())],
            seconds(Some(lag.since_latest_ms)),
        );
    }
    out.histogram(
        "mimeo_multi_leader_apply_lag_seconds",
        "For each of the origin's writes applied here: this node's clock then less the write's HLC physical time.",
    );
    for (origin, lag) in &status.apply_lag {
        out.lags(&[("origin", origin.as_str())], lag);
    }
    let gauges: [(&'static str, &str, u64); 4] = [
        (
            "mimeo_multi_leader_tombstones_pending",
            "Keys holding only tombstones, waiting until every node has them to be collected.",
            status.tombstones_pending,
        ),
        (
            "mimeo_multi_leader_tombstone_bytes",
            "Bytes the pending tombstones hold.",
            status.tombstone_bytes,
        ),
        (
            "mimeo_multi_leader_pending_acks",
            "Local writes waiting for their acknowledgements.",
            status.pending_acks,
        ),
        (
            "mimeo_multi_leader_pending_ack_bytes",
            "Bytes the writes waiting for acknowledgements hold.",
            status.pending_ack_bytes,
        ),
    ];
    for (name, help, value) in gauges {
        out.gauge(name, help);
        out.sample(&[], value);
    }
    out.gauge(
        "mimeo_multi_leader_keys_by_siblings",
        "Keys holding that many siblings.",
    );
    for (siblings, keys) in &status.siblings_histogram {
        out.sample(&[("siblings", &siblings.to_string())], *keys);
    }
    let counters: [(&'static str, &str, u64); 5] = [
        (
            "mimeo_multi_leader_tombstones_collected_total",
            "Tombstoned keys collected since the node started.",
            status.tombstones_collected,
        ),
        (
            "mimeo_multi_leader_drift_refusals_total",
            "Remote HLC timestamps the clock refused to follow (more than max_drift_ms ahead).",
            status.drift_refusals,
        ),
        (
            "mimeo_multi_leader_duplicate_writes_total",
            "Writes received that were already applied (ignored).",
            status.duplicates,
        ),
        (
            "mimeo_multi_leader_out_of_order_writes_total",
            "Writes received after a gap (dropped and asked for again).",
            status.out_of_order,
        ),
        (
            "mimeo_multi_leader_type_conflicts_total",
            "Merges where two nodes had given a key different types.",
            status.type_conflicts,
        ),
    ];
    for (name, help, value) in counters {
        out.counter(name, help);
        out.sample(&[], value);
    }
}

/// The leaderless core's counters, hints and exchanges; `now_ms` is the
/// core's clock now.
fn leaderless(
    out: &mut Exposition,
    status: &mimeo_leaderless::Status,
    now_ms: u64,
    peers: &[&str],
) {
    let m = &status.metrics;
    let counters: [(&'static str, &str, u64); 15] = [
        (
            "mimeo_leaderless_writes_coordinated_total",
            "Writes this node coordinated.",
            m.writes_coordinated,
        ),
        (
            "mimeo_leaderless_writes_forwarded_total",
            "Writes handed to a replica to coordinate.",
            m.writes_forwarded,
        ),
        (
            "mimeo_leaderless_reads_coordinated_total",
            "Reads this node coordinated.",
            m.reads_coordinated,
        ),
        (
            "mimeo_leaderless_writes_unknown_total",
            "Writes that did not gather w in time (outcome unknown).",
            m.writes_unknown,
        ),
        (
            "mimeo_leaderless_reads_unavailable_total",
            "Reads that did not gather r in time.",
            m.reads_unavailable,
        ),
        (
            "mimeo_leaderless_not_enough_replicas_total",
            "Requests refused at once: too few reachable replicas.",
            m.not_enough_replicas,
        ),
        (
            "mimeo_leaderless_read_repairs_total",
            "Read-repair writes sent to stale replicas.",
            m.read_repairs,
        ),
        (
            "mimeo_leaderless_hints_stored_total",
            "Hints stored for unreachable owners.",
            m.hints_stored,
        ),
        (
            "mimeo_leaderless_hints_delivered_total",
            "Hints their owner acknowledged.",
            m.hints_delivered,
        ),
        (
            "mimeo_leaderless_hints_expired_total",
            "Hints dropped for age.",
            m.hints_expired,
        ),
        (
            "mimeo_leaderless_hints_refused_total",
            "Hinted writes refused: hint budget full.",
            m.hints_refused,
        ),
        (
            "mimeo_leaderless_ae_exchanges_total",
            "Anti-entropy exchanges completed as initiator.",
            m.ae_exchanges,
        ),
        (
            "mimeo_leaderless_ae_segments_compared_total",
            "Anti-entropy tree segments compared.",
            m.ae_segments_compared,
        ),
        (
            "mimeo_leaderless_ae_keys_shipped_total",
            "Key states shipped by anti-entropy.",
            m.ae_keys_shipped,
        ),
        (
            "mimeo_leaderless_ae_bytes_shipped_total",
            "Bytes of anti-entropy messages sent (hashes, key lists, states).",
            m.ae_bytes_shipped,
        ),
    ];
    for (name, help, value) in counters {
        out.counter(name, help);
        out.sample(&[], value);
    }
    out.gauge(
        "mimeo_leaderless_hints_pending",
        "Hints held for the owner.",
    );
    for (owner, (hints, _)) in &status.hints_pending {
        out.sample(&[("owner", owner.as_str())], *hints);
    }
    out.gauge(
        "mimeo_leaderless_hints_pending_bytes",
        "Bytes of the hints held for the owner.",
    );
    for (owner, (_, bytes)) in &status.hints_pending {
        out.sample(&[("owner", owner.as_str())], *bytes);
    }
    out.gauge(
        "mimeo_leaderless_last_exchange_seconds",
        "Seconds since the last anti-entropy exchange with the peer completed (+Inf: never).",
    );
    for peer in peers {
        let ago = status
            .last_exchange
            .get(*peer)
            .map(|at| now_ms.saturating_sub(at.0));
        out.sample(&[("peer", peer)], seconds(ago));
    }
}

fn service_name(service: &Option<Arc<LeaderFollower>>, id: u64) -> String {
    service
        .as_ref()
        .and_then(|s| s.node_name(id))
        .map_or_else(|| id.to_string(), str::to_owned)
}

/// Milliseconds as seconds; `None` (never) is `+Inf`.
fn seconds(ms: Option<u64>) -> f64 {
    ms.map_or(f64::INFINITY, |ms| ms as f64 / 1000.0)
}

/// Prometheus text exposition (format 0.0.4) under construction.
struct Exposition {
    text: String,
    node: String,
    /// The family whose samples are being written.
    family: &'static str,
}

/// A sample value in the text format (`+Inf` for infinity).
struct Value(f64);

impl Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == f64::INFINITY {
            f.write_str("+Inf")
        } else if self.0 == f64::NEG_INFINITY {
            f.write_str("-Inf")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Numbers a sample can hold.
trait SampleValue {
    fn write(&self, out: &mut String);
}

macro_rules! integer_samples {
    ($($t:ty),*) => {$(
        impl SampleValue for $t {
            fn write(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_samples!(u8, u64, usize);

impl SampleValue for f64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{}", Value(*self));
    }
}

impl Exposition {
    fn new(node: &str) -> Self {
        Exposition {
            text: String::with_capacity(4096),
            node: node.to_owned(),
            family: "",
        }
    }

    fn gauge(&mut self, name: &'static str, help: &str) {
        self.family(name, help, "gauge");
    }

    fn counter(&mut self, name: &'static str, help: &str) {
        self.family(name, help, "counter");
    }

    fn histogram(&mut self, name: &'static str, help: &str) {
        self.family(name, help, "histogram");
    }

    fn family(&mut self, name: &'static str, help: &str, kind: &str) {
        self.family = name;
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the current family, labelled with the node id and
    /// `labels`.
    fn sample(&mut self, labels: &[(&str, &str)], value: impl SampleValue) {
        self.line("", labels, value);
    }

    /// The samples of one histogram of the current family: cumulative
    /// buckets, sum and count.
    fn observations(&mut self, labels: &[(&str, &str)], latencies: &Latencies) {
        for (bound, count) in latencies.buckets() {
            let le = Value(bound.map_or(f64::INFINITY, |b| b.as_secs_f64())).to_string();
            let mut bucket = labels.to_vec();
            bucket.push(("le", &le));
            self.line("_bucket", &bucket, count);
        }
        self.line("_sum", labels, latencies.sum().as_secs_f64());
        self.line("_count", labels, latencies.count());
    }

    /// The samples of one lag histogram of the current family, in
    /// seconds: cumulative buckets, sum and count.
    fn lags(&mut self, labels: &[(&str, &str)], lags: &mimeo_multi_leader::LagHistogram) {
        for (bound, count) in lags.buckets() {
            let le = Value(bound.map_or(f64::INFINITY, |ms| ms as f64 / 1000.0)).to_string();
            let mut bucket = labels.to_vec();
            bucket.push(("le", &le));
            self.line("_bucket", &bucket, count);
        }
        self.line("_sum", labels, lags.sum_ms() as f64 / 1000.0);
        self.line("_count", labels, lags.count());
    }

    /// One line: the family's name with `suffix`, the labels, the value.
    fn line(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl SampleValue) {
        let _ = write!(self.text, "{}{suffix}{{node=\"", self.family);
        escape_label(&mut self.text, &self.node);
        self.text.push('"');
        for (name, value) in labels {
            let _ = write!(self.text, ",{name}=\"");
            escape_label(&mut self.text, value);
            self.text.push('"');
        }
        self.text.push_str("} ");
        value.write(&mut self.text);
        self.text.push('\n');
    }

    fn finish(self) -> String {
        self.text
    }
}

/// Appends a label value with `\`, `"` and newlines escaped.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_beyond_loopback_are_warned_of() {
        for addr in ["127.0.0.1:9101", "127.8.9.1:9101", "[::1]:9101"] {
            assert_eq!(exposure_warning(addr.parse().unwrap()), None, "{addr}");
        }
        for addr in ["0.0.0.0:9101", "10.0.0.7:9101", "[::]:9101"] {
            let warning = exposure_warning(addr.parse().unwrap()).expect(addr);
            assert!(warning.contains("no authentication"), "{warning}");
        }
    }

    #[test]
    fn samples_carry_the_node_and_escaped_labels() {
        let mut out = Exposition::new("n1");
        out.gauge("mimeo_x", "An x.\nTwo lines.");
        out.sample(&[("peer", "a\"b\\c\nd")], 7u64);
        out.sample(&[], f64::INFINITY);
        out.sample(&[], 0.25);
        assert_eq!(
            out.finish(),
            "# HELP mimeo_x An x.\\nTwo lines.\n# TYPE mimeo_x gauge\n\
             mimeo_x{node=\"n1\",peer=\"a\\\"b\\\\c\\nd\"} 7\n\
             mimeo_x{node=\"n1\"} +Inf\n\
             mimeo_x{node=\"n1\"} 0.25\n"
        );
    }

    #[test]
    fn histograms_have_cumulative_buckets_a_sum_and_a_count() {
        let histogram = LatencyHistogram::new();
        histogram.observe(Duration::from_micros(150));
        histogram.observe(Duration::from_secs(20));
        let mut out = Exposition::new("n1");
        out.histogram("mimeo_h", "An h.");
        out.observations(&[("op", "put")], &histogram.snapshot());
        let text = out.finish();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2 + 20 + 2, "{text}");
        assert_eq!(lines[1], "# TYPE mimeo_h histogram");
        assert_eq!(
            lines[2],
            "mimeo_h_bucket{node=\"n1\",op=\"put\",le=\"0.00001\"} 0"
        );
        assert_eq!(
            lines[5],
            "mimeo_h_bucket{node=\"n1\",op=\"put\",le=\"0.0001\"} 0"
        );
        assert_eq!(
            lines[6],
            "mimeo_h_bucket{node=\"n1\",op=\"put\",le=\"0.0002\"} 1"
        );
        assert_eq!(
            lines[20],
            "mimeo_h_bucket{node=\"n1\",op=\"put\",le=\"10\"} 1"
        );
        assert_eq!(
            lines[21],
            "mimeo_h_bucket{node=\"n1\",op=\"put\",le=\"+Inf\"} 2"
        );
        assert_eq!(lines[22], "mimeo_h_sum{node=\"n1\",op=\"put\"} 20.00015");
        assert_eq!(lines[23], "mimeo_h_count{node=\"n1\",op=\"put\"} 2");
    }

    #[test]
    fn requests_are_counted_by_op_and_outcome() {
        let requests = RequestMetrics::default();
        let put = ClientRequest::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ack: None,
        };
        let written = ClientResponse::Written {
            position: mimeo_wire::Position::default(),
        };
        let refused = ClientResponse::Error {
            kind: ErrorKind::Unavailable,
            message: "no quorum".into(),
        };
        let ms = Duration::from_millis(1);
        requests.observe(RequestOp::of(&put), &written, ms);
        requests.observe(RequestOp::of(&put), &written, ms);
        requests.observe(RequestOp::of(&put), &refused, ms);
        requests.observe(
            RequestOp::of(&ClientRequest::Status),
            &ClientResponse::Redirect { leader: None },
            ms,
        );
        let answered: Vec<_> = requests
            .answered()
            .map(|(op, outcome, latencies)| (op, outcome, latencies.count()))
            .collect();
        assert_eq!(
            answered,
            [
                ("put", "ok", 2),
                ("put", "unavailable", 1),
                ("status", "redirect", 1)
            ]
        );
    }

    #[test]
    fn each_error_kind_is_counted_under_its_own_name() {
        let kinds = [
            (ErrorKind::BadRequest, "bad_request"),
            (ErrorKind::TooLarge, "too_large"),
            (ErrorKind::Unavailable, "unavailable"),
            (ErrorKind::Timeout, "timeout"),
            (ErrorKind::Internal, "internal"),
            (ErrorKind::StorageFailed, "storage_failed"),
        ];
        for (kind, label) in kinds {
            let requests = RequestMetrics::default();
            let response = ClientResponse::Error {
                kind,
                message: String::new(),
            };
            let op = RequestOp::of(&ClientRequest::Status);
            requests.observe(op, &response, Duration::from_millis(1));
            let answered: Vec<_> = requests.answered().map(|(_, o, _)| o).collect();
            assert_eq!(answered, [label], "{kind:?}");
        }
    }

    #[test]
    fn routes_requests() {
        let get = |text: &str| route(text.as_bytes());
        assert_eq!(
            get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Route::Metrics { head: false })
        );
        assert_eq!(
            get("GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Route::Metrics { head: false })
        );
        assert_eq!(
            get("HEAD /metrics HTTP/1.1\r\n\r\n"),
            Some(Route::Metrics { head: true })
        );
        assert_eq!(get("GET / HTTP/1.1\r\n\r\n"), Some(Route::NotFound));
        assert_eq!(
            get("POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Route::MethodNotAllowed)
        );
        assert_eq!(get("GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(get("GET /met"), None);
        assert!(matches!(
            get("\x00\x01garbage\r\n\r\n"),
            Some(Route::BadRequest(_))
        ));
        let many: String = (0..40).map(|i| format!("h{i}: v\r\n")).collect();
        assert!(matches!(
            get(&format!("GET /metrics HTTP/1.1\r\n{many}\r\n")),
            Some(Route::BadRequest(_))
        ));
    }
}
