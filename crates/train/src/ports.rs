//! The ports this build knows. Out-of-tree ports register the same way from their own crate.

use anychip_nn::Precision;
use anychip_port::{DType, Port, PortOptions, Registry};
use std::sync::Arc;

/// A registry holding every in-tree port (`cpu` first: it is the default; `wgpu` reports
/// itself unavailable where the machine has no Vulkan/Metal/DX12 adapter).
pub fn registry() -> Registry {
    let mut reg = Registry::new();
    anychip_port_cpu::register(&mut reg);
    anychip_port_ref::register(&mut reg);
    anychip_port_wgpu::register(&mut reg);
    reg
}

/// Instantiate the named port with `threads` worker threads. With `ANYCHIP_SHADOW=1` in the
/// environment every op is also run on `ref` and the first divergent one stops the run.
pub fn open(name: &str, threads: Option<usize>) -> anyhow::Result<Arc<dyn Port>> {
    let reg = registry();
    let port = reg.create(name, &PortOptions { threads })?;
    if std::env::var("ANYCHIP_SHADOW").is_ok_and(|v| !v.is_empty() && v != "0") {
        let oracle = reg.create("ref", &PortOptions::default())?;
        return Ok(Arc::new(crate::shadow::ShadowPort::new(port, oracle)));
    }
    Ok(port)
}

/// What a run asking for `requested` multiplies in on `port`, and the one-line notice to print
/// at start when that differs. bf16 runs as asked where the port multiplies bf16 fast (a native
/// bf16 dot product or matrix unit); elsewhere rounding operands to bf16 and widening them back
/// costs more than multiplying in f32 (0.94x on an AVX2-only EPYC), so the products run in f32.
/// `ANYCHIP_BF16_WIDEN=1` keeps bf16 operands anyway, to check bf16 numerics on any machine.
pub fn matmul_precision(port: &dyn Port, requested: Precision) -> (Precision, Option<String>) {
    let widen = std::env::var("ANYCHIP_BF16_WIDEN").is_ok_and(|v| !v.is_empty() && v != "0");
    if requested != Precision::Bf16 || widen || port.capabilities().fast_matmul.contains(&DType::BF16) {
        return (requested, None);
    }
    let note = format!(
        "note: port {} has no fast bf16 matmul here, so --precision bf16 multiplies in f32 (faster than widening bf16; ANYCHIP_BF16_WIDEN=1 keeps bf16 operands)",
        port.name()
    );
    (Precision::F32, Some(note))
}
