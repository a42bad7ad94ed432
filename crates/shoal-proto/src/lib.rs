//! The shoal wire protocol: messages between clients, the scheduler and
//! workers, the frames that carry them, and the handshake that opens every
//! connection. Pure: serde and postcard, no runtime and no I/O; the network
//! layer feeds bytes in and writes bytes out.
//!
//! # Tour
//!
//! - Messages: [`ToScheduler`] / [`FromScheduler`] between clients and the
//!   scheduler, [`ToWorker`] / [`FromWorker`] between the scheduler and
//!   workers, [`PeerRequest`] / [`PeerReply`] between workers.
//! - Frames: a 4-byte little-endian body length, a kind byte, the body.
//!   [`encode_message`] and [`encode_raw`] append frames to a buffer,
//!   [`FrameDecoder`] splits received bytes back into [`Frame`]s (capped at
//!   [`DEFAULT_MAX_FRAME`] unless told otherwise), and [`decode_message`]
//!   turns a message body back into a message.
//! - Handshake: the connecting side sends a [`Hello`] (magic, version, role,
//!   name, token); the other side checks it with [`decode_hello`] and
//!   [`check_hello`] and answers with a [`HelloReply`].
//! - Addresses: [`PeerAddress`] is `tcp://host:port`, parsed once where
//!   users and peers give it.
//! - Errors: everything fails with a [`ProtoError`]; none of it panics on
//!   bad input.
//!
//! # Example
//!
//! ```
//! use shoal_proto::{FrameDecoder, FrameKind, ToScheduler, decode_message, encode_message};
//!
//! let mut wire = Vec::new();
//! encode_message(&ToScheduler::Release(vec![]), &mut wire)?;
//!
//! let mut decoder = FrameDecoder::default();
//! decoder.push(&wire);
//! let frame = decoder.next_frame()?.expect("the whole frame was pushed");
//! assert_eq!(frame.kind, FrameKind::Message);
//! let msg: ToScheduler = decode_message(&frame.body)?;
//! assert_eq!(msg, ToScheduler::Release(vec![]));
//! assert_eq!(decoder.next_frame()?, None);
//! # Ok::<(), shoal_proto::ProtoError>(())
//! ```

mod address;
mod frame;
mod handshake;
mod msg;

pub use address::{AddressError, PeerAddress};

pub use frame::{
    DEFAULT_MAX_FRAME, Frame, FrameDecoder, FrameKind, HEADER_LEN, decode_message, encode_message, encode_raw,
    raw_header,
};
pub use handshake::{
    HandshakeError, Hello, HelloReply, MAGIC, PROTOCOL_VERSION, Role, check_hello, check_reply, decode_hello,
};
pub use msg::*;

/// Why bytes could not be framed, encoded, decoded or accepted.
///
/// All but [`ProtoError::Encode`] mean the peer sent something this side
/// cannot use: close that connection and log the error; retrying the same
/// bytes does not help.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A frame's declared body length is over the cap (or, when encoding,
    /// over `u32::MAX`).
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The declared (or attempted) body length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A frame's kind byte is none of [`FrameKind`].
    #[error("unknown frame kind {0:#04x}")]
    UnknownFrameKind(u8),
    /// A message body is not a valid encoding of the expected message type.
    #[error("malformed message")]
    Malformed {
        /// What postcard found wrong.
        source: postcard::Error,
    },
    /// A message body holds a valid message and then more bytes.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A value could not be encoded (a bug on the sending side, not the peer's).
    #[error("message could not be encoded")]
    Encode {
        /// What postcard found wrong.
        source: postcard::Error,
    },
    /// The handshake failed.
    #[error("handshake failed")]
    Handshake(#[from] HandshakeError),
}
