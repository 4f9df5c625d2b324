//! The FTP control-channel grammar the front needs, and nothing else: capped command lines
//! (RFC 959 §4.1), reply lines and where a reply ends (§4.2, multi-line `ddd-` … `ddd `), and
//! the passive replies it rewrites (`227` RFC 959 §4.1.2, `229` RFC 2428 §3).
//!
//! Pure: no sockets, no TLS. The front ([`super::control`]) reads bytes into a [`LineBuf`]
//! and asks it for complete lines; everything here is unit- and property-tested.

use std::net::Ipv4Addr;

/// Longest command line accepted, terminator included. RFC 959 has no limit; every real
/// command fits in a path plus a verb, and libunftp itself buffers without bound.
pub const MAX_LINE: usize = 4096;

/// Bytes accumulated from a stream, cut into lines at `\n`.
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: Vec<u8>,
}

/// What the buffer holds next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A complete line without its `\r\n` (or `\n`).
    Line(Vec<u8>),
    /// Not a whole line yet.
    Partial,
    /// More than [`MAX_LINE`] bytes without a newline.
    TooLong,
}

impl LineBuf {
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line, if any.
    pub fn next_line(&mut self, max: usize) -> Next {
        match self.buf.iter().position(|b| *b == b'\n') {
            Some(i) if i < max => {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Next::Line(line)
            }
            Some(_) => Next::TooLong,
            None if self.buf.len() >= max => Next::TooLong,
            None => Next::Partial,
        }
    }

    /// Whatever was read past the last line (a TLS ClientHello sent right after `AUTH TLS`).
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// A command line split into its upper-cased verb and its argument (may be empty).
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    pub verb: String,
    pub arg: String,
}

/// Parses a command line; `None` for a line that is not UTF-8 or has no verb.
pub fn command(line: &[u8]) -> Option<Command> {
    let text = std::str::from_utf8(line).ok()?;
    let text = text.trim_start();
    let (verb, arg) = match text.find(' ') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, ""),
    };
    if verb.is_empty() || verb.len() > 8 || !verb.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    Some(Command {
        verb: verb.to_ascii_uppercase(),
        arg: arg.to_owned(),
    })
}

/// One reply line from the server side, classified.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct ReplyLine {
    pub code: u16,
    /// `ddd-`: the first line of a multi-line reply.
    pub opens: bool,
    /// `ddd ` (or just `ddd`): a line that ends a reply with this code.
    pub closes: bool,
}

/// Classifies a reply line; `None` for a continuation line of a multi-line reply.
pub fn reply_line(line: &[u8]) -> Option<ReplyLine> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None | Some(b' ') => Some(ReplyLine {
            code,
            opens: false,
            closes: true,
        }),
        Some(b'-') => Some(ReplyLine {
            code,
            opens: true,
            closes: false,
        }),
        Some(_) => None,
    }
}

/// Tracks where a (possibly multi-line) reply ends.
#[derive(Debug, Default)]
pub struct ReplyReader {
    open: Option<u16>,
}

/// What a reply line means for the exchange.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Step {
    /// Part of a reply that is not finished.
    Continues,
    /// The reply with this code is complete.
    Done(u16),
}

impl ReplyReader {
    pub fn feed(&mut self, line: &[u8]) -> Step {
        let parsed = reply_line(line);
        match (self.open, parsed) {
            (Some(code), Some(r)) if r.closes && r.code == code => {
                self.open = None;
                Step::Done(code)
            }
            (Some(_), _) => Step::Continues,
            (None, Some(r)) if r.opens => {
                self.open = Some(r.code);
                Step::Continues
            }
            (None, Some(r)) => Step::Done(r.code),
            // A stray line outside a reply: pass it on, it ends nothing.
            (None, None) => Step::Continues,
        }
    }
}

/// The port of a `227 ... (h1,h2,h3,h4,p1,p2)` reply.
pub fn pasv_port(line: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(line).ok()?;
    let (open, close) = (text.find('(')?, text.rfind(')')?);
    let inner = text.get(open + 1..close)?;
    let n: Vec<u16> = inner
        .split(',')
        .map(|x| x.trim().parse::<u16>().ok().filter(|v| *v <= 255))
        .collect::<Option<_>>()?;
    match n[..] {
        [_, _, _, _, hi, lo] => Some(hi * 256 + lo),
        _ => None,
    }
}

/// The port of a `229 ... (|||port|)` reply.
pub fn epsv_port(line: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(line).ok()?;
    let inner = &text[text.find("(|||")? + 4..];
    inner[..inner.find("|)")?].parse().ok()
}

pub fn pasv_reply(host: Ipv4Addr, port: u16) -> String {
    let [a, b, c, d] = host.octets();
    format!(
        "227 Entering Passive Mode ({a},{b},{c},{d},{},{})\r\n",
        port >> 8,
        port & 0xff
    )
}

