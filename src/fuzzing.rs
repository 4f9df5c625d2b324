//! Fuzz checks: one function per cargo-fuzz target in `fuzz/` (each target is a line that
//! calls one of these), and the corpus test (`tests/fuzz_corpus.rs`) runs every committed
//! corpus file through the same function, so the corpus is a regression suite without
//! cargo-fuzz.
//!
//! Each check feeds arbitrary bytes to the parser the server itself uses (nothing here
//! re-implements a parser) and panics when an invariant breaks: a parse that panics, a
//! parse → serialise → parse that does not come back to the same value, a path that leaves
//! the device tree, a reader that takes more than its cap or past what it frames, a verdict
//! that changes when more bytes arrive.

use std::net::{IpAddr, SocketAddr};

use fwdist_release::manifest::Manifest;
use fwdist_release::signing::{self, Ed25519SigningKey, SignatureEnvelope, TrustedKeys};

use crate::config::Config;
use crate::domain::{DeviceId, Model, Sha256Digest, Version};
use crate::ftps::path::{self, Node};
use crate::ftps::{hello, oneport, proxy, wire};
use crate::services::reports;

/// A target's check: panics when an invariant breaks.
pub type Check = fn(&[u8]);

/// Every target: its name (the file `fuzz/fuzz_targets/<name>.rs` and the directory
/// `fuzz/corpus/<name>/`) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("manifest", manifest),
    ("signature", signature),
    ("ids", ids),
    ("device_path", device_path),
    ("report", report),
    ("config", config),
    ("proxy", proxy_header),
    ("oneport", oneport_hello),
    ("control", control),
];

/// The manifest the signature target's envelopes are checked against.
pub const SIGNED_MANIFEST: &[u8] = b"{\"schema\":1}\n";

/// The key the signature target trusts (a fixed seed: the corpus holds envelopes it signed).
pub fn signature_key() -> Ed25519SigningKey {
    Ed25519SigningKey::from_bytes(&[7; 32])
}

/// `manifest.json`: a manifest that parses serialises to bytes that parse to it again, and
/// those bytes are canonical (serialising again gives the same bytes).
pub fn manifest(data: &[u8]) {
    let Ok(m) = Manifest::parse(data) else { return };
    let bytes = m.to_bytes().expect("a parsed manifest serialises");
    let again = Manifest::parse(&bytes).expect("a serialised manifest parses");
    assert_eq!(again, m, "manifest round trip");
    assert_eq!(again.to_bytes().ok(), Some(bytes), "serialising is canonical");
}

/// `manifest.json.sig`: an envelope round-trips, and checking it against a fixed manifest
/// with one trusted key never panics and succeeds only with that key's id.
pub fn signature(data: &[u8]) {
    if let Ok(env) = SignatureEnvelope::parse(data) {
        let bytes = env.to_bytes().expect("a parsed envelope serialises");
        let again = SignatureEnvelope::parse(&bytes).expect("a serialised envelope parses");
        assert_eq!(again, env, "envelope round trip");
    }
    let key = signature_key();
    let trusted = TrustedKeys::from_keys([key.verifying_key()]);
    if let Ok(id) = trusted.verify(data, SIGNED_MANIFEST) {
        assert_eq!(id, signing::key_id(&key.verifying_key()));
    }
}

/// Device ids (MACs), models, versions, digests: what parses prints in canonical form and
/// parses back to the same value.
pub fn ids(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = DeviceId::parse(s) {
        let canonical = d.to_string();
        assert_eq!(canonical.len(), 17);
        assert_eq!(canonical, canonical.to_ascii_lowercase());
        assert_eq!(DeviceId::parse(&canonical), Ok(d), "MAC round trip");
        assert!(matches!(s.len(), 12 | 17), "a MAC of {} bytes parsed", s.len());
    }
    if let Ok(m) = Model::parse(s) {
        assert_eq!(m.as_str(), s);
        assert_eq!(Model::parse(m.as_str()), Ok(m));
    }
    if let Ok(v) = Version::parse(s) {
        assert_eq!(v.as_str(), s, "a version keeps its spelling");
        assert!(s.len() <= 64);
    }
    if let Ok(h) = Sha256Digest::parse(s) {
        assert_eq!(h.to_string(), s);
    }
}

