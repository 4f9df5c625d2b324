//! PROXY protocol v1 (`ftps.proxy_protocol`): behind a TCP balancer (HAProxy `send-proxy`)
//! every connection to the control port and to the passive ports starts with one line
//! naming the client's real address, `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`. The front
//! reads it before anything else and uses the address it names wherever it would have used
//! the TCP peer: the per-address limit, one-port classification, the data connection's
//! address check, lockouts, diagnostics and records — so they name the IQ, never the
//! balancer.
//!
//! The header is read exactly (nothing after it is consumed): a peek finds its end, a read
//! takes it. A connection without a valid header within [`HEADER_WAIT`] is closed without
//! a reply. The balancer is the only peer that may send one; the node's ports must be
//! reachable from it alone (README "Scaling out"), as any PROXY-speaking server requires.
//!
//! The parser is pure ([`parse`]); [`read`] is its socket side.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

/// The longest v1 header, CRLF included (the protocol's own bound).
pub const MAX_HEADER: usize = 107;
/// How long a new connection may take to send its header (a balancer sends it at once).
pub const HEADER_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY header")]
    Missing,
    #[error("malformed PROXY header")]
    Malformed,
    #[error("no PROXY header in time")]
    Timeout,
    #[error("connection closed before its PROXY header")]
    Closed,
}

/// Where a header ends in the bytes a connection has sent so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The header is the first this many bytes (CRLF included; at most [`MAX_HEADER`]).
    Whole(usize),
    /// A header may still come whole: read on, a byte at a time.
    Partial,
    /// Does not start `PROXY `.
    Missing,
    /// [`MAX_HEADER`] bytes without a CRLF.
    TooLong,
}

/// Pure: how much of `buf` (the start of a connection) is its header; [`read`] follows it,
/// so it never takes a byte past the header's CRLF.
pub fn frame(buf: &[u8]) -> Frame {
    if !b"PROXY ".starts_with(&buf[..buf.len().min(6)]) {
        return Frame::Missing;
    }
    let head = &buf[..buf.len().min(MAX_HEADER)];
    match head.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Frame::Whole(end + 2),
        None if buf.len() >= MAX_HEADER => Frame::TooLong,
        None => Frame::Partial,
    }
}

/// Pure: the client address a whole header line (`PROXY ...\r\n`) names; `None` for
/// `PROXY UNKNOWN` (the balancer's own connection, e.g. a health check: the TCP peer stands).
///
/// # Errors
/// Anything that is not a well-formed v1 header.
pub fn parse(line: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    if line.len() > MAX_HEADER {
        return Err(ProxyError::Malformed);
    }
    let body = line.strip_suffix(b"\r\n").ok_or(ProxyError::Malformed)?;
    let text = std::str::from_utf8(body).map_err(|_| ProxyError::Malformed)?;
    let rest = text.strip_prefix("PROXY ").ok_or(ProxyError::Missing)?;
    if rest == "UNKNOWN" || rest.starts_with("UNKNOWN ") {
        return Ok(None);
    }
    let parts: Vec<&str> = rest.split(' ').collect();
    let [family, src, dst, sport, dport] = parts[..] else {
        return Err(ProxyError::Malformed);
    };
    let ip = |s: &str| s.parse::<IpAddr>().map_err(|_| ProxyError::Malformed);
    let (src, dst) = (ip(src)?, ip(dst)?);
    let family_ok = match family {
        "TCP4" => src.is_ipv4() && dst.is_ipv4(),
        "TCP6" => src.is_ipv6() && dst.is_ipv6(),
        _ => false,
    };
    if !family_ok {
        return Err(ProxyError::Malformed);
    }
    let port = |s: &str| {
        // Decimal, no sign, no leading zero (the protocol's own rule).
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits || (s.len() > 1 && s.starts_with('0')) {
            return Err(ProxyError::Malformed);
        }
        s.parse::<u16>().map_err(|_| ProxyError::Malformed)
    };
    let sport = port(sport)?;
    port(dport)?;
    Ok(Some(SocketAddr::new(src, sport)))
}

/// Reads the header from a new connection, leaving every byte after it unread; returns the
/// client's address (the TCP peer's for `PROXY UNKNOWN`).
///
/// # Errors
/// No valid header within [`HEADER_WAIT`], or the connection closed first.
pub async fn read(stream: &mut TcpStream, peer: SocketAddr) -> Result<SocketAddr, ProxyError> {
    tokio::time::timeout(HEADER_WAIT, read_line(stream))
        .await
        .map_err(|_| ProxyError::Timeout)?
        .map(|named| named.unwrap_or(peer))
}

