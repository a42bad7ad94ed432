//! The first exchange on every connection.
//!
//! The connecting side sends a [`Hello`] in a message frame; the listening
//! side reads it with [`decode_hello`], checks it with [`check_hello`] and
//! answers with a [`HelloReply`], which the connecting side checks with
//! [`check_reply`]. Only then do the messages ([`ToScheduler`](crate::ToScheduler)
//! and the others) flow.
//!
//! ```text
//! connecting side                     listening side
//!   Hello { magic, version, .. } ──▶  decode_hello, check_hello
//!                                ◀──  HelloReply::Welcome { id } | Rejected
//!   check_reply
//! ```
//!
//! The magic and the version are the first two fields of a [`Hello`], and
//! [`decode_hello`] reads them before the rest, so any later protocol version
//! whose `Hello` keeps that prefix is told "version N is not spoken here"
//! rather than "malformed message".

use serde::{Deserialize, Serialize};

use crate::{ProtoError, decode_message};

/// The version of the protocol this build speaks. Bump it on any change to
/// the layout of a message or frame.
pub const PROTOCOL_VERSION: u16 = 5;

/// The first four bytes of every [`Hello`] body: tells a shoal peer from
/// anything else that happened to connect.
pub const MAGIC: [u8; 4] = *b"SHOL";

/// What the connecting side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// A client, connecting to the scheduler.
    Client,
    /// A worker, connecting to the scheduler.
    Worker,
    /// A worker, connecting to another worker for data.
    Peer,
}

/// The first message on a connection, from the side that connected.
///
/// `Debug` does not print the token, so a logged `Hello` leaks no secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must be [`MAGIC`].
    pub magic: [u8; 4],
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// What the sender is.
    pub role: Role,
    /// The sender's name, for logs and the dashboard.
    pub name: String,
    /// The cluster token, if the sender was given one.
    pub token: Option<String>,
}

impl Hello {
    /// A hello from this build: [`MAGIC`], [`PROTOCOL_VERSION`] and the given
    /// role, name and token.
    ///
    /// # Examples
    ///
    /// ```
    /// use shoal_proto::{Hello, Role, check_hello};
    ///
    /// let hello = Hello::new(Role::Worker, "node7-0", Some("s3cret"));
    /// assert_eq!(check_hello(&hello, Some("s3cret"))?, Role::Worker);
    /// # Ok::<(), shoal_proto::HandshakeError>(())
    /// ```
    pub fn new(role: Role, name: impl Into<String>, token: Option<&str>) -> Hello {
        Hello { magic: MAGIC, version: PROTOCOL_VERSION, role, name: name.into(), token: token.map(str::to_owned) }
    }
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("magic", &self.magic)
            .field("version", &self.version)
            .field("role", &self.role)
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The listening side's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Accepted.
    Welcome {
        /// The listener's [`PROTOCOL_VERSION`].
        version: u16,
        /// The number the listener gave the connecting side (its worker or
        /// client id, depending on the role).
        id: u32,
    },
    /// Refused; the connection closes after this.
    Rejected {
        /// Why, for the connecting side's error message.
        reason: String,
    },
}

impl HelloReply {
    /// A welcome from this build, giving the connecting side number `id`.
    pub fn welcome(id: u32) -> HelloReply {
        HelloReply::Welcome { version: PROTOCOL_VERSION, id }
    }

