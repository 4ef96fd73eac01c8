//! The conformance suite (L0-L4) on the wgpu port, when an adapter exists.

mod common;

anychip_conformance::conformance_tests!(match common::port() {
    Some(p) => std::sync::Arc::new(p),
    None => return,
});
