//! The `mimeo` binary's library: run a node, a local cluster, the client
//! command line and the load generator.
//!
//! Most users run the binary:
//!
//! ```text
//! mimeo certs init --dir certs --nodes n1
//! mimeo serve --config node.toml          # every field of node.toml has a default
//! mimeo --certs certs put greeting hello
//! mimeo --certs certs get greeting
//! mimeo --certs certs bench --concurrency 16 --duration 10s
//! mimeo cluster --nodes 3                 # a local cluster in one command
//! ```
//!
//! The library exposes what other programs reuse: [`config::NodeConfig`]
//! (`mimeo cluster` and the harness write their node configs from one with
//! [`config::NodeConfig::to_toml`]; the harness validates it first, so a
//! bad knob fails the run before any node starts), [`serve`] (run a node inside another process; its
//! errors are [`ServeError`]s naming what failed), and [`mod@bench`], the
//! load generator that the `bench-compare` crate also points at etcd and
//! Redis.
//!
//! ```
//! use mimeo_node::config::NodeConfig;
//!
//! let config = NodeConfig::parse("node_id = \"n2\"\n[storage]\nfsync = \"always\"\n").unwrap();
//! assert_eq!(config.node_id, "n2");
//! assert!(NodeConfig::parse("[storage]\nfsync = \"sometimes\"\n").is_err());
//! ```

pub mod bench;
pub mod cli;
mod clock;
mod cluster;
pub mod config;
mod data_dir;
mod leader_follower;
mod leaderless;
mod metrics;
mod multi_leader;
mod server;
mod standalone;

pub use server::{serve, ServeError};
