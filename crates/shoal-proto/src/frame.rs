//! Length-delimited frames, without I/O.
//!
//! A connection carries a stream of frames. Each frame is
//!
//! ```text
//! +----------------+------+----------------+
//! | len: u32 (LE)  | kind | body: len bytes |
//! +----------------+------+----------------+
//!      4 bytes      1 byte
//! ```
//!
//! `len` counts the body only. A [`FrameKind::Message`] body is one
//! postcard-encoded message; a [`FrameKind::Raw`] body is bulk bytes (a task
//! result) that are passed on as they are and never re-encoded.
//!
//! Writing is [`encode_message`] / [`encode_raw`] (or [`raw_header`] followed
//! by the bytes themselves, for vectored writes); reading is a
//! [`FrameDecoder`] fed with whatever the socket returned.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ProtoError;

/// Bytes before the body of every frame: the 4-byte length and the kind byte.
pub const HEADER_LEN: usize = 5;

/// The largest frame body a [`FrameDecoder::default`] accepts: 256 MiB.
///
/// Larger results should travel in several raw frames; the cap exists so a
/// hostile or confused peer cannot make the receiver allocate gigabytes with
/// five bytes.
pub const DEFAULT_MAX_FRAME: usize = 256 * 1024 * 1024;

/// Buffer capacity a [`FrameDecoder`] keeps once it is empty again.
const KEEP_CAPACITY: usize = 1024 * 1024;

/// What the body of a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// One postcard-encoded message; read it with [`decode_message`].
    Message = 0,
    /// Bulk bytes, such as a task result, which are never re-encoded.
    Raw = 1,
}

impl FrameKind {
    /// The kind's byte on the wire.
    pub const fn byte(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for FrameKind {
    type Error = ProtoError;

    /// # Errors
    ///
    /// [`ProtoError::UnknownFrameKind`] for any byte but 0 and 1.
    fn try_from(byte: u8) -> Result<FrameKind, ProtoError> {
        match byte {
            0 => Ok(FrameKind::Message),
            1 => Ok(FrameKind::Raw),
            other => Err(ProtoError::UnknownFrameKind(other)),
        }
    }
}

/// One complete frame, as [`FrameDecoder::next_frame`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the body holds.
    pub kind: FrameKind,
    /// The body, without the header.
    pub body: Vec<u8>,
}

/// The header of a frame of `kind` whose body is `len` bytes long.
const fn header(kind: FrameKind, len: u32) -> [u8; HEADER_LEN] {
    let l = len.to_le_bytes();
    [l[0], l[1], l[2], l[3], kind.byte()]
}

/// The header of a raw frame with a body of `len` bytes.
///
/// The network layer writes this and then the bytes themselves in one
/// vectored write, so a large result is never copied into a frame buffer.
///
/// # Examples
///
/// ```
/// assert_eq!(shoal_proto::raw_header(3), [3, 0, 0, 0, 1]);
/// ```
pub const fn raw_header(len: u32) -> [u8; HEADER_LEN] {
    header(FrameKind::Raw, len)
}

/// Appends one [`FrameKind::Message`] frame holding `msg` to `out`.
///
/// The message is encoded straight into `out`, after a placeholder header that
/// is filled in once the length is known, so there is no intermediate buffer.
///
/// # Errors
///
/// [`ProtoError::Encode`] if postcard cannot encode the value (a sequence of
/// unknown length, for instance), and [`ProtoError::FrameTooLarge`] if the
/// encoding is longer than `u32::MAX` bytes. On error `out` is left as it was.
pub fn encode_message<T: Serialize + ?Sized>(msg: &T, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(source) = postcard::to_io(msg, &mut *out) {
        out.truncate(start);
        return Err(ProtoError::Encode { source });
    }
    let len = out.len() - start - HEADER_LEN;
    let Ok(len32) = u32::try_from(len) else {
        out.truncate(start);
        return Err(ProtoError::FrameTooLarge { len, max: u32::MAX as usize });
    };
    out[start..start + HEADER_LEN].copy_from_slice(&header(FrameKind::Message, len32));
    Ok(())
}

/// Appends one [`FrameKind::Raw`] frame holding a copy of `bytes` to `out`.
///
/// To send large bodies without the copy, write [`raw_header`] and the bytes
/// with one vectored write instead.
///
/// # Errors
///
/// [`ProtoError::FrameTooLarge`] if `bytes` is longer than `u32::MAX`; `out`
/// is then left as it was.
pub fn encode_raw(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), ProtoError> {
    let len32 = u32::try_from(bytes.len())
        .map_err(|_| ProtoError::FrameTooLarge { len: bytes.len(), max: u32::MAX as usize })?;
    out.reserve(HEADER_LEN + bytes.len());
    out.extend_from_slice(&raw_header(len32));
    out.extend_from_slice(bytes);
    Ok(())
}

/// Decodes the body of a [`FrameKind::Message`] frame.
///
/// # Errors
///
/// [`ProtoError::Malformed`] if the bytes are not an encoding of `T`, and
/// [`ProtoError::TrailingBytes`] if they are but more bytes follow it (a
/// frame holds exactly one message, so extra bytes mean the two sides
/// disagree about the message's layout). Never panics, whatever the bytes.
pub fn decode_message<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    let (msg, rest) = postcard::take_from_bytes(body).map_err(|source| ProtoError::Malformed { source })?;
    if rest.is_empty() { Ok(msg) } else { Err(ProtoError::TrailingBytes(rest.len())) }
}