    /// The rejection that tells the connecting side what `error` says.
    pub fn rejected(error: &HandshakeError) -> HelloReply {
        HelloReply::Rejected { reason: error.to_string() }
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The first bytes are not [`MAGIC`]: something other than shoal connected.
    #[error("not a shoal peer (it began with \"{}\")", found.escape_ascii())]
    NotShoal {
        /// The bytes found where [`MAGIC`] should be.
        found: [u8; 4],
    },
    /// The two sides speak different protocol versions.
    #[error("protocol version {theirs} is not spoken here (this side speaks {ours})")]
    Version {
        /// The other side's version.
        theirs: u16,
        /// This side's version, [`PROTOCOL_VERSION`].
        ours: u16,
    },
    /// A token is required and the hello has none.
    #[error("missing cluster token")]
    MissingToken,
    /// A token is required and the hello has another one.
    #[error("wrong cluster token")]
    WrongToken,
    /// The listening side refused the connection.
    #[error("rejected by the other side: {reason}")]
    Rejected {
        /// The reason it gave.
        reason: String,
    },
}

/// Decodes the body of the first frame on a connection as a [`Hello`].
///
/// Reads the magic and version first, so a peer of another protocol version
/// gets a version error even if the rest of its `Hello` has changed.
///
/// # Errors
///
/// [`ProtoError::Handshake`] with [`HandshakeError::NotShoal`] or
/// [`HandshakeError::Version`] for a wrong prefix, else the errors of
/// [`decode_message`].
pub fn decode_hello(body: &[u8]) -> Result<Hello, ProtoError> {
    let (magic, version) = postcard::take_from_bytes::<([u8; 4], u16)>(body)
        .map(|(prefix, _)| prefix)
        .map_err(|source| ProtoError::Malformed { source })?;
    check_prefix(magic, version)?;
    decode_message(body)
}

fn check_prefix(magic: [u8; 4], version: u16) -> Result<(), HandshakeError> {
    if magic != MAGIC {
        return Err(HandshakeError::NotShoal { found: magic });
    }
    if version != PROTOCOL_VERSION {
        return Err(HandshakeError::Version { theirs: version, ours: PROTOCOL_VERSION });
    }
    Ok(())
}

/// Checks a [`Hello`] on the listening side and returns the sender's role.
///
/// A token the listener does not expect is ignored, so workers configured
/// with a token can still join a cluster that does not use one.
///
/// # Errors
///
/// [`HandshakeError::NotShoal`], [`HandshakeError::Version`], and, when
/// `expected_token` is set, [`HandshakeError::MissingToken`] or
/// [`HandshakeError::WrongToken`]. The token comparison takes the same time
/// wherever the first differing byte is.
pub fn check_hello(hello: &Hello, expected_token: Option<&str>) -> Result<Role, HandshakeError> {
    check_prefix(hello.magic, hello.version)?;
    if let Some(expected) = expected_token {
        let given = hello.token.as_deref().ok_or(HandshakeError::MissingToken)?;
        if !same_secret(given.as_bytes(), expected.as_bytes()) {
            return Err(HandshakeError::WrongToken);
        }
    }
    Ok(hello.role)
}

/// Checks a [`HelloReply`] on the connecting side and returns the id given.
///
/// # Errors
///
/// [`HandshakeError::Rejected`] with the listener's reason, or
/// [`HandshakeError::Version`] if it welcomed us with another version.
pub fn check_reply(reply: &HelloReply) -> Result<u32, HandshakeError> {
    match reply {
        HelloReply::Welcome { version, id } if *version == PROTOCOL_VERSION => Ok(*id),
        HelloReply::Welcome { version, .. } => {
            Err(HandshakeError::Version { theirs: *version, ours: PROTOCOL_VERSION })
        }
        HelloReply::Rejected { reason } => Err(HandshakeError::Rejected { reason: reason.clone() }),
    }
}

/// Compares two secrets in time that depends on their lengths only, not on
/// where they differ, so a peer cannot guess a token byte by byte by timing.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    let diff = given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    // Keeps the optimiser from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HEADER_LEN, encode_message};

    fn body_of<T: Serialize>(msg: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode_message(msg, &mut out).expect("encodes");
        out.split_off(HEADER_LEN)
    }

    #[test]
    fn hello_has_a_known_layout_starting_with_the_magic() {
        let body = body_of(&Hello::new(Role::Worker, "w", None));
        // The version is a varint: one byte while it is under 128.
        let v = PROTOCOL_VERSION as u8;
        assert_eq!(body, [b'S', b'H', b'O', b'L', v, 1, 1, b'w', 0]);
        let body = body_of(&Hello::new(Role::Peer, "", Some("t")));
        assert_eq!(body, [b'S', b'H', b'O', b'L', v, 2, 0, 1, 1, b't']);
    }

