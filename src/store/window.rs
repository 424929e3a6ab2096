//! The exact sliding-window rule.
