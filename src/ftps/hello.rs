//! Reading a TLS ClientHello's resumption identities before the handshake, so one-port mode
//! can give a data connection to the session it resumes ([`super::oneport`]). Pure.
//!
//! fwdist resumes statefully only ([`super::tls`]): a TLS 1.2 client names the session in
//! `legacy_session_id`, a TLS 1.3 client sends the ticket fwdist issued — the key of that
//! session in the server's store — as a `pre_shared_key` identity. Both are the keys a
//! session's own cache holds, so the front can ask each outstanding offer "is this yours?"
//! without taking part in the handshake; rustls then checks the resumption for real.
//!
//! Only a ClientHello in one TLS record is read (up to [`MAX_RECORD`]); anything else parses
//! to no identities, and the connection goes to the oldest offer of its address, whose
//! handshake decides.

/// A TLS record's largest plaintext body, plus its header.
pub const MAX_RECORD: usize = 5 + 16 * 1024;

/// The first byte of a TLS handshake record.
pub const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 1;
const PRE_SHARED_KEY: u16 = 41;

/// How many bytes the record that starts `buf` takes, once its header is there.
pub fn record_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 5 || buf[0] != HANDSHAKE {
        return None;
    }
    Some(5 + usize::from(u16::from_be_bytes([buf[3], buf[4]])))
}

/// What reading a data connection's first TLS record needs next, given what has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Read at most this many more bytes: never past the record's end, so never past
    /// [`MAX_RECORD`] in all, and nothing after the record is taken from the stream.
    More(usize),
    /// The record is whole: it is the first this many bytes.
    Whole(usize),
    /// Not a TLS handshake record, or one whose header claims more than [`MAX_RECORD`] (no
    /// TLS record is longer; waiting for it would read up to 64 KiB for nothing).
    Refuse,
}

/// Pure: the next step of reading one TLS record from a stream, `buf` being the bytes read
/// so far (the one-port front's reader, [`super::oneport`], follows it exactly).
pub fn next_read(buf: &[u8]) -> Read {
    match buf.first() {
        None => return Read::More(5),
        Some(&b) if b != HANDSHAKE => return Read::Refuse,
        Some(_) => {}
    }
    let Some(len) = record_len(buf) else {
        return Read::More(5 - buf.len());
    };
    if len > MAX_RECORD {
        Read::Refuse
    } else if buf.len() >= len {
        Read::Whole(len)
    } else {
        Read::More(len - buf.len())
    }
}

