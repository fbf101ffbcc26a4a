//! No provably stale read (issue 23, DESIGN.md §5: "what W + R > N with
//! strict quorums promises"): under the siblings policy with `sloppy =
//! false` and W + R > N, a read that *began after* a write was
//! acknowledged returns that write or a later version: the read's context
//! contains the write's dot (as a sibling, or in the history of what
//! superseded it). Linearizability is not claimed: writes that ended
//! `unknown`, and reads concurrent with writes, are not constrained.

use super::MadeWrite;
use crate::cluster::DoneRead;

pub(crate) fn check(made: &[MadeWrite], reads: &[DoneRead]) -> Result<(), String> {
    for read in reads {
        for w in made.iter().filter(|w| w.key == read.key) {
            let (Some(dot), Some(acked_at)) = (&w.key_dot, w.acked_at) else {
                continue;
            };
            if acked_at < read.started && !read.context.contains(dot) {
                return Err(format!(
                    "stale read: a read of {:?} that began at {} ms returned context {}, without {dot}, acknowledged at {} ms",
                    String::from_utf8_lossy(&read.key),
                    read.started.0,
                    read.context,
                    acked_at.0
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn rejects_a_read_that_misses_an_earlier_write() {
    use mimeo_leaderless::{Dot, Millis, VersionVector};
    let w = MadeWrite {
        key: b"k".to_vec(),
        value: Some(b"y".to_vec()),
        context: VersionVector::new(),
        key_dot: Some(Dot::new("b.1", 1)),
        acked: true,
        acked_at: Some(Millis(5)),
    };
    let read = |started| DoneRead {
        key: b"k".to_vec(),
        started: Millis(started),
        context: VersionVector::new(),
    };
    let err = check(std::slice::from_ref(&w), &[read(6)]).unwrap_err();
    assert!(err.contains("stale read"), "{err}");
    // Concurrent with the write: not constrained.
    assert!(check(&[w], &[read(5)]).is_ok());
}