async fn read_line(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    let mut buf = [0u8; MAX_HEADER];
    // Fast path: the balancer writes the header in one segment; peek it whole, then take
    // exactly it.
    let n = stream.peek(&mut buf).await.map_err(|_| ProxyError::Closed)?;
    if n == 0 {
        return Err(ProxyError::Closed);
    }
    let mut len = match frame(&buf[..n]) {
        Frame::Whole(len) => {
            stream
                .read_exact(&mut buf[..len])
                .await
                .map_err(|_| ProxyError::Closed)?;
            return parse(&buf[..len]);
        }
        Frame::Missing => return Err(ProxyError::Missing),
        Frame::TooLong => return Err(ProxyError::Malformed),
        Frame::Partial => 0,
    };
    // A header split across segments: byte by byte, never past its end.
    loop {
        stream
            .read_exact(&mut buf[len..=len])
            .await
            .map_err(|_| ProxyError::Closed)?;
        len += 1;
        match frame(&buf[..len]) {
            Frame::Whole(end) => return parse(&buf[..end]),
            Frame::Partial if len < MAX_HEADER => {}
            Frame::Missing => return Err(ProxyError::Missing),
            Frame::Partial | Frame::TooLong => return Err(ProxyError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt as _;

    #[test]
    fn tcp4_and_tcp6_headers_name_the_client() {
        assert_eq!(
            parse(b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 2121\r\n").unwrap(),
            Some("192.0.2.7:51234".parse().unwrap())
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 443 2121\r\n").unwrap(),
            Some("[2001:db8::7]:443".parse().unwrap())
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), None);
        assert_eq!(parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").unwrap(), None);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 2121"[..], // no CRLF
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51234\r\n",
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 051234 2121\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 2121\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 +1 2121\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(ProxyError::Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(b"USER iq\r\n"), Err(ProxyError::Missing));
        let long = format!("PROXY TCP4 1.1.1.1 2.2.2.2 1 2{}\r\n", " ".repeat(100));
        assert_eq!(parse(long.as_bytes()), Err(ProxyError::Malformed));
    }

    #[test]
    fn a_header_ends_at_its_first_crlf_within_the_cap() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 2121\r\n";
        let mut more = line.to_vec();
        more.extend_from_slice(b"\x16\x03\x01\r\n");
        assert_eq!(frame(&more), Frame::Whole(line.len()));
        assert_eq!(frame(&line[..line.len() - 1]), Frame::Partial);
        assert_eq!(frame(b""), Frame::Partial);
        assert_eq!(frame(b"PRO"), Frame::Partial);
        assert_eq!(frame(b"PROXX"), Frame::Missing);
        assert_eq!(frame(b"\x16\x03"), Frame::Missing);
        let mut long = b"PROXY ".to_vec();
        long.resize(MAX_HEADER, b'1');
        assert_eq!(frame(&long), Frame::TooLong);
        // A CRLF just past the cap is not an end.
        long.extend_from_slice(b"\r\n");
        assert_eq!(frame(&long), Frame::TooLong);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
            if let Frame::Whole(n) = frame(&bytes) {
                prop_assert!(n <= MAX_HEADER && bytes[..n].ends_with(b"\r\n"));
            }
        }

        #[test]
        fn a_formatted_header_names_its_source(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), sp in any::<u16>(), dp in any::<u16>()) {
            let (s, d) = (std::net::Ipv4Addr::from(src), std::net::Ipv4Addr::from(dst));
            let line = format!("PROXY TCP4 {s} {d} {sp} {dp}\r\n");
            prop_assert_eq!(parse(line.as_bytes()).unwrap(), Some(SocketAddr::from((s, sp))));
        }
    }

    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, peer) = l.accept().await.unwrap();
        (c, s, peer)
    }

    #[tokio::test]
    async fn the_header_is_read_exactly_and_what_follows_stays() {
        let (mut c, mut s, peer) = pair().await;
        c.write_all(b"PROXY TCP4 198.51.100.9 127.0.0.1 4000 2121\r\n\x16\x03\x01")
            .await
            .unwrap();
        assert_eq!(
            read(&mut s, peer).await.unwrap(),
            "198.51.100.9:4000".parse().unwrap()
        );
        let mut rest = [0u8; 3];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, [0x16, 3, 1]);
    }

    #[tokio::test]
    async fn a_header_in_pieces_is_read_too() {
        let (mut c, mut s, peer) = pair().await;
        let reader = tokio::spawn(async move { read(&mut s, peer).await.map(|a| (a, s)) });
        c.write_all(b"PROXY TCP4 198.51.100.9 ").await.unwrap();
        c.flush().await.unwrap();
        tokio::task::yield_now().await;
        c.write_all(b"127.0.0.1 4000 2121\r\nAUTH").await.unwrap();
        let (addr, mut s) = reader.await.unwrap().unwrap();
        assert_eq!(addr, "198.51.100.9:4000".parse().unwrap());
        let mut rest = [0u8; 4];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"AUTH");
    }

    #[tokio::test]
    async fn a_connection_without_a_header_is_refused() {
        let (mut c, mut s, peer) = pair().await;
        c.write_all(b"\x16\x03\x01\x00\x10").await.unwrap();
        assert_eq!(read(&mut s, peer).await, Err(ProxyError::Missing));
        drop(c);
        let (c, mut s, peer) = pair().await;
        drop(c);
        assert_eq!(read(&mut s, peer).await, Err(ProxyError::Closed));
    }
}
