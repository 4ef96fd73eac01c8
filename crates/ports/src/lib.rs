//! The ports this build knows and how a front end (the `anychip` CLI, the Python package) opens
//! one. This is the one place that names chips: the engine crates (core, nn, optim, data, train)
//! receive an opened `Arc<dyn Port>`. Out-of-tree ports register the same way from their own crate.

mod shadow;

use anychip_port::{Port, PortOptions, Registry};
pub use shadow::ShadowPort;
use std::sync::Arc;

/// A registry holding every in-tree port this binary was built with (`cpu` first: it is the
/// default; `wgpu`, behind the default cargo feature `wgpu`, reports itself unavailable where
/// the machine has no Vulkan/Metal/DX12 adapter).
pub fn registry() -> Registry {
    let mut reg = Registry::new();
    anychip_port_cpu::register(&mut reg);
    anychip_port_ref::register(&mut reg);
    anychip_port_sim::register(&mut reg);
    #[cfg(feature = "wgpu")]
    anychip_port_wgpu::register(&mut reg);
    reg
}

/// Instantiate the named port with `threads` worker threads. With `ANYCHIP_SHADOW=1` in the
/// environment every op is also run on `ref` and the first divergent one stops the run.
pub fn open(name: &str, threads: Option<usize>) -> anyhow::Result<Arc<dyn Port>> {
    anychip_train::validate::check_threads(threads)?;
    if name.starts_with("sim:") {
        return Ok(open_sim(name, threads, anychip_port_sim::SimOptions::default())?);
    }
    let reg = registry();
    let port = reg.create(name, &PortOptions { threads })?;
    if std::env::var("ANYCHIP_SHADOW").is_ok_and(|v| !v.is_empty() && v != "0") {
        let oracle = reg.create("ref", &PortOptions::default())?;
        return Ok(Arc::new(ShadowPort::new(port, oracle)));
    }
    Ok(port)
}

/// Open `sim:CHIP` or `sim:CHIP+PORT` (debug mode: PORT, opened here, computes the values).
pub fn open_sim(
    name: &str,
    threads: Option<usize>,
    mut opts: anychip_port_sim::SimOptions,
) -> anyhow::Result<Arc<anychip_port_sim::SimPort>> {
    let spec = name.strip_prefix("sim:").unwrap_or(name);
    if let (_, Some(values)) = anychip_port_sim::split_spec(spec) {
        opts.values = Some(open(values, threads)?);
    }
    anychip_port_sim::open(spec, &opts)
}

/// Fail now, with the port's own one-line reason, when `port` holds no tensor values (a
/// shapes-only `sim` port): training to convergence, evaluating and sampling all read values.
pub fn require_values(port: &Arc<dyn Port>) -> anyhow::Result<()> {
    let probe = port.alloc(4)?;
    port.read(&probe, 0, &mut [0u8; 4])?;
    Ok(())
}
