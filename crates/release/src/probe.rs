//! The built-in `probe` account that `fwdist doctor` uses from a customer's network
//! (issue 4): it logs in with a public password, can read only `/probe.bin`, and learns the
//! passive ports with `SITE PORTS` (a range, or `same`: the control port). Pure: the server
//! and the doctor share these facts.

use std::ops::RangeInclusive;

use sha2::{Digest, Sha256};

/// FTP user name of the probe account.
pub const USER: &str = "probe";
/// Its password: public on purpose, the account can read nothing of value.
pub const PASSWORD: &str = "probe";
/// The one file it can read.
pub const FILE: &str = "probe.bin";
/// Size of `/probe.bin`: big enough to need several TLS records, small enough to be cheap.
pub const SIZE: usize = 256 * 1024;
/// `SITE PORTS`: where passive data connections go, for the doctor to test every port.
pub const SITE_PORTS: &str = "PORTS";

/// The bytes of `/probe.bin`: a SHA-256 counter stream, so both sides can produce them.
pub fn bytes() -> Vec<u8> {
    let mut out = Vec::with_capacity(SIZE);
    let mut n: u64 = 0;
    while out.len() < SIZE {
        let block = Sha256::new()
            .chain_update(b"fwdist-probe-v1\0")
            .chain_update(n.to_be_bytes())
            .finalize();
        out.extend_from_slice(&block);
        n += 1;
    }
    out.truncate(SIZE);
    out
}

/// [`bytes`], computed once per process.
pub fn cached() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(bytes)
}

/// SHA-256 of [`bytes`], lowercase hex.
pub fn sha256_hex() -> String {
    hex(&Sha256::digest(bytes()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Text of the `SITE PORTS` reply (after the code): `passive=FIRST-LAST`.
pub fn ports_reply(range: &RangeInclusive<u16>) -> String {
    format!("passive={}-{}", range.start(), range.end())
}

/// Text of the `SITE PORTS` reply in one-port mode (`ftps.passive_ports = "same"`): data
/// connections go to the control port.
pub const PORTS_SAME: &str = "passive=same";

/// What a `SITE PORTS` reply says about the passive data connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// `passive=FIRST-LAST`: ports of their own.
    Range(RangeInclusive<u16>),
    /// `passive=same` ([`PORTS_SAME`]): the control port (one-port mode).
    Same,
}

/// Reads a `SITE PORTS` reply line (with or without its code) back: `passive=FIRST-LAST`
/// with FIRST <= LAST, or `passive=same`; `None` for anything else.
pub fn parse_ports_reply(line: &str) -> Option<Ports> {
    let v = line.split_whitespace().find_map(|w| w.strip_prefix("passive="))?;
    if Some(v) == PORTS_SAME.strip_prefix("passive=") {
        return Some(Ports::Same);
    }
    let (a, b) = v.split_once('-')?;
    let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b).then_some(Ports::Range(a..=b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_bytes_are_stable() {
        let b = bytes();
        assert_eq!(b.len(), SIZE);
        assert_eq!(b, bytes());
        assert_eq!(sha256_hex().len(), 64);
        assert_ne!(&b[..32], &b[32..64]);
    }

    #[test]
    fn ports_reply_round_trips() {
        let r = 50000..=50003;
        assert_eq!(
            parse_ports_reply(&format!("200 {}", ports_reply(&r))),
            Some(Ports::Range(r))
        );
        assert_eq!(parse_ports_reply("passive=7-7"), Some(Ports::Range(7..=7)));
        assert_eq!(parse_ports_reply("200 passive=9-1"), None);
        assert_eq!(parse_ports_reply("200 nothing"), None);
        assert_eq!(parse_ports_reply("200 passive=a-b"), None);
    }

    #[test]
    fn the_one_port_reply_is_same() {
        assert_eq!(parse_ports_reply(&format!("200 {PORTS_SAME}")), Some(Ports::Same));
        assert_eq!(parse_ports_reply(PORTS_SAME), Some(Ports::Same));
        for bad in [
            "200 passive=SAME",
            "200 passive=same-1",
            "200 passive=",
            "200 same",
        ] {
            assert_eq!(parse_ports_reply(bad), None, "{bad:?}");
        }
    }
}
