//! Feeds arbitrary bytes to the frame decoder for every message type a node
//! accepts from the network. The decoder must never panic, and must never
//! allocate beyond the maximum frame size whatever the length prefix says.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mimeo_wire::{
    decode_frame, encode_frame, AdminRequest, ClientRequest, ClientResponse, Hello, PeerMessage,
};

/// A small maximum, so oversized prefixes are common in the corpus.
const MAX: usize = 64 * 1024;

fn check<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(Some((message, used))) = decode_frame::<T>(data, MAX) {
        assert!(used <= data.len());
        // Whatever decodes re-encodes to a frame that decodes to the same.
        let frame = encode_frame(&message, MAX).expect("a decoded message re-encodes");
        let (again, _) = decode_frame::<T>(&frame, MAX).unwrap().unwrap();
        assert_eq!(message, again);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Hello>(data);
    check::<ClientRequest>(data);
    check::<ClientResponse>(data);
    check::<AdminRequest>(data);
    check::<PeerMessage>(data);
});
