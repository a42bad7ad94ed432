//! Where a peer listens: `tcp://host:port`, as users write it and as
//! workers' data servers are handed out. Parsing only; looking a host name
//! up is the network layer's (`shoal_net::resolve`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The address of a scheduler or of a worker's data server.
///
/// Written `tcp://host:port` or `host:port`; the host is a name, an IPv4
/// address or a bracketed IPv6 address (`[::1]:8786`). It prints as
/// `tcp://host:port`.
///
/// ```
/// use shoal_proto::PeerAddress;
///
/// let a: PeerAddress = "tcp://node1:8786".parse()?;
/// assert_eq!((a.host(), a.port()), ("node1", 8786));
/// assert_eq!(a, "node1:8786".parse()?);
/// assert_eq!(a.to_string(), "tcp://node1:8786");
/// assert_eq!("[::1]:9".parse::<PeerAddress>()?.socket_addr(), Some("[::1]:9".parse().unwrap()));
/// let err = "node1".parse::<PeerAddress>().unwrap_err();
/// assert!(err.to_string().contains("no port"), "{err}");
/// # Ok::<(), shoal_proto::AddressError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    host: String,
    port: u16,
}

/// Why a text is not a peer address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not host:port ({reason}; for example tcp://node1:8786)")]
pub struct AddressError {
    /// What was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl PeerAddress {
    /// The address of a socket.
    pub fn from_socket(address: SocketAddr) -> PeerAddress {
        PeerAddress { host: address.ip().to_string(), port: address.port() }
    }

    /// The host: a name or an IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address, when the host is an IP address (no lookup).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.host.parse::<IpAddr>().ok()?, self.port))
    }

    /// The address as `host:port`, as socket APIs take it.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for PeerAddress {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<PeerAddress, AddressError> {
        let fail = |reason| AddressError { text: text.to_string(), reason };
        let rest = match text.split_once("://") {
            Some(("tcp", rest)) => rest,
            Some(_) => return Err(fail("only tcp:// addresses are spoken")),
            None => text,
        };
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| fail("an IPv6 address lacks its closing ]"))?;
                host.parse::<std::net::Ipv6Addr>().map_err(|_| fail("the part in brackets is not an IPv6 address"))?;
                (host, after.strip_prefix(':').ok_or_else(|| fail("no port after the host"))?)
            }
            None => {
                let (host, port) = rest.rsplit_once(':').ok_or_else(|| fail("no port after the host"))?;
                if host.contains(':') {
                    return Err(fail("an IPv6 host must be in brackets, as [::1]:8786"));
                }
                (host, port)
            }
        };
        if host.is_empty() {
            return Err(fail("the host is empty"));
        }
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(fail("the host holds a space or a slash"));
        }
        let port = port.parse::<u16>().map_err(|_| fail("the port is not a number from 0 to 65535"))?;
        Ok(PeerAddress { host: host.to_string(), port })
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp://{}", self.host_port())
    }
}

impl From<SocketAddr> for PeerAddress {
    fn from(address: SocketAddr) -> PeerAddress {
        PeerAddress::from_socket(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_one_address_is_one_address() {
        for text in ["tcp://127.0.0.1:8786", "127.0.0.1:8786"] {
            let a: PeerAddress = text.parse().expect("an address");
            assert_eq!(a.socket_addr(), Some(SocketAddr::from(([127, 0, 0, 1], 8786))));
            assert_eq!(a.to_string(), "tcp://127.0.0.1:8786");
        }
        let v6: PeerAddress = "tcp://[fe80::1]:1".parse().expect("an address");
        assert_eq!((v6.host(), v6.host_port()), ("fe80::1", "[fe80::1]:1".to_string()));
        assert_eq!(PeerAddress::from_socket(v6.socket_addr().expect("an ip")), v6);
    }

    #[test]
    fn what_is_not_an_address_says_why() {
        for (text, why) in [
            ("node1", "no port"),
            ("node1:", "port is not a number"),
            ("node1:70000", "port is not a number"),
            (":8786", "host is empty"),
            ("udp://node1:1", "only tcp://"),
            ("::1:8786", "in brackets"),
            ("[::1:8786", "closing ]"),
            ("[nope]:1", "not an IPv6"),
            ("tcp://a b:1", "space"),
        ] {
            let err = text.parse::<PeerAddress>().expect_err(text);
            assert!(err.to_string().contains(why), "{text}: {err}");
            assert!(err.to_string().contains(text), "{err}");
        }
    }
}