/// Splits a byte stream into [`Frame`]s, however the bytes arrive.
///
/// Feed it with [`push`](FrameDecoder::push) whatever a read returned, then
/// call [`next_frame`](FrameDecoder::next_frame) until it gives `Ok(None)`.
///
/// An error means the stream cannot be trusted any more (there is no way to
/// find the next frame boundary after a bad header): close the connection.
/// The decoder keeps returning the same error.
///
/// # Performance
///
/// Consumed bytes are not shifted out on every frame, which would make a
/// buffer of many small frames quadratic; the buffer is compacted on
/// [`push`](FrameDecoder::push), and only once the consumed part is at least
/// as long as the rest, so every byte is moved at most about once. Each body
/// is copied once out of the buffer.
///
/// # Examples
///
/// ```
/// use shoal_proto::{FrameDecoder, FrameKind, encode_raw};
///
/// let mut wire = Vec::new();
/// encode_raw(b"result", &mut wire)?;
/// let mut decoder = FrameDecoder::default();
/// decoder.push(&wire[..3]);
/// assert_eq!(decoder.next_frame()?, None); // not even the header yet
/// decoder.push(&wire[3..]);
/// let frame = decoder.next_frame()?.expect("a whole frame was pushed");
/// assert_eq!((frame.kind, &frame.body[..]), (FrameKind::Raw, &b"result"[..]));
/// # Ok::<(), shoal_proto::ProtoError>(())
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    /// Bytes received; those before `start` are consumed.
    buf: Vec<u8>,
    /// Where the next frame's header starts in `buf`.
    start: usize,
    /// The largest body accepted.
    max_frame_len: usize,
}

