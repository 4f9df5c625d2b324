//! # fwdist-iq — the reference IQ
//!
//! A minimal explicit-FTPS client ([`client`], with per-session TLS resumption in
//! [`resume`]), the update procedure every IQ must follow ([`fetch`], its state directory in
//! [`state`]), a fleet simulator ([`simulate`]) and the customer-network doctor ([`doctor`]).
//!
//! Uses only the release format (`fwdist-release`) and a TLS client: no HTTP, SQL or FTP
//! server code is in its dependency tree, so a device team can take it as a library. It
//! talks to any FTPS server serving SPEC §4's tree. The `fwdist` binary's `fetch`,
//! `simulate` and `doctor` commands are thin fronts over it.

pub mod client;
pub mod doctor;
pub mod fetch;
pub mod resume;
pub mod simulate;
pub mod state;
