//! How many bytes a peer message takes once postcard-encoded, so that the
//! core never builds one the transport would refuse
//! ([`Config::max_message_bytes`](crate::Config::max_message_bytes)).
//!
//! postcard writes every integer as a varint (at most 10 bytes for a
//! `u64`), every enum variant as a varint tag and every byte string as a
//! varint length followed by the bytes. The figures here are exact for log
//! entries and upper bounds for message headers.

use crate::types::{Command, LogEntry};

/// The most bytes a `u64` varint takes.
const MAX_VARINT: usize = 10;

/// Bytes of an `Append` message besides its entries, at most: the variant
/// tag, the term, `prev` (two integers), the entry count, the commit
/// index, and room for fields added later.
pub const APPEND_OVERHEAD: usize = 96;

/// Bytes of an `InstallSnapshot` message besides its data, at most: the
/// variant tag, the term, `last` (two integers), the offset, the data's
/// length, `done`, and room for fields added later.
pub const SNAPSHOT_OVERHEAD: usize = 96;

/// Bytes of a varint holding `n`.
fn varint_len(n: u64) -> usize {
    (64 - n.max(1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a byte string of `len` bytes.
fn bytes_len(len: usize) -> usize {
    varint_len(len as u64) + len
}

/// The postcard encoding length of `entry`, exactly.
pub(crate) fn entry_bytes(entry: &LogEntry) -> usize {
    let position = varint_len(entry.position.term) + varint_len(entry.position.index);
    let command = match &entry.command {
        Command::Noop => 0,
        Command::Put { key, value } => bytes_len(key.len()) + bytes_len(value.len()),
        Command::Delete { key } => bytes_len(key.len()),
    };
    position + 1 + command
}

/// The most bytes an `Append` carrying a single put of a `key_bytes` key
/// and a `value_bytes` value can take, at any position. A node must accept
/// only values for which this fits in
/// [`Config::max_message_bytes`](crate::Config::max_message_bytes), or an
/// entry holding one could never be replicated.
pub fn single_put_append_bytes(key_bytes: usize, value_bytes: usize) -> usize {
    APPEND_OVERHEAD + 2 * MAX_VARINT + 1 + bytes_len(key_bytes) + bytes_len(value_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::PeerMsg;
    use mimeo_storage::LogPosition;

    #[test]
    fn entry_sizes_are_exact_and_headers_bounded() {
        let entries = [
            LogEntry {
                position: LogPosition::new(0, 0),
                command: Command::Noop,
            },
            LogEntry {
                position: LogPosition::new(u64::MAX, u64::MAX),
                command: Command::Put {
                    key: vec![1; 300],
                    value: vec![2; 70_000],
                },
            },
            LogEntry {
                position: LogPosition::new(127, 128),
                command: Command::Delete { key: vec![3; 127] },
            },
        ];
        for e in &entries {
            assert_eq!(
                postcard::to_allocvec(e).unwrap().len(),
                entry_bytes(e),
                "{e:?}"
            );
        }
        let append = PeerMsg::Append {
            term: u64::MAX,
            prev: LogPosition::new(u64::MAX, u64::MAX),
            entries: entries.to_vec(),
            commit: u64::MAX,
        };
        let sum: usize = entries.iter().map(entry_bytes).sum();
        assert!(postcard::to_allocvec(&append).unwrap().len() <= APPEND_OVERHEAD + sum);
        let chunk = PeerMsg::InstallSnapshot {
            term: u64::MAX,
            last: LogPosition::new(u64::MAX, u64::MAX),
            offset: u64::MAX,
            data: vec![0; 100_000],
            done: true,
        };
        assert!(postcard::to_allocvec(&chunk).unwrap().len() <= SNAPSHOT_OVERHEAD + 100_000);
        let one = PeerMsg::Append {
            term: u64::MAX,
            prev: LogPosition::new(u64::MAX, u64::MAX),
            entries: vec![LogEntry {
                position: LogPosition::new(u64::MAX, u64::MAX),
                command: Command::Put {
                    key: vec![0; 1024],
                    value: vec![0; 1 << 20],
                },
            }],
            commit: u64::MAX,
        };
        assert!(
            postcard::to_allocvec(&one).unwrap().len() <= single_put_append_bytes(1024, 1 << 20)
        );
    }
}