    #[test]
    fn reply_layout() {
        assert_eq!(body_of(&HelloReply::welcome(5)), [0, PROTOCOL_VERSION as u8, 5]);
        assert_eq!(body_of(&HelloReply::Rejected { reason: "no".into() }), [1, 2, b'n', b'o']);
    }

    #[test]
    fn decode_hello_round_trips() {
        let hello = Hello::new(Role::Client, "me", Some("tok"));
        assert_eq!(decode_hello(&body_of(&hello)).expect("valid"), hello);
    }

    #[test]
    fn a_future_hello_gets_a_version_error_not_malformed() {
        // A later version may change everything after the prefix.
        #[derive(Serialize)]
        struct FutureHello {
            magic: [u8; 4],
            version: u16,
            role: u8,
            features: Vec<u64>,
        }
        let future = PROTOCOL_VERSION + 1;
        let body = body_of(&FutureHello { magic: MAGIC, version: future, role: 9, features: vec![1 << 40] });
        let err = decode_hello(&body).expect_err("a later version");
        assert_eq!(err.to_string(), "handshake failed");
        let source = std::error::Error::source(&err).expect("handshake error kept as source");
        assert_eq!(
            source.to_string(),
            format!("protocol version {future} is not spoken here (this side speaks {PROTOCOL_VERSION})")
        );
    }

    #[test]
    fn decode_hello_rejects_non_shoal_and_short_bodies() {
        let err = decode_hello(b"GET / HTTP/1.1\r\n").expect_err("http");
        assert!(
            matches!(err, ProtoError::Handshake(HandshakeError::NotShoal { found }) if found == *b"GET "),
            "{err:?}"
        );
        assert!(matches!(decode_hello(b"SHO"), Err(ProtoError::Malformed { .. })));
        // Right prefix, broken rest.
        let broken = [&b"SHOL"[..], &[PROTOCOL_VERSION as u8, 7]].concat();
        assert!(matches!(decode_hello(&broken), Err(ProtoError::Malformed { .. })));
    }

    #[test]
    fn check_hello_errors_read_well() {
        let mut hello = Hello::new(Role::Worker, "w", None);
        assert_eq!(check_hello(&hello, None), Ok(Role::Worker));
        assert_eq!(check_hello(&hello, Some("k")), Err(HandshakeError::MissingToken));
        hello.token = Some("K".into());
        assert_eq!(check_hello(&hello, Some("k")), Err(HandshakeError::WrongToken));
        assert_eq!(check_hello(&hello, Some("kk")), Err(HandshakeError::WrongToken));
        assert_eq!(check_hello(&hello, None), Ok(Role::Worker), "unexpected token is fine");
        hello.version = PROTOCOL_VERSION + 1;
        let err = check_hello(&hello, None).expect_err("version");
        assert_eq!(
            err.to_string(),
            format!("protocol version {} is not spoken here (this side speaks {PROTOCOL_VERSION})", hello.version)
        );
        hello.magic = *b"HTTP";
        let err = check_hello(&hello, None).expect_err("magic first");
        assert_eq!(err.to_string(), r#"not a shoal peer (it began with "HTTP")"#);
        assert_eq!(HandshakeError::MissingToken.to_string(), "missing cluster token");
        assert_eq!(HandshakeError::WrongToken.to_string(), "wrong cluster token");
    }

    #[test]
    fn check_reply_maps_each_answer() {
        assert_eq!(check_reply(&HelloReply::welcome(9)), Ok(9));
        assert_eq!(
            check_reply(&HelloReply::Welcome { version: PROTOCOL_VERSION + 1, id: 9 }),
            Err(HandshakeError::Version { theirs: PROTOCOL_VERSION + 1, ours: PROTOCOL_VERSION })
        );
        let reply = HelloReply::rejected(&HandshakeError::WrongToken);
        let err = check_reply(&reply).expect_err("rejected");
        assert_eq!(err.to_string(), "rejected by the other side: wrong cluster token");
    }

    #[test]
    fn debug_hides_the_token() {
        let shown = format!("{:?}", Hello::new(Role::Client, "c", Some("hunter2")));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn same_secret_compares_whole_contents() {
        assert!(same_secret(b"", b""));
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"xbc", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
    }
}