pub fn epsv_reply(port: u16) -> String {
    format!("229 Entering Extended Passive Mode (|||{port}|)\r\n")
}

/// Commands whose reply comes after a data transfer (they use the data connection).
pub fn is_transfer(verb: &str) -> bool {
    matches!(verb, "RETR" | "STOR" | "APPE" | "STOU" | "LIST" | "NLST" | "MLSD")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_are_cut_at_newlines_and_capped() {
        let mut b = LineBuf::default();
        b.extend(b"USER a\r\nPA");
        assert_eq!(b.next_line(MAX_LINE), Next::Line(b"USER a".to_vec()));
        assert_eq!(b.next_line(MAX_LINE), Next::Partial);
        b.extend(b"SS x\n");
        assert_eq!(b.next_line(MAX_LINE), Next::Line(b"PASS x".to_vec()));
        assert!(b.is_empty());
        b.extend(&[b'a'; 10]);
        assert_eq!(b.next_line(10), Next::TooLong);
        let mut c = LineBuf::default();
        c.extend(b"0123456789\n");
        assert_eq!(
            c.next_line(10),
            Next::TooLong,
            "the newline must fall inside the cap"
        );
        let mut d = LineBuf::default();
        d.extend(b"AUTH TLS\r\n\x16\x03\x01");
        assert_eq!(d.next_line(MAX_LINE), Next::Line(b"AUTH TLS".to_vec()));
        assert_eq!(d.take_rest(), b"\x16\x03\x01");
    }

    #[test]
    fn commands_have_an_upper_case_verb_and_the_rest_as_argument() {
        assert_eq!(
            command(b"retr /releases/1.0.0/firmware.bin"),
            Some(Command {
                verb: "RETR".into(),
                arg: "/releases/1.0.0/firmware.bin".into()
            })
        );
        assert_eq!(command(b"PASV").map(|c| c.arg), Some(String::new()));
        assert_eq!(command(b"STOR a b").map(|c| c.arg), Some("a b".into()));
        assert_eq!(command(b""), None);
        assert_eq!(command(b"\x16\x03\x01\x02"), None);
        assert_eq!(command(b"12 x"), None);
        assert_eq!(command(&[0xff, 0xfe]), None);
    }

    #[test]
    fn multi_line_replies_end_at_their_own_code() {
        let mut r = ReplyReader::default();
        assert_eq!(r.feed(b"211-Features:"), Step::Continues);
        assert_eq!(r.feed(b" MDTM"), Step::Continues);
        assert_eq!(r.feed(b"200 not the end"), Step::Continues);
        assert_eq!(r.feed(b"211 End"), Step::Done(211));
        assert_eq!(r.feed(b"150 Sending data"), Step::Done(150));
        assert_eq!(r.feed(b"226"), Step::Done(226));
    }

    #[test]
    fn passive_replies_parse_and_format() {
        assert_eq!(
            pasv_port(b"227 Entering Passive Mode (127,0,0,1,195,80)"),
            Some(50000)
        );
        assert_eq!(pasv_port(b"227 (1,2,3,4,256,0)"), None);
        assert_eq!(pasv_port(b"227 (1,2,3,4,5)"), None);
        assert_eq!(pasv_port(b"227 )1,2,3,4,5,6("), None);
        assert_eq!(
            epsv_port(b"229 Entering Extended Passive Mode (|||50001|)"),
            Some(50001)
        );
        assert_eq!(epsv_port(b"229 (|||x|)"), None);
        let ip = Ipv4Addr::new(198, 51, 100, 7);
        assert_eq!(
            pasv_port(pasv_reply(ip, 50012).trim_end().as_bytes()),
            Some(50012)
        );
        assert_eq!(epsv_port(epsv_reply(2121).trim_end().as_bytes()), Some(2121));
    }

    proptest! {
        #[test]
        fn a_line_never_exceeds_the_cap(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..40), cap in 1usize..100) {
            let mut b = LineBuf::default();
            for c in chunks {
                b.extend(&c);
                loop {
                    match b.next_line(cap) {
                        Next::Line(l) => prop_assert!(l.len() < cap),
                        Next::Partial => { prop_assert!(b.buf.len() < cap); break }
                        Next::TooLong => return Ok(()),
                    }
                }
            }
        }

        #[test]
        fn any_passive_port_round_trips(a in any::<[u8; 4]>(), port in any::<u16>()) {
            let reply = pasv_reply(Ipv4Addr::from(a), port);
            prop_assert_eq!(pasv_port(reply.as_bytes()), Some(port));
            prop_assert_eq!(epsv_port(epsv_reply(port).as_bytes()), Some(port));
        }

        #[test]
        fn reply_classification_never_panics(line in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = reply_line(&line);
            let _ = command(&line);
            let _ = pasv_port(&line);
            let _ = epsv_port(&line);
        }
    }
}
