//! The standalone mode: one node, no replication.
//!
//! Every mutation is serialised through one lock that assigns the next log
//! index and hands the record to the storage engine; the lock is released
//! before waiting for durability, so with `fsync = batch` concurrent writers
//! share one fsync. A write is acknowledged only once durable, and a read
//! that finds a record not yet durable waits for it, so no client ever sees
//! a value a crash could still undo. That makes the node linearizable: each
//! operation takes effect at the moment it holds the lock (writes) or reads
//! the index (reads).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use mimeo_storage::{Entry, LogPosition, Mutation, Record, RecordMeta, Store};
use mimeo_wire::{
    ClientRequest, ClientResponse, ErrorKind, NodeRole, NodeStatus, Position, WriteAck,
};

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::server::Failure;

/// The standalone service behind the client protocol.
pub(crate) struct Standalone {
    store: Arc<Store>,
    /// Serialises index assignment and cas checks.
    write_lock: Mutex<()>,
    config: NodeConfig,
    clock: Arc<Clock>,
    started: Instant,
    /// Told when storage is poisoned: the node must stop.
    failure: Arc<Failure>,
}

/// What a blocking write returned: written at a position, or a cas mismatch.
enum WriteOutcome {
    Written(LogPosition),
    Mismatch(Option<Vec<u8>>),
}

impl Standalone {
    pub(crate) fn new(
        store: Arc<Store>,
        config: NodeConfig,
        clock: Arc<Clock>,
        failure: Arc<Failure>,
    ) -> Self {
        Standalone {
            store,
            write_lock: Mutex::new(()),
            config,
            clock,
            started: Instant::now(),
            failure,
        }
    }

    /// Serves one client request. Storage calls block, so they run on the
    /// blocking pool.
    pub(crate) async fn handle(self: Arc<Self>, request: ClientRequest) -> ClientResponse {
        if let Err((kind, message)) = check_limits(&self.config.limits, &request) {
            return error(kind, message);
        }
        if let ClientRequest::Status = request {
            return ClientResponse::Status(self.status());
        }
        if let Some(refused) =
            crate::multi_leader::refuse_outside_multi_leader(&request, "standalone")
        {
            return refused;
        }
        let this = Arc::clone(&self);
        let work = tokio::task::spawn_blocking(move || this.handle_blocking(request));
        match tokio::time::timeout(self.config.request_timeout(), work).await {
            Ok(Ok(response)) => response,
            Ok(Err(join_error)) => error(
                ErrorKind::Internal,
                format!("request handler failed: {join_error}"),
            ),
            Err(_) => error(
                ErrorKind::Timeout,
                format!(
                    "not done within {} ms; it may still take effect",
                    self.config.limits.request_timeout_ms
                ),
            ),
        }
    }

    fn handle_blocking(&self, request: ClientRequest) -> ClientResponse {
        let result = match request {
            ClientRequest::Get { key, .. } => self.read(&key),
            ClientRequest::Put {
                ack: Some(WriteAck::SemiSync(k)),
                ..
            }
            | ClientRequest::Delete {
                ack: Some(WriteAck::SemiSync(k)),
                ..
            }
            | ClientRequest::Cas {
                ack: Some(WriteAck::SemiSync(k)),
                ..
            } => Ok(error(
                ErrorKind::BadRequest,
                format!(
                    "ack mode semi-sync:{k} needs followers; a standalone node has none \
                     (async, quorum and all are met by its own fsync)"
                ),
            )),
            ClientRequest::Put { key, value, .. } => {
                self.write(Mutation::Put { key, value }, None).map(written)
            }
            ClientRequest::Delete { key, .. } => {
                self.write(Mutation::Delete { key }, None).map(written)
            }
            ClientRequest::Cas {
                key, expected, new, ..
            } => self
                .write(Mutation::Put { key, value: new }, Some(expected))
                .map(written),
            ClientRequest::Status => Ok(ClientResponse::Status(self.status())),
            ClientRequest::WithQuorum { .. }
            | ClientRequest::LeaderlessStatus
            | ClientRequest::LocalRead { .. } => Ok(crate::leaderless::refused_here()),
            // Refused in `handle`.
            ClientRequest::GetVersioned { .. }
            | ClientRequest::PutVersioned { .. }
            | ClientRequest::Increment { .. }
            | ClientRequest::SetAdd { .. }
            | ClientRequest::SetRemove { .. }
            | ClientRequest::MultiLeaderStatus => Ok(error(
                ErrorKind::BadRequest,
                "a multi-leader request reached a standalone node".into(),
            )),
        };
        result.unwrap_or_else(|e| {
            tracing::error!(error = %e, "storage failed");
            if self.store.is_poisoned() {
                // Every later write would fail, and reads may wait for
                // durability that never comes: stop, so the operator sees
                // it and the restart drops what was never fsynced.
                self.failure.fail(format!("storage failed: {e}"));
            }
            error(
                ErrorKind::StorageFailed,
                format!("storage failed; the outcome is unknown: {e}"),
            )
        })
    }

