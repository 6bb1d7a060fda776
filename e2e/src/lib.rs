//! E2E harness (skeleton).