/// The device tree an IQ sees: whatever the path (any bytes), it resolves to a node of the
/// fixed tree or to nothing; its normal form has no `.`, `..` or empty component; resolving
/// that normal form from the root gives the same node (so `..` never reaches outside), and
/// the node's depth matches it.
pub fn device_path(data: &[u8]) {
    use std::os::unix::ffi::OsStrExt as _;
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes(data));
    let node = path::resolve(p);
    let Some(parts) = path::normalise(p) else {
        assert_eq!(node, None, "a path that does not normalise names nothing");
        return;
    };
    assert!(
        parts
            .iter()
            .all(|c| c != ".." && c != "." && !c.is_empty() && !c.contains('/')),
        "normal form {parts:?}"
    );
    let rebuilt = format!("/{}", parts.join("/"));
    assert_eq!(
        path::resolve(std::path::Path::new(&rebuilt)),
        node,
        "resolving is resolving the normal form from the root"
    );
    let Some(n) = node else { return };
    let depth_ok = match &n {
        Node::Root => parts.is_empty(),
        Node::Report => parts == [path::REPORT_NAME],
        Node::TargetDir => parts == ["target"],
        Node::ReleasesDir => parts == ["releases"],
        Node::TargetFile(_) => parts.len() == 2 && parts[0] == "target",
        Node::VersionDir(v) => parts.len() == 2 && parts[0] == "releases" && parts[1] == *v,
        Node::ReleaseFile(v, _) => parts.len() == 3 && parts[0] == "releases" && parts[1] == *v,
    };
    assert!(depth_ok, "{n:?} from {parts:?}");
}

/// An install report body: one that parses serialises to JSON that parses to it again, and
/// its caps hold.
pub fn report(data: &[u8]) {
    let Ok(r) = reports::parse_body(data) else {
        return;
    };
    assert!(data.len() <= reports::MAX_REPORT_BYTES);
    assert!(
        r.detail
            .as_ref()
            .is_none_or(|d| d.len() <= reports::MAX_DETAIL_BYTES)
    );
    let again = reports::parse_body(&r.to_json()).expect("a serialised report parses");
    assert_eq!(again, r, "report round trip");
}

/// A configuration file's text: one that loads is valid, and every value derived from it at
/// startup (passive mode, passive host, the site for firewall rules) is there.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = Config::from_toml(text) else {
        return;
    };
    assert!(c.validate().is_ok(), "a loaded config validates");
    assert!(c.ftps.passive_mode().is_ok());
    assert!(c.ftps.passive_host().is_ok());
    let _ = c.ftps.network_site();
    let again = Config::from_toml(text).expect("loading is deterministic");
    assert_eq!(format!("{again:?}"), format!("{c:?}"));
}

/// A PROXY v1 header at the start of a connection: [`proxy::frame`] ends it at its first
/// CRLF within the cap, keeps that verdict for every longer prefix (the reader may see the
/// bytes in any segments), and an address it names formats into a header naming it again.
pub fn proxy_header(data: &[u8]) {
    let whole = proxy::frame(data);
    let mut settled = None;
    for n in 0..=data.len() {
        let f = proxy::frame(&data[..n]);
        if let Some(s) = settled {
            assert_eq!(f, s, "a settled frame changed with more bytes ({n})");
        } else if f != proxy::Frame::Partial {
            settled = Some(f);
        }
        if n > proxy::MAX_HEADER + 2 {
            break;
        }
    }
    if let Some(s) = settled {
        assert_eq!(s, whole);
    }
    if let proxy::Frame::Whole(len) = whole {
        assert!(len <= proxy::MAX_HEADER);
        let line = &data[..len];
        assert!(line.ends_with(b"\r\n"));
        assert!(!line[..len - 2].windows(2).any(|w| w == b"\r\n"));
        if let Ok(Some(addr)) = proxy::parse(line) {
            let (family, dst) = match addr.ip() {
                IpAddr::V4(_) => ("TCP4", "192.0.2.1"),
                IpAddr::V6(_) => ("TCP6", "2001:db8::1"),
            };
            let again = format!("PROXY {family} {} {dst} {} 2121\r\n", addr.ip(), addr.port());
            assert_eq!(proxy::frame(again.as_bytes()), proxy::Frame::Whole(again.len()));
            assert_eq!(proxy::parse(again.as_bytes()), Ok(Some(addr)));
        }
    }
    // Any bytes, whole or not, parse without panicking.
    let _: Result<Option<SocketAddr>, _> = proxy::parse(data);
}

