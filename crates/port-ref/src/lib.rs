//! The reference port: naive, obviously correct, f64 accumulation; the oracle that defines the semantics.
