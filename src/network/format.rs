//! How the requirements are printed: the [`Format`], and the [`Chain`] the nftables and
//! iptables rules go into, both validated: they come from the API query and the command line.

/// How the requirements are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The JSON document of `GET /api/v1/network-requirements`.
    Json,
    /// A few human-readable lines.
    Text,
    /// `add rule inet filter CHAIN ...` lines for `nft -f FILE`.
    Nftables,
    /// `iptables-restore --noflush` input for the filter table.
    Iptables,
}

/// A format name that is not one of [`Format::NAMES`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown format {0:?}: use json, text, nftables or iptables")]
pub struct UnknownFormat(pub String);

impl Format {
    pub const NAMES: [&'static str; 4] = ["json", "text", "nftables", "iptables"];

    /// # Errors
    /// Anything but the exact (lowercase) names in [`Format::NAMES`].
    pub fn parse(s: &str) -> Result<Format, UnknownFormat> {
        match s {
            "json" => Ok(Format::Json),
            "text" => Ok(Format::Text),
            "nftables" => Ok(Format::Nftables),
            "iptables" => Ok(Format::Iptables),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// A firewall chain name for the nftables/iptables formats: an ASCII letter, then ASCII
/// letters, digits, `_` or `-`; at most 32 characters. (nft rejects a name that starts with a
/// digit, and iptables would read a leading `-` as an option.)
///
/// The built-in chain names are spelled as each tool expects, whatever their case:
/// `input`/`forward`/`output` for nftables (Debian's `table inet filter`), `INPUT`/`FORWARD`/
/// `OUTPUT` for iptables; so `--chain output` means the IQ host's own output chain in both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain(String);

/// Why a chain name was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "invalid chain {0:?}: use 1-{max} ASCII letters, digits, '_' or '-', starting with a letter",
    max = Chain::MAX_LEN
)]
pub struct InvalidChain(pub String);

impl Chain {
    pub const MAX_LEN: usize = 32;
    const BUILTIN: [&'static str; 3] = ["input", "forward", "output"];

    /// # Errors
    /// A name outside the rule in [`Chain`]'s documentation.
    pub fn parse(s: &str) -> Result<Chain, InvalidChain> {
        let ok = s.len() <= Self::MAX_LEN
            && s.bytes().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if ok {
            Ok(Chain(s.to_owned()))
        } else {
            Err(InvalidChain(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_builtin(&self) -> bool {
        Self::BUILTIN.iter().any(|b| self.0.eq_ignore_ascii_case(b))
    }

    pub(super) fn nftables(chain: Option<&Chain>) -> String {
        match chain {
            None => "forward".into(),
            Some(c) if c.is_builtin() => c.0.to_ascii_lowercase(),
            Some(c) => c.0.clone(),
        }
    }

    pub(super) fn iptables(chain: Option<&Chain>) -> String {
        match chain {
            None => "FORWARD".into(),
            Some(c) if c.is_builtin() => c.0.to_ascii_uppercase(),
            Some(c) => c.0.clone(),
        }
    }
}

impl std::str::FromStr for Chain {
    type Err = InvalidChain;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Chain::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_chains_are_validated() {
        for name in Format::NAMES {
            assert!(Format::parse(name).is_ok(), "{name}");
        }
        for bad in ["", "JSON", "yaml", "nft"] {
            assert!(Format::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["forward", "OUTPUT", "iq_out-2", "a", &"c".repeat(32)] {
            assert!(Chain::parse(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "1abc",
            "-A",
            "_x",
            "a b",
            "a;drop",
            "a\nb",
            "fwd.x",
            "é",
            &"c".repeat(33),
        ] {
            assert!(Chain::parse(bad).is_err(), "{bad:?}");
        }
    }
}