impl Default for FrameDecoder {
    /// A decoder with the [`DEFAULT_MAX_FRAME`] cap.
    fn default() -> FrameDecoder {
        FrameDecoder::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder that rejects frames whose body is longer than `max_frame_len`.
    pub fn new(max_frame_len: usize) -> FrameDecoder {
        FrameDecoder { buf: Vec::new(), start: 0, max_frame_len }
    }

    /// The largest body this decoder accepts.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Bytes pushed but not yet returned as frames.
    ///
    /// Nonzero when the peer closes the connection means it closed in the
    /// middle of a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() - self.start {
            // The consumed part is at least as long as the live part, so the
            // move costs no more than the bytes already consumed: amortised O(1)
            // per byte. When everything is consumed this is just a clear.
            self.buf.drain(..self.start);
            self.start = 0;
            if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
                // One large result should not pin its size in every
                // connection's buffer for the rest of the connection.
                self.buf.shrink_to(KEEP_CAPACITY);
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, or `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    ///
    /// As soon as a header is buffered: [`ProtoError::FrameTooLarge`] if it
    /// declares a body longer than the cap (before anything is allocated for
    /// it), and [`ProtoError::UnknownFrameKind`] for a kind byte other than
    /// 0 and 1. The body is not looked at.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        let Some((kind, len)) = self.next_header()? else {
            return Ok(None);
        };
        // Deliberately no `reserve(len)` here: a peer could declare a large
        // (allowed) frame and then send nothing. The buffer grows with what
        // actually arrives.
        let Some(body) = self.buf[self.start + HEADER_LEN..].get(..len) else {
            return Ok(None);
        };
        let frame = Frame { kind, body: body.to_vec() };
        self.start += HEADER_LEN + len;
        Ok(Some(frame))
    }

    /// The kind and body length of the next frame, once its header is
    /// buffered (whether or not its body is), checked as
    /// [`next_frame`](FrameDecoder::next_frame) checks them.
    ///
    /// With [`take_body_start`](FrameDecoder::take_body_start), a reader
    /// can read a large body straight from the connection into memory of
    /// its own instead of through this decoder's buffer.
    ///
    /// # Errors
    ///
    /// As [`next_frame`](FrameDecoder::next_frame).
    pub fn next_header(&self) -> Result<Option<(FrameKind, usize)>, ProtoError> {
        let Some(head) = self.buf[self.start..].first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > self.max_frame_len {
            return Err(ProtoError::FrameTooLarge { len, max: self.max_frame_len });
        }
        Ok(Some((FrameKind::try_from(head[4])?, len)))
    }

    /// Consumes the next frame's header and the part of its body that is
    /// buffered, which is copied to the start of `body`; returns how many
    /// bytes that was. `body` is as long as the body
    /// ([`next_header`](FrameDecoder::next_header) said how long): the
    /// caller reads the rest from the connection into `body[n..]` before
    /// it pushes anything more.
    ///
    /// # Examples
    ///
    /// ```
    /// use shoal_proto::{FrameDecoder, FrameKind, encode_raw};
    ///
    /// let mut wire = Vec::new();
    /// encode_raw(b"a large result", &mut wire)?;
    /// let mut decoder = FrameDecoder::default();
    /// decoder.push(&wire[..8]); // the header and the body's first 3 bytes
    /// let (kind, len) = decoder.next_header()?.expect("the header is here");
    /// assert_eq!((kind, len), (FrameKind::Raw, 14));
    /// let mut body = vec![0; len];
    /// let n = decoder.take_body_start(&mut body);
    /// body[n..].copy_from_slice(&wire[8..]); // as if read from the socket
    /// assert_eq!((n, &body[..]), (3, &b"a large result"[..]));
    /// assert_eq!(decoder.buffered(), 0);
    /// # Ok::<(), shoal_proto::ProtoError>(())
    /// ```
    ///
    /// # Panics
    ///
    /// If no header is buffered (call [`next_header`](FrameDecoder::next_header)
    /// first), or `body` is not as long as the header says.
    pub fn take_body_start(&mut self, body: &mut [u8]) -> usize {
        let head =
            self.buf[self.start..].first_chunk::<HEADER_LEN>().expect("take_body_start without a buffered header");
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        assert_eq!(body.len(), len, "take_body_start: the body is {len} bytes long, not {}", body.len());
        let from = self.start + HEADER_LEN;
        let n = (self.buf.len() - from).min(body.len());
        body[..n].copy_from_slice(&self.buf[from..from + n]);
        self.start = from + n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ToScheduler;
    use shoal_graph::{Key, Token};

    fn drain(decoder: &mut FrameDecoder) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = decoder.next_frame().expect("valid stream") {
            frames.push(frame);
        }
        frames
    }

    #[test]
    fn empty_release_has_a_known_layout() {
        let mut out = Vec::new();
        encode_message(&ToScheduler::Release(vec![]), &mut out).expect("encodes");
        // Body: variant index 1, empty vec.
        assert_eq!(out, [2, 0, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn release_of_one_key_has_a_known_layout() {
        let key = Key::new("a", Token(1 | (300 << 64)), vec![2]);
        let mut out = Vec::new();
        encode_message(&ToScheduler::Release(vec![key]), &mut out).expect("encodes");
        #[rustfmt::skip]
        let expected = [
            9, 0, 0, 0, 0,  // header: 9-byte message body
            1,              // ToScheduler::Release
            1,              // one key
            1, b'a',        // prefix "a"
            1, 0xac, 2,     // token words as varints: 1, 300
            1, 2,           // index [2]
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn raw_frame_layout_and_header_agree() {
        let mut out = vec![0xee]; // appends, never overwrites
        encode_raw(b"xyz", &mut out).expect("small");
        assert_eq!(out, [0xee, 3, 0, 0, 0, 1, b'x', b'y', b'z']);
        assert_eq!(raw_header(0x0102_0304), [4, 3, 2, 1, 1]);
    }

    #[test]
    fn encode_error_leaves_output_untouched() {
        // postcard needs sequence lengths up front; an iterator-backed
        // sequence without one fails to encode.
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(None)?;
                seq.serialize_element(&1u8)?;
                seq.end()
            }
        }
        let mut out = vec![7, 7];
        let err = encode_message(&Unsized, &mut out).expect_err("no length");
        assert!(matches!(err, ProtoError::Encode { .. }), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(out, [7, 7]);
    }

    #[test]
    fn byte_by_byte_feeding_gives_each_frame_exactly_when_complete() {
        let mut wire = Vec::new();
        encode_message(&ToScheduler::Info, &mut wire).expect("encodes");
        let first_end = wire.len();
        encode_raw(b"", &mut wire).expect("small");
        let second_end = wire.len();
        encode_raw(b"abc", &mut wire).expect("small");

        let mut decoder = FrameDecoder::default();
        let mut got = Vec::new();
        for (i, byte) in wire.iter().enumerate() {
            decoder.push(std::slice::from_ref(byte));
            let frames = drain(&mut decoder);
            let fed = i + 1;
            let expect_now = usize::from(fed == first_end || fed == second_end || fed == wire.len());
            assert_eq!(frames.len(), expect_now, "after {fed} bytes");
            got.extend(frames);
        }
        assert_eq!(
            got,
            [
                Frame { kind: FrameKind::Message, body: vec![4] },
                Frame { kind: FrameKind::Raw, body: vec![] },
                Frame { kind: FrameKind::Raw, body: b"abc".to_vec() },
            ]
        );
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn many_frames_in_one_push_then_a_partial_one() {
        let mut wire = Vec::new();
        for i in 0..10u8 {
            encode_raw(&[i; 3], &mut wire).expect("small");
        }
        encode_raw(b"tail", &mut wire).expect("small");
        let mut decoder = FrameDecoder::default();
        decoder.push(&wire[..wire.len() - 2]);
        let frames = drain(&mut decoder);
        assert_eq!(frames.len(), 10);
        assert!(frames.iter().enumerate().all(|(i, f)| f.body == [i as u8; 3]));
        assert_eq!(decoder.buffered(), HEADER_LEN + 2);
        decoder.push(&wire[wire.len() - 2..]);
        assert_eq!(drain(&mut decoder), [Frame { kind: FrameKind::Raw, body: b"tail".to_vec() }]);
    }

    #[test]
    fn cap_is_enforced_from_the_header_alone() {
        let mut decoder = FrameDecoder::new(16);
        assert_eq!(decoder.max_frame_len(), 16);
        // A body of exactly the cap is fine.
        let mut wire = Vec::new();
        encode_raw(&[9; 16], &mut wire).expect("small");
        decoder.push(&wire);
        assert_eq!(drain(&mut decoder).len(), 1);
        // One more is not, and the error comes with only the header pushed.
        decoder.push(&raw_header(17));
        let err = decoder.next_frame().expect_err("over the cap");
        assert!(matches!(err, ProtoError::FrameTooLarge { len: 17, max: 16 }), "{err:?}");
        assert_eq!(err.to_string(), "frame body of 17 bytes exceeds the limit of 16 bytes");
        // The stream is dead: the same error again, not a resynchronisation.
        assert!(matches!(decoder.next_frame(), Err(ProtoError::FrameTooLarge { .. })));
    }

    #[test]
    fn huge_declared_length_does_not_allocate() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&[0xff, 0xff, 0xff, 0xff, 0]);
        assert!(matches!(
            decoder.next_frame(),
            Err(ProtoError::FrameTooLarge { len: 0xffff_ffff, max: DEFAULT_MAX_FRAME })
        ));
        assert!(decoder.buf.capacity() < 1024);
        // Allowed but not yet sent: waits without reserving the declared size.
        let mut decoder = FrameDecoder::default();
        decoder.push(&raw_header(DEFAULT_MAX_FRAME as u32));
        assert_eq!(decoder.next_frame().expect("header is fine"), None);
        assert!(decoder.buf.capacity() < 1024);
    }

    #[test]
    fn a_large_frame_does_not_pin_its_buffer() {
        let mut wire = Vec::new();
        encode_raw(&vec![3; 4 * KEEP_CAPACITY], &mut wire).expect("small enough");
        let mut decoder = FrameDecoder::default();
        decoder.push(&wire);
        assert_eq!(drain(&mut decoder)[0].body.len(), 4 * KEEP_CAPACITY);
        decoder.push(&raw_header(0));
        assert_eq!(drain(&mut decoder), [Frame { kind: FrameKind::Raw, body: vec![] }]);
        assert!(decoder.buf.capacity() <= KEEP_CAPACITY, "capacity {}", decoder.buf.capacity());
    }

    #[test]
    fn unknown_kind_is_an_error_naming_the_byte() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&[0, 0, 0, 0, 7]);
        let err = decoder.next_frame().expect_err("kind 7");
        assert!(matches!(err, ProtoError::UnknownFrameKind(7)), "{err:?}");
        assert_eq!(err.to_string(), "unknown frame kind 0x07");
        assert_eq!(FrameKind::try_from(1).expect("raw"), FrameKind::Raw);
        assert_eq!(FrameKind::Message.byte(), 0);
    }

    #[test]
    fn trailing_bytes_after_a_message_are_an_error() {
        let mut wire = Vec::new();
        encode_message(&ToScheduler::Info, &mut wire).expect("encodes");
        let mut body = wire[HEADER_LEN..].to_vec();
        assert_eq!(decode_message::<ToScheduler>(&body).expect("valid"), ToScheduler::Info);
        body.extend_from_slice(&[0, 0]);
        let err = decode_message::<ToScheduler>(&body).expect_err("two extra bytes");
        assert!(matches!(err, ProtoError::TrailingBytes(2)), "{err:?}");
        assert_eq!(err.to_string(), "2 trailing bytes after the message");
    }

    #[test]
    fn garbage_and_truncation_are_malformed() {
        for body in [&[][..], &[99][..], &[0, 5][..], &[1, 0xff, 0xff, 0xff, 0xff, 0x7f][..]] {
            let err = decode_message::<ToScheduler>(body).expect_err("garbage");
            assert!(matches!(err, ProtoError::Malformed { .. }), "{body:?}: {err:?}");
            assert!(std::error::Error::source(&err).is_some());
        }
    }

    #[test]
    fn consumed_bytes_are_compacted_so_the_buffer_stays_small() {
        let mut wire = Vec::new();
        encode_raw(&[1; 100], &mut wire).expect("small");
        let mut decoder = FrameDecoder::default();
        // Each push completes the previous frame and starts the next, so a
        // partial frame is always carried across compactions.
        let (head, tail) = wire.split_at(37);
        decoder.push(head);
        for _ in 0..10_000 {
            decoder.push(tail);
            decoder.push(head);
            let frames = drain(&mut decoder);
            assert_eq!(frames, [Frame { kind: FrameKind::Raw, body: vec![1; 100] }]);
            assert_eq!(decoder.buffered(), head.len());
        }
        assert!(decoder.buf.capacity() < 4 * wire.len(), "capacity {}", decoder.buf.capacity());
    }

    #[test]
    fn a_body_read_by_the_caller_leaves_the_next_frame_intact_wherever_the_bytes_were_cut() {
        let body: Vec<u8> = (0..40u8).collect();
        let mut wire = Vec::new();
        encode_raw(&body, &mut wire).expect("small");
        encode_message(&ToScheduler::Release(vec![]), &mut wire).expect("encodes");
        let first_len = HEADER_LEN + body.len();
        for cut in HEADER_LEN..=wire.len() {
            let mut decoder = FrameDecoder::default();
            decoder.push(&wire[..cut]);
            assert_eq!(decoder.next_header().expect("valid"), Some((FrameKind::Raw, body.len())));
            let mut got = vec![0; body.len()];
            let n = decoder.take_body_start(&mut got);
            assert_eq!(n, (cut - HEADER_LEN).min(body.len()), "cut at {cut}");
            // The rest of the body comes straight from the stream.
            let read_directly = first_len.max(cut);
            got[n..].copy_from_slice(&wire[cut.min(first_len)..first_len]);
            assert_eq!(got, body, "cut at {cut}");
            decoder.push(&wire[read_directly..]);
            let frames = drain(&mut decoder);
            assert_eq!(frames.len(), 1, "cut at {cut}");
            assert_eq!(frames[0].kind, FrameKind::Message);
            assert_eq!(decoder.buffered(), 0);
        }
    }

    #[test]
    #[should_panic(expected = "the body is 3 bytes long, not 2")]
    fn a_body_slice_of_another_length_than_the_header_says_is_a_bug() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&raw_header(3));
        decoder.take_body_start(&mut [0; 2]);
    }

    #[test]
    fn a_header_is_checked_before_its_body_arrives() {
        let mut decoder = FrameDecoder::new(10);
        decoder.push(&[1, 0, 0]);
        assert_eq!(decoder.next_header().expect("incomplete"), None);
        decoder.push(&[0, 1]);
        assert_eq!(decoder.next_header().expect("valid"), Some((FrameKind::Raw, 1)));
        let mut decoder = FrameDecoder::new(10);
        decoder.push(&raw_header(11));
        assert!(matches!(decoder.next_header(), Err(ProtoError::FrameTooLarge { len: 11, max: 10 })));
        let mut decoder = FrameDecoder::new(10);
        decoder.push(&[1, 0, 0, 0, 9]);
        assert!(matches!(decoder.next_header(), Err(ProtoError::UnknownFrameKind(9))));
    }
}
