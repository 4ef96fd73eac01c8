//! The conformance suite (L0-L4) on the wgpu port, when an adapter exists (with
//! ANYCHIP_TEST_WGPU=1, a missing adapter fails every level instead of skipping it).

anychip_conformance::conformance_tests!(match anychip_test_support::port_or_skip(
    "wgpu",
    anychip_port_wgpu::WgpuPort::new()
) {
    Some(p) => std::sync::Arc::new(p),
    None => return,
});
