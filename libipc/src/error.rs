//! The errors of an IPC call: what went wrong on the caller's side
//! ([`IpcError`]) and what a server reports back in its reply
//! ([`RemoteError`]).

use core::fmt;

/// Why an IPC call failed, as the caller sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpcError {
    /// The kernel refused a system call.
    Kernel(abi::Error),
    /// The request could not be encoded.
    Encode,
    /// The reply could not be decoded (malformed bytes, framing or reply kind).
    Decode,
    /// The server does not implement the interface the call was made on.
    WrongInterface,
    /// The request does not fit in one message ([`crate::wire::MAX_PAYLOAD_BYTES`]).
    MessageTooLong,
    /// The other end is gone (in-process server dropped).
    Closed,
    /// The server received the call but could not answer it.
    ServerError(RemoteError),
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcError::Kernel(e) => write!(f, "kernel: {e}"),
            IpcError::Encode => f.write_str("request could not be encoded"),
            IpcError::Decode => f.write_str("reply could not be decoded"),
            IpcError::WrongInterface => f.write_str("server does not implement this interface"),
            IpcError::MessageTooLong => {
                write!(f, "request longer than one message ({} bytes)", crate::wire::MAX_PAYLOAD_BYTES)
            }
            IpcError::Closed => f.write_str("server closed"),
            IpcError::ServerError(e) => write!(f, "server: {e}"),
        }
    }
}

impl core::error::Error for IpcError {}

impl From<abi::Error> for IpcError {
    fn from(e: abi::Error) -> Self {
        IpcError::Kernel(e)
    }
}

impl From<RemoteError> for IpcError {
    /// A server's report as the caller sees it: a wrong interface is its own
    /// variant, everything else is a [`IpcError::ServerError`].
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::WrongInterface => IpcError::WrongInterface,
            other => IpcError::ServerError(other),
        }
    }
}

/// Why a server could not answer a request; travels back in the reply (on the
/// kernel transport as the reply's label, [`RemoteError::code`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteError {
    /// The request bytes are not a request of the interface.
    BadRequest = 1,
    /// The server does not implement the interface named in the message.
    WrongInterface = 2,
    /// The reply is longer than one message.
    ReplyTooLong = 3,
    /// The server could not encode its reply.
    EncodeFailed = 4,
    /// The message framing is malformed (length word and word count disagree).
    BadMessage = 5,
}

impl RemoteError {
    /// The code on the wire; never 0, which means success.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// Reads a code from the wire; `None` for 0 and codes this build does not know.
    pub const fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => RemoteError::BadRequest,
            2 => RemoteError::WrongInterface,
            3 => RemoteError::ReplyTooLong,
            4 => RemoteError::EncodeFailed,
            5 => RemoteError::BadMessage,
            _ => return None,
        })
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteError::BadRequest => "request does not decode as an operation of the interface",
            RemoteError::WrongInterface => "interface not implemented",
            RemoteError::ReplyTooLong => "reply longer than one message",
            RemoteError::EncodeFailed => "reply could not be encoded",
            RemoteError::BadMessage => "malformed message framing",
        })
    }
}

impl core::error::Error for RemoteError {}
