//! Stand-ins (skeleton).
