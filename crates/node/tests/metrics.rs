//! The Prometheus endpoint (`metrics_listen`) of real `mimeo serve`
//! processes, scraped with plain HTTP requests over TCP: a standalone node
//! exports its durable index and keys after writes and survives garbage,
//! oversized, slow and unknown requests; the leader of a 3-node cluster
//! exports the lag of each follower, which grows when a follower is killed.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;

/// Every wait in this file is bounded by this.
const WAIT: Duration = Duration::from_secs(30);

/// A free TCP port on loopback (small race until the node binds it).
fn free_tcp_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Sends `request` as is and returns the status line and the body.
fn http(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head.lines().next().unwrap().to_owned();
    if status.contains("200") {
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
    }
    (status, body.to_owned())
}

fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    body
}

/// The value of the sample `name{labels}`, if the exposition has it.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    let line = text.lines().find(|l| l.starts_with(&prefix))?;
    let value = &line[prefix.len()..];
    Some(if value == "+Inf" {
        f64::INFINITY
    } else {
        value.parse().unwrap()
    })
}

/// Scrapes until `done` holds for the exposition (bounded).
fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(addr);
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {WAIT:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn put(dir: &Path, node: SocketAddr, key: &str) {
    let mut args = client_args(node);
    args.extend(["put".into(), key.into(), "v".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(dir, &args);
    assert!(
        out.status.success(),
        "put {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn standalone_node_exports_storage_metrics_and_survives_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let metrics = free_tcp_addr();
    let config = write_config(
        dir.path(),
        addr,
        "batch",
        &format!("metrics_listen = \"{metrics}\""),
    );
    let _node = start_node(&config, addr);

    let text = scrape(metrics);
    assert_eq!(
        sample(&text, "mimeo_up", "node=\"n1\""),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "mimeo_durable_index", "node=\"n1\""),
        Some(0.0)
    );
    assert!(
        text.contains(
            "mimeo_info{node=\"n1\",cluster=\"mimeo\",mode=\"standalone\",fsync=\"batch\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("# TYPE mimeo_storage_compactions_total counter"));
    assert!(
        !text.contains("mimeo_role"),
        "a standalone node has no replication metrics:\n{text}"
    );

    for key in ["a", "b", "c"] {
        put(dir.path(), addr, key);
    }
    // Writes are acknowledged only once durable: no waiting needed.
    let text = scrape(metrics);
    for name in ["mimeo_durable_index", "mimeo_last_index", "mimeo_live_keys"] {
        assert_eq!(
            sample(&text, name, "node=\"n1\""),
            Some(3.0),
            "{name}:\n{text}"
        );
    }
    assert!(sample(&text, "mimeo_storage_disk_bytes", "node=\"n1\"").unwrap() > 0.0);
    // Each put was timed once, and each one's append and fsync.
    assert!(text.contains("# TYPE mimeo_request_duration_seconds histogram"));
    let puts = "node=\"n1\",op=\"put\",outcome=\"ok\"";
    assert_eq!(
        sample(&text, "mimeo_request_duration_seconds_count", puts),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "mimeo_request_duration_seconds_bucket",
            &format!("{puts},le=\"+Inf\"")
        ),
        Some(3.0)
    );
    assert!(sample(&text, "mimeo_request_duration_seconds_sum", puts).unwrap() > 0.0);
    assert_eq!(
        sample(
            &text,
            "mimeo_request_duration_seconds_count",
            "node=\"n1\",op=\"get\",outcome=\"ok\""
        ),
        None,
        "no get was answered"
    );
    assert_eq!(
        sample(&text, "mimeo_storage_write_seconds_count", "node=\"n1\""),
        Some(3.0)
    );
    // Sequential puts under `batch`: one fsync each.
    assert_eq!(
        sample(&text, "mimeo_storage_fsync_seconds_count", "node=\"n1\""),
        Some(3.0)
    );
    let fsyncs_within_10s = sample(
        &text,
        "mimeo_storage_fsync_seconds_bucket",
        "node=\"n1\",le=\"10\"",
    );
    assert_eq!(fsyncs_within_10s, Some(3.0), "{text}");

    // A client that connects and sends nothing holds no one up.
    let mut idle = TcpStream::connect(metrics).unwrap();
    let (status, _) = http(metrics, b"\x16\x03\x01garbage\x00\xff\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let (status, body) = http(metrics, &[b'A'; 64 * 1024]);
    assert_eq!(status, "HTTP/1.1 400 Bad Request", "{body}");
    assert!(body.contains("too large"), "{body}");
    let (status, _) = http(metrics, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http(metrics, b"DELETE /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let text = scrape(metrics);
    assert_eq!(sample(&text, "mimeo_live_keys", "node=\"n1\""), Some(3.0));

    // Many idle clients, more than the node keeps connections for: the
    // oldest idle ones make room, and scrapes go on being answered.
    let crowd: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect_timeout(&metrics, WAIT).unwrap())
        .collect();
    for _ in 0..3 {
        let text = scrape(metrics);
        assert_eq!(sample(&text, "mimeo_live_keys", "node=\"n1\""), Some(3.0));
    }
    drop(crowd);

    // The idle client is cut off by the request timeout.
    idle.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).unwrap(), 0);
    assert!(started.elapsed() < WAIT);
}

fn write_lf_config(dir: &Path, id: &str, addrs: &[(String, SocketAddr, SocketAddr)]) -> PathBuf {
    let (_, me, metrics) = addrs.iter().find(|(n, ..)| n == id).unwrap();
    let mut text = format!(
        "node_id = \"{id}\"\nlisten = \"{me}\"\nmetrics_listen = \"{metrics}\"\n\
         data_dir = \"data/{id}\"\nmode = \"leader-follower\"\n\
         [tls]\ndir = \"certs\"\n[storage]\nfsync = \"batch\"\n[replication]\nacks = \"quorum\"\nbootstrap = true\n"
    );
    for (peer, addr, _) in addrs.iter().filter(|(n, ..)| n != id) {
        text += &format!("[[replication.peers]]\nid = \"{peer}\"\naddr = \"{addr}\"\n");
    }
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Puts `key` through any node, retrying (bounded) while there is no leader.
fn put_until_acknowledged(dir: &Path, nodes: &[SocketAddr], key: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        for &node in nodes {
            let mut args = client_args(node);
            args.extend(["put".into(), key.into(), "v".into()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if run(dir, &args).status.success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{key} never acknowledged");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_leader_exports_per_follower_lag() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["certs", "init", "--dir", "certs", "--nodes", "n1,n2,n3"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addrs: Vec<(String, SocketAddr, SocketAddr)> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| (id.to_string(), free_addr(), free_tcp_addr()))
        .collect();
    let mut nodes: Vec<Option<Node>> = addrs
        .iter()
        .map(|(id, addr, _)| Some(start_node(&write_lf_config(dir.path(), id, &addrs), *addr)))
        .collect();
    let all: Vec<SocketAddr> = addrs.iter().map(|(_, a, _)| *a).collect();
    for i in 0..5 {
        put_until_acknowledged(dir.path(), &all, &format!("k{i}"));
    }

    // Exactly one node reports itself leader on its metrics.
    let deadline = Instant::now() + WAIT;
    let leader = loop {
        let leaders: Vec<usize> = (0..3)
            .filter(|&i| {
                let (id, _, metrics) = &addrs[i];
                let text = scrape(*metrics);
                sample(
                    &text,
                    "mimeo_role",
                    &format!("node=\"{id}\",role=\"leader\""),
                ) == Some(1.0)
            })
            .collect();
        if let [leader] = leaders[..] {
            break leader;
        }
        assert!(Instant::now() < deadline, "no single leader: {leaders:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (leader_id, _, leader_metrics) = addrs[leader].clone();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let node = format!("node=\"{leader_id}\"");
    let label = |i: usize| format!("{node},follower=\"{}\"", addrs[i].0);

    // Both followers catch up: lag 0, match index = the leader's last index.
    let text = scrape_until(leader_metrics, "followers caught up", |text| {
        let last = sample(text, "mimeo_last_index", &node);
        followers.iter().all(|&f| {
            sample(text, "mimeo_follower_lag_entries", &label(f)) == Some(0.0)
                && sample(text, "mimeo_follower_match_index", &label(f)) == last
        })
    });
    assert!(
        sample(&text, "mimeo_last_index", &node).unwrap() >= 5.0,
        "{text}"
    );
    assert!(sample(&text, "mimeo_term", &node).unwrap() >= 1.0);
    assert!(sample(&text, "mimeo_commit_index", &node).unwrap() >= 5.0);
    assert!(sample(&text, "mimeo_elections_won_total", &node).unwrap() >= 1.0);
    assert_eq!(sample(&text, "mimeo_staleness_seconds", &node), Some(0.0));
    assert_eq!(
        sample(&text, "mimeo_rolled_back_entries_total", &node),
        Some(0.0)
    );
    for &f in &followers {
        assert_eq!(
            sample(&text, "mimeo_follower_lag_seconds", &label(f)),
            Some(0.0)
        );
        assert!(sample(&text, "mimeo_follower_last_heard_seconds", &label(f)).is_some());
        // At least the leader's own first entry was timed to it.
        let timed = sample(&text, "mimeo_follower_replication_seconds_count", &label(f));
        assert!(timed.is_some_and(|n| n >= 1.0), "{text}");
        assert!(sample(&text, "mimeo_follower_replication_seconds_sum", &label(f)).unwrap() > 0.0);
        let peer = format!("{node},peer=\"{}\"", addrs[f].0);
        assert_eq!(
            sample(&text, "mimeo_peer_connected", &peer),
            Some(1.0),
            "{text}"
        );
        assert!(sample(&text, "mimeo_peer_sent_messages_total", &peer).unwrap() > 0.0);
        assert!(sample(&text, "mimeo_peer_dropped_messages_total", &peer).is_some());
        assert!(sample(&text, "mimeo_peer_reconnects_total", &peer).is_some());
    }
    // A follower exports no lag table (only the leader knows it).
    let (follower_id, _, follower_metrics) = &addrs[followers[0]];
    let text = scrape(*follower_metrics);
    assert_eq!(
        sample(
            &text,
            "mimeo_role",
            &format!("node=\"{follower_id}\",role=\"follower\"")
        ),
        Some(1.0)
    );
    assert!(!text.contains("mimeo_follower_lag_entries{"), "{text}");

    // Kill one follower: the quorum still acknowledges writes, and the
    // leader reports the dead follower falling behind.
    let dead = followers[1];
    drop(nodes[dead].take()); // SIGKILL
    let alive: Vec<SocketAddr> = (0..3).filter(|&i| i != dead).map(|i| all[i]).collect();
    for i in 0..10 {
        put_until_acknowledged(dir.path(), &alive, &format!("after-{i}"));
    }
    let live = followers[0];
    scrape_until(leader_metrics, "the dead follower's lag", |text| {
        sample(text, "mimeo_follower_lag_entries", &label(dead)).is_some_and(|n| n >= 10.0)
            && sample(text, "mimeo_follower_lag_seconds", &label(dead)).is_some_and(|s| s > 0.0)
            && sample(text, "mimeo_follower_lag_entries", &label(live)) == Some(0.0)
    });
}
