//! Length-prefixed frames: a 4-byte big-endian payload length followed by
//! that many bytes of postcard. The length is checked against a maximum
//! before any buffer is allocated, so a hostile length cannot exhaust memory.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The default maximum frame payload: 4 MiB.
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;

/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame announces (or would need) more bytes than allowed.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced or encoded payload length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The payload is not a valid encoding of the expected message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream ended before a whole frame arrived.
    #[error("stream ended after {got} of {expected} bytes of a frame")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes the frame needed.
        expected: usize,
    },
    /// The transport failed (connection lost, stream reset...).
    #[error("transport error: {0}")]
    Transport(String),
}

/// Encodes `message` as one frame (length prefix included).
pub fn encode_frame<T: Serialize>(message: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = postcard::to_extend(message, vec![0; FRAME_HEADER_LEN])
        .map_err(|e| FrameError::Malformed(format!("cannot encode: {e}")))?;
    let len = buf.len() - FRAME_HEADER_LEN;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    buf[..FRAME_HEADER_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf)
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame, and otherwise the
/// message and the number of bytes it took. The length is checked against
/// `max` as soon as the prefix is complete, before the payload is needed.
pub fn decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(len) = frame_len(buf, max)? else {
        return Ok(None);
    };
    let end = FRAME_HEADER_LEN + len;
    if buf.len() < end {
        return Ok(None);
    }
    let message = decode_payload(&buf[FRAME_HEADER_LEN..end])?;
    Ok(Some((message, end)))
}

/// The payload length announced by a frame prefix, if `buf` holds one.
fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(Some(len))
}

/// Decodes a whole payload; trailing bytes make it malformed, since they
/// mean sender and receiver disagree about the message layout.
fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (message, rest) =
        postcard::take_from_bytes(payload).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(message)
}

/// Writes one frame to a QUIC stream.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
    max: usize,
) -> Result<(), FrameError> {
    let frame = encode_frame(message, max)?;
    send.write_all(&frame)
        .await
        .map_err(|e| FrameError::Transport(e.to_string()))
}

/// Reads one frame from a QUIC stream.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<T, FrameError> {
    let len = read_frame_len(recv, max).await?;
    read_frame_payload(recv, len).await
}

/// Reads a frame's length prefix and checks it against `max`.
pub(crate) async fn read_frame_len(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<usize, FrameError> {
    let mut prefix = [0u8; FRAME_HEADER_LEN];
    read_exact(recv, &mut prefix).await?;
    Ok(frame_len(&prefix, max)?.unwrap_or_default())
}

/// Reads a payload of `len` bytes and decodes it. The buffer grows as the
/// bytes arrive, so a sender that announces a large frame and sends little
/// costs what it sent, not what it announced.
pub(crate) async fn read_frame_payload<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    len: usize,
) -> Result<T, FrameError> {
    let mut payload = Vec::with_capacity(len.min(READ_CHUNK));
    while payload.len() < len {
        let chunk = recv
            .read_chunk(len - payload.len(), true)
            .await
            .map_err(|e| FrameError::Transport(e.to_string()))?;
        match chunk {
            Some(chunk) => payload.extend_from_slice(&chunk.bytes),
            None => {
                return Err(FrameError::Truncated {
                    got: payload.len(),
                    expected: len,
                })
            }
        }
    }
    decode_payload(&payload)
}

/// The buffer a payload starts with; it grows as bytes arrive.
const READ_CHUNK: usize = 64 * 1024;

async fn read_exact(recv: &mut quinn::RecvStream, buf: &mut [u8]) -> Result<(), FrameError> {
    recv.read_exact(buf).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(got) => FrameError::Truncated {
            got,
            expected: buf.len(),
        },
        quinn::ReadExactError::ReadError(e) => FrameError::Transport(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_partial_frames() {
        let message = (7u64, String::from("mimeo"), vec![1u8, 2, 3]);
        let frame = encode_frame(&message, DEFAULT_MAX_FRAME).unwrap();
        for cut in 0..frame.len() {
            let partial = decode_frame::<(u64, String, Vec<u8>)>(&frame[..cut], DEFAULT_MAX_FRAME);
            assert!(matches!(partial, Ok(None)), "cut at {cut}");
        }
        let (decoded, used) = decode_frame(&frame, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(message, decoded);
    }

    #[test]
    fn oversized_length_is_refused_before_the_payload_arrives() {
        let prefix = 1_000_000u32.to_be_bytes();
        let result = decode_frame::<u8>(&prefix, 1000);
        assert!(matches!(
            result,
            Err(FrameError::TooLarge {
                len: 1_000_000,
                max: 1000
            })
        ));
    }

    #[test]
    fn oversized_message_is_not_encoded() {
        let result = encode_frame(&vec![0u8; 2000], 1000);
        assert!(matches!(result, Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut frame = encode_frame(&5u8, 100).unwrap();
        frame.push(0);
        frame[3] += 1;
        assert!(matches!(
            decode_frame::<u8>(&frame, 100),
            Err(FrameError::Malformed(_))
        ));
    }
}
