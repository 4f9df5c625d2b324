//! # fwdist-release — the release format server and IQ share
//!
//! What a signed release is, independent of how it travels: the identifiers it is named by
//! ([`id`]: MAC, model, version, SHA-256), its manifest ([`manifest`], SPEC §3), the signature
//! envelope and key ids ([`signing`]), and the facts of the built-in probe account that the
//! server serves and `fwdist doctor` reads ([`probe`]).
//!
//! No I/O beyond reading a trusted-key directory; no FTP, HTTP, SQL or async runtime. The
//! server (`fwdist`) and the reference IQ (`fwdist-iq`) both depend on it, and on nothing of
//! each other.

pub mod id;
pub mod manifest;
pub mod probe;
pub mod signing;