    /// Reads the latest entry, waiting until it is durable.
    fn read(&self, key: &[u8]) -> Result<ClientResponse, mimeo_storage::Error> {
        let entry = self.store.get(key)?;
        let (value, position) = match entry {
            Some(Entry { value, meta }) => {
                self.store.wait_durable(meta.position.index)?;
                (value, meta.position)
            }
            None => (None, LogPosition::default()),
        };
        Ok(ClientResponse::Value {
            value,
            position: position_to_wire(position),
        })
    }

    /// Appends one mutation, checking `expected` first when given (cas),
    /// and waits until it is durable.
    fn write(
        &self,
        mutation: Mutation,
        expected: Option<Option<Vec<u8>>>,
    ) -> Result<WriteOutcome, mimeo_storage::Error> {
        let position = {
            let _guard = self
                .write_lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(expected) = expected {
                let key = match &mutation {
                    Mutation::Put { key, .. } | Mutation::Delete { key } => key,
                };
                let (current, index) = match self.store.get(key)? {
                    Some(entry) => (entry.value, entry.meta.position.index),
                    None => (None, 0),
                };
                if current != expected {
                    // The value compared against may not be durable yet; the
                    // caller must not learn of it before it is.
                    drop(_guard);
                    self.store.wait_durable(index)?;
                    return Ok(WriteOutcome::Mismatch(current));
                }
            }
            let index = self.store.last_position().index + 1;
            let position = LogPosition { term: 0, index };
            let record = Record {
                meta: RecordMeta {
                    position,
                    origin: 0,
                    seq: index,
                    version: Vec::new(),
                },
                mutation,
            };
            self.store.append(std::slice::from_ref(&record))?;
            position
        };
        self.store.wait_durable(position.index)?;
        Ok(WriteOutcome::Written(position))
    }

    /// The node's status as reported to clients and admins.
    pub(crate) fn status(&self) -> NodeStatus {
        let stats = self.store.stats();
        let last = self.store.last_position();
        NodeStatus {
            node_id: self.config.node_id.clone(),
            cluster_id: self.config.cluster_id.clone(),
            mode: self.config.mode.into(),
            role: NodeRole::Standalone,
            term: last.term,
            last_position: position_to_wire(last),
            commit_index: self.store.durable_index(),
            durable_index: self.store.durable_index(),
            live_keys: stats.live_keys as u64,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            clock_offset_ms: self.clock.offset_ms(),
            fsync: crate::config::fsync_policy(self.config.storage.fsync),
            peers: Vec::new(),
        }
    }
}

/// Refuses empty or oversized keys and values before any work is done
/// (every mode applies the same limits).
pub(crate) fn check_limits(
    limits: &crate::config::LimitsSection,
    request: &ClientRequest,
) -> Result<(), (ErrorKind, String)> {
    let (key, value) = match request {
        ClientRequest::Get { key, .. }
        | ClientRequest::Delete { key, .. }
        | ClientRequest::GetVersioned { key, .. }
        | ClientRequest::LocalRead { key }
        | ClientRequest::Increment { key, .. } => (Some(key), None),
        ClientRequest::Put { key, value, .. } => (Some(key), Some(value)),
        ClientRequest::Cas { key, new, .. } => (Some(key), Some(new)),
        ClientRequest::PutVersioned { key, value, .. } => (Some(key), value.as_ref()),
        ClientRequest::SetAdd { key, element, .. }
        | ClientRequest::SetRemove { key, element, .. } => (Some(key), Some(element)),
        ClientRequest::Status
        | ClientRequest::LeaderlessStatus
        | ClientRequest::MultiLeaderStatus => (None, None),
        ClientRequest::WithQuorum { request, .. } => return check_limits(limits, request),
    };
    if let Some(key) = key {
        if key.is_empty() {
            return Err((ErrorKind::BadRequest, "the key is empty".into()));
        }
        if key.len() > limits.max_key_bytes {
            return Err((
                ErrorKind::TooLarge,
                format!(
                    "key of {} bytes exceeds limits.max_key_bytes = {}",
                    key.len(),
                    limits.max_key_bytes
                ),
            ));
        }
    }
    if let Some(value) = value {
        if value.len() > limits.max_value_bytes {
            return Err((
                ErrorKind::TooLarge,
                format!(
                    "value of {} bytes exceeds limits.max_value_bytes = {}",
                    value.len(),
                    limits.max_value_bytes
                ),
            ));
        }
    }
    Ok(())
}

fn written(outcome: WriteOutcome) -> ClientResponse {
    match outcome {
        WriteOutcome::Written(position) => ClientResponse::Written {
            position: position_to_wire(position),
        },
        WriteOutcome::Mismatch(current) => ClientResponse::CasMismatch { current },
    }
}

pub(crate) fn position_to_wire(position: LogPosition) -> Position {
    Position {
        term: position.term,
        index: position.index,
    }
}

pub(crate) fn error(kind: ErrorKind, message: String) -> ClientResponse {
    ClientResponse::Error { kind, message }
}
