//! The placement function is part of the on-disk format: a key placed on
//! some nodes must be found there by every later release. This pins the
//! ring's fingerprint and the preference lists of 40 keys on 5 nodes x 64
//! vnodes, N = 3, against `testdata/placement.txt`.
//!
//! Regenerate (only with a [`HASH_VERSION`] bump) with
//! `MIMEO_BLESS=1 cargo test -p mimeo-leaderless --test placement`.

use mimeo_leaderless::{NodeId, Ring, HASH_VERSION};

fn table() -> String {
    let nodes: Vec<NodeId> = (1..=5).map(|i| NodeId::from(format!("n{i}"))).collect();
    let ring = Ring::new(&nodes, 64).expect("valid ring");
    let mut out = format!(
        "# placement hash version {HASH_VERSION}; nodes n1..n5, 64 vnodes, N = 3\n# key position preference-list | fallbacks\nfingerprint {:016x}\n",
        ring.fingerprint()
    );
    let mut keys: Vec<Vec<u8>> = (0..38).map(|k| format!("key-{k}").into_bytes()).collect();
    keys.push(Vec::new());
    keys.push(vec![0xff, 0x00, 0x80]);
    for key in keys {
        let pref: Vec<String> = ring
            .preference_list(&key, 3)
            .iter()
            .map(|n| n.to_string())
            .collect();
        let fall: Vec<String> = ring
            .fallbacks(&key, 3)
            .iter()
            .map(|n| n.to_string())
            .collect();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!(
            "{hex:<12} {:016x} {} | {}\n",
            Ring::position(&key),
            pref.join(","),
            fall.join(",")
        ));
    }
    out
}

#[test]
fn placement_is_pinned() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/placement.txt");
    let now = table();
    if std::env::var_os("MIMEO_BLESS").is_some() {
        std::fs::write(path, &now).expect("write the golden table");
        return;
    }
    let golden = std::fs::read_to_string(path).expect("testdata/placement.txt");
    assert_eq!(
        now, golden,
        "placement changed: keys would move between nodes; bump HASH_VERSION (a ring change is refused at restart) and bless the table"
    );
}
