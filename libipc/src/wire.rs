//! The wire format, as pure functions the host tests exercise.
//!
//! A request or reply is postcard bytes ([`encode`], [`decode`]). On the
//! kernel transport the bytes travel as message words: word 0 holds the length
//! in bytes, words 1.. the bytes, little-endian, eight to a word, the last
//! word padded with zeros. Words 0..3 travel in registers, the rest in the
//! IPC buffer (`abi::IpcBuffer::words[i]` is message word `i`), up to
//! `abi::MSG_MAX_WORDS` words. The request's `MsgInfo` label is the interface
//! id; a reply's label is [`REPLY_OK`] or a [`RemoteError`] code (with no
//! words).
//!
//! Everything that arrives is hostile: [`unpack`] and [`decode`] check every
//! length and reject what is not exactly one canonical encoding.

use alloc::vec::Vec;

use abi::{MSG_MAX_WORDS, MSG_REG_WORDS, MsgInfo};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Dispatch, IpcError, RemoteError};

/// Bytes one message can carry: every word but the length word.
pub const MAX_PAYLOAD_BYTES: usize = (MSG_MAX_WORDS - 1) * 8;

/// The reply label meaning "the words hold the reply".
pub const REPLY_OK: u32 = 0;

/// One message as the kernel hands it over in registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The badge of the capability the sender used (0 if unbadged).
    pub badge: u64,
    /// Label, word count and capability count.
    pub info: MsgInfo,
    /// Message words 0..3; words 4.. are in the IPC buffer.
    pub words: [u64; MSG_REG_WORDS],
}

/// Message words needed for `len` bytes: the length word and the data words.
pub const fn words_for(len: usize) -> usize {
    1 + len.div_ceil(8)
}

/// Encodes a value as postcard bytes.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, IpcError> {
    postcard::to_allocvec(value).map_err(|_| IpcError::Encode)
}

/// Decodes postcard bytes that must hold exactly one `T` (trailing bytes are
/// an error, so every message has one encoding).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, IpcError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(IpcError::Decode),
    }
}

/// Packs `bytes` into message words at the start of `out`; returns how many
/// words the message has ([`words_for`]).
///
/// Fails with [`IpcError::MessageTooLong`] when the bytes exceed
/// [`MAX_PAYLOAD_BYTES`] or the words do not fit in `out`.
pub fn pack(bytes: &[u8], out: &mut [u64]) -> Result<usize, IpcError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(IpcError::MessageTooLong);
    }
    let n = words_for(bytes.len());
    let Some((len_word, data)) = out.get_mut(..n).and_then(|w| w.split_first_mut()) else {
        return Err(IpcError::MessageTooLong);
    };
    *len_word = bytes.len() as u64;
    for (word, chunk) in data.iter_mut().zip(bytes.chunks(8)) {
        let mut le = [0u8; 8];
        le[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(le);
    }
    Ok(n)
}

