//! Three-node leader-follower clusters of real `mimeo serve` processes,
//! and the client-side waits their tests share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mimeo_client::{Client, ClientConfig};
use mimeo_wire::TlsIdentity;

use super::{free_addr, run, start_node, Node};

/// Every wait of the helpers below is bounded by this.
pub(crate) const CLUSTER_WAIT: Duration = Duration::from_secs(30);

/// The node ids of a cluster from [`start_lf_cluster`], by position.
pub(crate) const LF_IDS: [&str; 3] = ["n1", "n2", "n3"];

/// Writes `dir/<id>.toml` for node `id` of `addrs` (fsync `batch`, quorum
/// acks, `bootstrap`: a brand-new cluster), with more lines for its
/// `[storage]` and `[replication]` sections.
pub(crate) fn write_lf_config(
    dir: &Path,
    id: &str,
    addrs: &[(String, SocketAddr)],
    storage: &str,
    replication: &str,
) -> PathBuf {
    let me = addrs.iter().find(|(n, _)| n == id).unwrap().1;
    let mut text = format!(
        "node_id = \"{id}\"\nlisten = \"{me}\"\ndata_dir = \"data/{id}\"\nmode = \"leader-follower\"\n\
         [tls]\ndir = \"certs\"\n[storage]\nfsync = \"batch\"\n{storage}\
         [replication]\nacks = \"quorum\"\nbootstrap = true\n{replication}"
    );
    for (peer, addr) in addrs.iter().filter(|(n, _)| n != id) {
        text += &format!("[[replication.peers]]\nid = \"{peer}\"\naddr = \"{addr}\"\n");
    }
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Certificates and the three nodes of [`LF_IDS`] in `dir`, configured by
/// [`write_lf_config`]: the running nodes (`None` once a test kills one)
/// and their client addresses, in the same order.
pub(crate) fn start_lf_cluster(
    dir: &Path,
    storage: &str,
    replication: &str,
) -> (Vec<Option<Node>>, Vec<SocketAddr>) {
    let nodes = LF_IDS.join(",");
    let out = run(dir, &["certs", "init", "--dir", "certs", "--nodes", &nodes]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addrs: Vec<(String, SocketAddr)> = LF_IDS
        .iter()
        .map(|id| (id.to_string(), free_addr()))
        .collect();
    let nodes = addrs
        .iter()
        .map(|(id, addr)| {
            let config = write_lf_config(dir, id, &addrs, storage, replication);
            Some(start_node(&config, *addr))
        })
        .collect();
    (nodes, addrs.into_iter().map(|(_, a)| a).collect())
}

/// A client of `nodes` with the CLI's certificate from `dir/certs`.
pub(crate) async fn connect(dir: &Path, nodes: Vec<SocketAddr>) -> Client {
    let identity = TlsIdentity::from_dir(&dir.join("certs"), "client-cli").unwrap();
    let mut config = ClientConfig::new(nodes, "mimeo", identity);
    config.connect_timeout = Duration::from_millis(500);
    Client::new(config).unwrap()
}

/// Puts `key`, retrying (bounded) while the cluster has no leader.
pub(crate) async fn put_until_acknowledged(client: &Client, key: &str, value: &str) {
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        match client.put(key, value).await {
            Ok(_) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "{key} never acknowledged: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The address of the node that reports itself leader (bounded wait).
pub(crate) async fn leader(client: &Client, nodes: &[SocketAddr]) -> SocketAddr {
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        for &node in nodes {
            if let Ok(status) = client.status_of(node).await {
                if status.role == mimeo_client::NodeRole::Leader {
                    return node;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader within {CLUSTER_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
