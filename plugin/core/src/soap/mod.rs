//! SOAP as the rest of the core sees it: keygate-soap's Outbound Message model, parser and errors
//! (compiled for speed: every webhook request runs them), and here, compiled for size, what only
//! runs on the way out: the ack and fault renderers and the fault texts of refused messages.

mod reason;
mod render;

pub use keygate_soap::soap::*;
pub use reason::Reason;
pub use render::{ack, escape_into, fault, FaultCode};