/// Unpacks the bytes of a message of exactly `words.len()` words.
///
/// Fails with [`IpcError::MessageTooLong`] beyond `MSG_MAX_WORDS` words, and
/// with [`IpcError::Decode`] when the length word does not match the word
/// count or the padding is not zero.
pub fn unpack(words: &[u64]) -> Result<Vec<u8>, IpcError> {
    if words.len() > MSG_MAX_WORDS {
        return Err(IpcError::MessageTooLong);
    }
    let (&len, data) = words.split_first().ok_or(IpcError::Decode)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= MAX_PAYLOAD_BYTES && words_for(len) == words.len())
        .ok_or(IpcError::Decode)?;
    let mut bytes = Vec::with_capacity(data.len() * 8);
    for word in data {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    if bytes[len..].iter().any(|&b| b != 0) {
        return Err(IpcError::Decode);
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// Server side, receiving: the request bytes of a message, or the error to
/// reply with.
pub fn request_bytes(words: &[u64]) -> Result<Vec<u8>, RemoteError> {
    unpack(words).map_err(|_| RemoteError::BadMessage)
}

/// Server side, replying: packs a dispatch result into `out`; returns the
/// reply label and word count. A reply too long for `out` becomes
/// [`RemoteError::ReplyTooLong`].
pub fn pack_reply(result: &Result<Vec<u8>, RemoteError>, out: &mut [u64]) -> (u32, usize) {
    match result {
        Ok(bytes) => match pack(bytes, out) {
            Ok(n) => (REPLY_OK, n),
            Err(_) => (RemoteError::ReplyTooLong.code(), 0),
        },
        Err(e) => (e.code(), 0),
    }
}

/// Client side: the reply bytes of a reply message, or the error it reports.
pub fn reply_bytes(label: u32, words: &[u64]) -> Result<Vec<u8>, IpcError> {
    if label == REPLY_OK {
        unpack(words)
    } else {
        Err(RemoteError::from_code(label).map_or(IpcError::Decode, IpcError::from))
    }
}

/// One whole server turn over message words, as the kernel serve loop does it
/// (there the IPC buffer is released while `server` runs): reads the request
/// in `words[..received]` on `interface`, dispatches, writes the reply into
/// `words`; returns the reply label and word count.
pub fn answer<D: Dispatch + ?Sized>(server: &mut D, interface: u32, words: &mut [u64], received: usize) -> (u32, usize) {
    let request = match words.get(..received) {
        Some(request) => request_bytes(request),
        None => Err(RemoteError::BadMessage),
    };
    let result = request.and_then(|bytes| server.dispatch(interface, &bytes));
    pack_reply(&result, words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn packing_round_trips_every_length() {
        let mut words = [0u64; MSG_MAX_WORDS];
        for len in 0..=MAX_PAYLOAD_BYTES {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            words.fill(u64::MAX);
            let n = pack(&bytes, &mut words).unwrap();
            assert_eq!(n, words_for(len));
            assert!(n <= MSG_MAX_WORDS);
            assert_eq!(words[0], len as u64);
            assert_eq!(unpack(&words[..n]).unwrap(), bytes, "length {len}");
        }
    }

    #[test]
    fn packing_rejects_over_max() {
        let mut words = [0u64; MSG_MAX_WORDS + 8];
        let bytes = vec![0xaa; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(pack(&bytes, &mut words), Err(IpcError::MessageTooLong));
        // A short output is also too long for this message.
        assert_eq!(pack(&[1; 25], &mut [0; 4]), Err(IpcError::MessageTooLong));
        assert_eq!(pack(&[1; 24], &mut [0; 4]), Ok(4));
        assert_eq!(unpack(&[0; MSG_MAX_WORDS + 1]), Err(IpcError::MessageTooLong));
    }

    #[test]
    fn unpack_rejects_bad_framing() {
        assert_eq!(unpack(&[]), Err(IpcError::Decode));
        assert_eq!(unpack(&[0]), Ok(vec![]));
        // Length says 9 bytes, but only one data word.
        assert_eq!(unpack(&[9, 0]), Err(IpcError::Decode));
        // Length says 1 byte, but two data words.
        assert_eq!(unpack(&[1, 0, 0]), Err(IpcError::Decode));
        // Non-zero padding.
        assert_eq!(unpack(&[1, 0x0100]), Err(IpcError::Decode));
        assert_eq!(unpack(&[1, 0x00ff]), Ok(vec![0xff]));
        assert_eq!(unpack(&[u64::MAX, 0]), Err(IpcError::Decode));
    }

    #[test]
    fn unpack_never_panics_on_random_words() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let n = (next() % 12) as usize;
            let mut words: Vec<u64> = (0..n).map(|_| next()).collect();
            if n > 0 && next() % 2 == 0 {
                words[0] %= 100; // plausible lengths reach the padding check
            }
            if let Ok(bytes) = unpack(&words) {
                let mut again = [0u64; 12];
                let m = pack(&bytes, &mut again).unwrap();
                assert_eq!(&again[..m], &words[..]);
            }
        }
    }

    #[test]
    fn decode_rejects_trailing_bytes() {
        let bytes = encode(&7u32).unwrap();
        assert_eq!(decode::<u32>(&bytes), Ok(7));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode::<u32>(&longer), Err(IpcError::Decode));
        assert_eq!(decode::<u32>(&[]), Err(IpcError::Decode));
    }

    #[test]
    fn reply_labels() {
        assert_eq!(reply_bytes(REPLY_OK, &[0]), Ok(vec![]));
        assert_eq!(reply_bytes(RemoteError::WrongInterface.code(), &[]), Err(IpcError::WrongInterface));
        assert_eq!(
            reply_bytes(RemoteError::BadRequest.code(), &[]),
            Err(IpcError::ServerError(RemoteError::BadRequest))
        );
        assert_eq!(reply_bytes(0xdead, &[]), Err(IpcError::Decode));
        let mut out = [0u64; 4];
        assert_eq!(pack_reply(&Ok(vec![1, 2, 3]), &mut out), (REPLY_OK, 2));
        assert_eq!(pack_reply(&Ok(vec![1; 100]), &mut out), (RemoteError::ReplyTooLong.code(), 0));
        assert_eq!(pack_reply(&Err(RemoteError::BadRequest), &mut out), (RemoteError::BadRequest.code(), 0));
    }
}
