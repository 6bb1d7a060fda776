//! The part of keygate that reads attacker input first: Salesforce ids, the XML reader on
//! quick-xml (with keygate's stricter rules) and the SOAP 1.1 Outbound Message parser and
//! replies. Host-free like keygate-core, which re-exports every module; its tests live there
//! (`plugin/core/tests/{soap,xml,hostile}.rs`).

pub mod ids;
pub mod soap;
pub mod text;
pub mod xml;
