//! Turning a [`PeerAddress`] into a socket address: the one place a host
//! name is looked up, with errors that say which address and why.

use std::net::{SocketAddr, ToSocketAddrs};

use shoal_proto::PeerAddress;

/// Why an address has no socket address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The host name could not be looked up.
    #[error("cannot look up the host {host:?} of {address} ({source}): is the name right, and known to this machine?")]
    Lookup {
        /// The address.
        address: PeerAddress,
        /// Its host.
        host: String,
        /// What the lookup said.
        source: std::io::Error,
    },
    /// The lookup found no address for the host.
    #[error("the host of {address} has no address")]
    NoAddress {
        /// The address.
        address: PeerAddress,
    },
}

/// The socket address of a peer: an IP address as it is, a host name
/// looked up (the first address found).
///
/// ```
/// let a: shoal_proto::PeerAddress = "tcp://127.0.0.1:8786".parse()?;
/// assert_eq!(shoal_net::resolve(&a)?, std::net::SocketAddr::from(([127, 0, 0, 1], 8786)));
/// let nowhere: shoal_proto::PeerAddress = "no-such-host.invalid:1".parse()?;
/// assert!(shoal_net::resolve(&nowhere).unwrap_err().to_string().contains("cannot look up the host"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`ResolveError`] when the name cannot be looked up or has no address.
pub fn resolve(address: &PeerAddress) -> Result<SocketAddr, ResolveError> {
    if let Some(socket) = address.socket_addr() {
        return Ok(socket);
    }
    (address.host(), address.port())
        .to_socket_addrs()
        .map_err(|source| ResolveError::Lookup { address: address.clone(), host: address.host().to_string(), source })?
        .next()
        .ok_or_else(|| ResolveError::NoAddress { address: address.clone() })
}
