//! The conformance suite every port must pass.
