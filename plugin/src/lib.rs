//! keygate core (skeleton).