/// The one-port classifier and ClientHello reader. The first byte of the input picks the
/// segment sizes the stream (the rest) arrives in. The held connection's verdict comes from
/// its first byte and never changes with more; the reader, following
/// [`hello::next_read`], never holds more than [`hello::MAX_RECORD`] bytes nor any byte past
/// the record, ends with exactly the record, and the identities read from it are the same
/// whatever follows it.
pub fn oneport_hello(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let first = oneport::verdict_of(stream.get(..1).unwrap_or_default());
    for n in 1..=stream.len().min(8) {
        assert_eq!(oneport::verdict_of(&stream[..n]), first, "verdict changed at {n}");
    }
    let segment = |i: usize| 1 + (usize::from(seed) * (i + 1) * 131) % 4096;
    let mut buf: Vec<u8> = Vec::new();
    for i in 0.. {
        match hello::next_read(&buf) {
            hello::Read::More(n) => {
                assert!(n > 0, "a read of nothing");
                assert!(buf.len() + n <= hello::MAX_RECORD, "asked past the cap");
                let take = n.min(segment(i)).min(stream.len() - buf.len());
                if take == 0 {
                    return; // the peer closed: no record
                }
                buf.extend_from_slice(&stream[buf.len()..buf.len() + take]);
            }
            hello::Read::Whole(n) => {
                assert_eq!(n, buf.len(), "read past the record");
                assert_eq!(first, oneport::Verdict::Data, "a record is a data connection");
                assert_eq!(hello::record_len(&buf), Some(n));
                let ids = hello::identities(&buf);
                let total: usize = ids.iter().map(Vec::len).sum();
                assert!(total <= n, "identities longer than their record");
                assert_eq!(hello::identities(stream), ids, "bytes after the record count");
                return;
            }
            hello::Read::Refuse => {
                assert!(
                    buf.first() != Some(&hello::HANDSHAKE)
                        || hello::record_len(&buf).is_some_and(|l| l > hello::MAX_RECORD),
                    "refused a handshake record within the cap"
                );
                let _ = hello::identities(stream);
                return;
            }
        }
        assert!(buf.len() <= hello::MAX_RECORD);
    }
}

/// The control channel's grammar: lines cut from the stream (in segments the first byte
/// picks) are each within [`wire::MAX_LINE`] with their terminator and hold no newline, and
/// together with what is left they are the stream, byte for byte; commands, reply lines and
/// passive replies parse without panicking, and a passive reply fwdist writes names its port.
pub fn control(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut lines = wire::LineBuf::default();
    let mut replies = wire::ReplyReader::default();
    let mut seen: Vec<u8> = Vec::new();
    let mut at = 0;
    let step = 1 + usize::from(seed);
    'feed: while at < stream.len() {
        let end = (at + step).min(stream.len());
        lines.extend(&stream[at..end]);
        at = end;
        loop {
            match lines.next_line(wire::MAX_LINE) {
                wire::Next::Line(l) => {
                    assert!(l.len() < wire::MAX_LINE && !l.contains(&b'\n'));
                    if let Some(c) = wire::command(&l) {
                        assert!(!c.verb.is_empty() && c.verb.len() <= 8);
                        assert!(c.verb.bytes().all(|b| b.is_ascii_uppercase()));
                    }
                    let _ = replies.feed(&l);
                    let _ = (wire::pasv_port(&l), wire::epsv_port(&l));
                    seen.extend_from_slice(&l);
                    // The terminator the buffer took: `\n`, or `\r\n`.
                    let next = seen.len();
                    if stream.get(next) == Some(&b'\r') {
                        seen.push(b'\r');
                    }
                    seen.push(b'\n');
                }
                wire::Next::Partial => break,
                wire::Next::TooLong => break 'feed,
            }
        }
    }
    let rest = lines.take_rest();
    seen.extend_from_slice(&rest);
    assert_eq!(&seen[..], &stream[..at], "the lines and the rest are the stream");
    if stream.len() >= 6 {
        let ip = std::net::Ipv4Addr::new(stream[0], stream[1], stream[2], stream[3]);
        let port = u16::from_be_bytes([stream[4], stream[5]]);
        assert_eq!(
            wire::pasv_port(wire::pasv_reply(ip, port).trim_end().as_bytes()),
            Some(port)
        );
        assert_eq!(
            wire::epsv_port(wire::epsv_reply(port).trim_end().as_bytes()),
            Some(port)
        );
    }
}
