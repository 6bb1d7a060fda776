//! The part of keygate that reads attacker input first: Salesforce ids, the XML reader on
//! quick-xml (with keygate's stricter rules) and the SOAP 1.1 Outbound Message parser. What
//! only runs on the way out (fault texts, the ack and fault renderers) is in keygate-core's
//! `soap` module, compiled for size. Host-free like keygate-core, which re-exports every module; its tests live there
//! (`plugin/core/tests/{soap,xml,hostile}.rs`).

pub mod ids;
pub mod soap;
pub mod xml;
