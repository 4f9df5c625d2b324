//! The reference IQ (`fwdist fetch`): a minimal explicit-FTPS client and the update
//! procedure every IQ must follow. Uses `store` (manifest, signatures) and `domain`; knows
//! nothing of the server's internals — it talks to any FTPS server serving SPEC §4's tree.

pub mod client;
pub mod doctor;
pub mod fetch;
pub mod resume;
pub mod simulate;
pub mod state;