/// The session ids and PSK identities of the ClientHello in `record` (one TLS record);
/// empty when it is not a whole ClientHello.
pub fn identities(record: &[u8]) -> Vec<Vec<u8>> {
    parse(record).unwrap_or_default()
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some((usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

fn parse(record: &[u8]) -> Option<Vec<Vec<u8>>> {
    let len = record_len(record)?;
    let mut r = Reader(record.get(5..len)?);
    if r.u8()? != CLIENT_HELLO {
        return None;
    }
    let body = r.u24()?;
    let mut h = Reader(r.take(body)?);
    h.take(2 + 32)?; // legacy_version, random
    let mut found = Vec::new();
    let session_id = h.vec8()?;
    if !session_id.is_empty() {
        found.push(session_id.to_vec());
    }
    h.vec16()?; // cipher_suites
    h.vec8()?; // legacy_compression_methods
    if h.0.is_empty() {
        return Some(found);
    }
    let mut ext = Reader(h.vec16()?);
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let data = ext.vec16()?;
        if kind == PRE_SHARED_KEY {
            let mut psk = Reader(data);
            let mut ids = Reader(psk.vec16()?);
            while !ids.0.is_empty() {
                found.push(ids.vec16()?.to_vec());
                ids.take(4)?; // obfuscated_ticket_age
            }
        }
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ClientHello record with this session id and these PSK identities (and one other
    /// extension before them, as real clients send many).
    fn hello(session_id: &[u8], psks: &[&[u8]]) -> Vec<u8> {
        let mut exts = Vec::new();
        exts.extend_from_slice(&0u16.to_be_bytes()); // server_name, empty
        exts.extend_from_slice(&0u16.to_be_bytes());
        if !psks.is_empty() {
            let mut ids = Vec::new();
            for p in psks {
                ids.extend_from_slice(&(p.len() as u16).to_be_bytes());
                ids.extend_from_slice(p);
                ids.extend_from_slice(&[0, 0, 0, 7]);
            }
            let mut data = (ids.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&ids);
            data.extend_from_slice(&[0, 33, 32]); // binders: one of 32 bytes
            data.extend_from_slice(&[9; 32]);
            exts.extend_from_slice(&PRE_SHARED_KEY.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(&data);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[1; 32]);
        body.push(session_id.len() as u8);
        body.extend_from_slice(session_id);
        body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![CLIENT_HELLO];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![HANDSHAKE, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn session_ids_and_psk_identities_are_read() {
        let r = hello(b"sid-12", &[b"ticket-a", b"ticket-b"]);
        assert_eq!(record_len(&r), Some(r.len()));
        assert_eq!(
            identities(&r),
            [b"sid-12".to_vec(), b"ticket-a".to_vec(), b"ticket-b".to_vec()]
        );
        assert_eq!(identities(&hello(b"", &[])), Vec::<Vec<u8>>::new());
    }

    /// Real ClientHellos from `openssl s_client` (the fuzz seeds; their first byte is the
    /// fuzz target's segment seed): a TLS 1.2 resumption names its session id, a TLS 1.3
    /// resumption its ticket beside the 32-byte compatibility session id.
    #[test]
    fn real_client_hellos_name_what_they_resume() {
        let seed = |b: &'static [u8]| &b[1..];
        let first12 = seed(include_bytes!("../../fuzz/corpus/oneport/tls12-0"));
        let resume12 = seed(include_bytes!("../../fuzz/corpus/oneport/tls12-resume-0"));
        let resume13 = seed(include_bytes!("../../fuzz/corpus/oneport/tls13-resume-0"));
        for r in [first12, resume12, resume13] {
            assert_eq!(next_read(r), Read::Whole(r.len()));
        }
        assert!(identities(first12).is_empty());
        let ids = identities(resume12);
        assert_eq!(ids.iter().map(Vec::len).collect::<Vec<_>>(), [32]);
        let ids = identities(resume13);
        assert_eq!(ids.len(), 2, "session id and ticket");
        assert_eq!(ids[0].len(), 32);
        assert!(ids[1].len() > 32, "the ticket");
    }

    #[test]
    fn a_cut_or_foreign_record_has_no_identities() {
        let r = hello(b"sid", &[b"t"]);
        for cut in 0..r.len() {
            assert!(identities(&r[..cut]).is_empty(), "cut at {cut}");
        }
        let mut other = r.clone();
        other[0] = 0x17;
        assert!(identities(&other).is_empty());
        assert_eq!(record_len(b"USER x\r\n"), None);
    }

    #[test]
    fn a_record_is_read_to_its_end_and_a_longer_claim_than_the_cap_is_refused() {
        let r = hello(b"sid", &[b"t"]);
        assert_eq!(next_read(&[]), Read::More(5));
        assert_eq!(next_read(&r[..2]), Read::More(3));
        assert_eq!(next_read(&r[..5]), Read::More(r.len() - 5));
        assert_eq!(next_read(&r[..r.len() - 1]), Read::More(1));
        assert_eq!(next_read(&r), Read::Whole(r.len()));
        assert_eq!(next_read(b"USER x"), Read::Refuse);
        // The largest record TLS allows is read; a header claiming one byte more (or the
        // 64 KiB a u16 can say) is refused at once, not waited for.
        let body = u16::try_from(MAX_RECORD - 5).unwrap_or(u16::MAX);
        let mut max = vec![HANDSHAKE, 3, 1];
        max.extend_from_slice(&body.to_be_bytes());
        assert_eq!(next_read(&max), Read::More(MAX_RECORD - 5));
        for claim in [body + 1, u16::MAX] {
            let mut over = vec![HANDSHAKE, 3, 1];
            over.extend_from_slice(&claim.to_be_bytes());
            assert_eq!(next_read(&over), Read::Refuse, "claim {claim}");
        }
    }

    proptest! {
        /// Followed step by step, the reader never holds more than the cap or the record.
        #[test]
        fn reading_never_passes_the_record_or_the_cap(bytes in proptest::collection::vec(any::<u8>(), 0..64), claim in any::<u16>()) {
            let mut stream = vec![HANDSHAKE, 3, 3];
            stream.extend_from_slice(&claim.to_be_bytes());
            stream.extend_from_slice(&bytes);
            stream.resize(stream.len() + usize::from(claim), 0);
            let mut buf: Vec<u8> = Vec::new();
            loop {
                match next_read(&buf) {
                    Read::More(n) => {
                        prop_assert!(n > 0 && buf.len() + n <= MAX_RECORD);
                        let take = n.min(4096).min(stream.len() - buf.len());
                        prop_assert!(take > 0);
                        buf.extend_from_slice(&stream[buf.len()..buf.len() + take]);
                    }
                    Read::Whole(n) => {
                        prop_assert_eq!(n, buf.len());
                        prop_assert_eq!(Some(n), record_len(&stream));
                        break;
                    }
                    Read::Refuse => {
                        prop_assert!(5 + usize::from(claim) > MAX_RECORD);
                        prop_assert_eq!(buf.len(), 5);
                        break;
                    }
                }
            }
        }

        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = identities(&bytes);
            let mut rec = vec![HANDSHAKE, 3, 1];
            rec.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            rec.extend_from_slice(&bytes);
            let _ = identities(&rec);
        }
    }
}
