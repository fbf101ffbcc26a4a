//! PostgreSQL as a target: the multi-writer peer of `scripts/bench-ml.sh`
//! (three PostgreSQL nodes replicating each other with pglogical).
//!
//! The script creates, on every node, `kv (k text primary key, v bytea)`
//! for the workload and `counters (k text primary key, v bigint)` for the
//! lost-increment test, both in pglogical's default replication set. A put
//! is an upsert, so it writes the key whether or not it exists, as Mimeo's
//! put does; each statement commits on its own (autocommit) with the
//! server's defaults (`synchronous_commit = on`, `fsync = on`: a commit is
//! acknowledged once its WAL is flushed on the node that took it, as Mimeo
//! with `acks = local`).

use tokio_postgres::{Client, NoTls, Statement};

use mimeo_node::bench::{OpError, Target};

/// One connection to one PostgreSQL node, with the workload's statements
/// prepared. Concurrent calls are pipelined on the connection.
pub(crate) struct Postgres {
    client: Client,
    put: Statement,
    get: Statement,
    increment: Statement,
    read_counter: Statement,
}

impl Postgres {
    /// Connects to `host:port` as `user` to database `dbname` and prepares
    /// the statements (the tables must exist).
    pub(crate) async fn connect(
        endpoint: &str,
        user: &str,
        dbname: &str,
    ) -> anyhow::Result<Postgres> {
        let (host, port) = endpoint.rsplit_once(':').ok_or_else(|| {
            anyhow::anyhow!("--endpoint for postgres: host:port, not {endpoint:?}")
        })?;
        let config = format!("host={host} port={port} user={user} dbname={dbname}");
        let (client, connection) = tokio_postgres::connect(&config, NoTls)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to postgres at {endpoint}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("postgres connection ended: {e}");
            }
        });
        let prepare = |sql: &'static str| {
            let client = &client;
            async move {
                client.prepare(sql).await.map_err(|e| {
                    anyhow::anyhow!("preparing {sql:?} on {endpoint} (do the tables exist?): {e}")
                })
            }
        };
        let put = prepare(
            "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
        )
        .await?;
        let get = prepare("SELECT v FROM kv WHERE k = $1").await?;
        let increment = prepare(
            "INSERT INTO counters (k, v) VALUES ($1, 1) ON CONFLICT (k) DO UPDATE SET v = counters.v + 1",
        )
        .await?;
        let read_counter = prepare("SELECT v FROM counters WHERE k = $1").await?;
        Ok(Postgres {
            client,
            put,
            get,
            increment,
            read_counter,
        })
    }

    /// Adds one to counter `key` in one statement (`v = v + 1`): atomic on
    /// the node that runs it; what replication does with two nodes' rows
    /// is what the lost-increment test measures.
    pub(crate) async fn increment(&self, key: &str) -> Result<(), OpError> {
        self.client
            .execute(&self.increment, &[&key])
            .await
            .map(|_| ())
            .map_err(pg_error)
    }

    /// The value of counter `key` on this node (0 when absent).
    pub(crate) async fn read_counter(&self, key: &str) -> Result<i64, OpError> {
        let row = self
            .client
            .query_opt(&self.read_counter, &[&key])
            .await
            .map_err(pg_error)?;
        Ok(row.map_or(0, |row| row.get(0)))
    }
}

fn pg_error(e: tokio_postgres::Error) -> OpError {
    // A statement that failed before it ran is definite (a database error
    // with a code is the server refusing it); a broken connection is not.
    if e.code().is_some() {
        OpError::Definite(e.to_string())
    } else {
        OpError::Unknown(e.to_string())
    }
}

impl Target for Postgres {
    async fn put(&self, key: String, value: Vec<u8>) -> Result<(), OpError> {
        self.client
            .execute(&self.put, &[&key, &value])
            .await
            .map(|_| ())
            .map_err(pg_error)
    }

    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, OpError> {
        let row = self
            .client
            .query_opt(&self.get, &[&key])
            .await
            .map_err(pg_error)?;
        Ok(row.map(|row| row.get(0)))
    }
}
