//! The ports this build knows. Out-of-tree ports register the same way from their own crate.

use anychip_port::{Port, PortOptions, Registry};
use std::sync::Arc;

/// A registry holding every in-tree port (`cpu` first: it is the default).
pub fn registry() -> Registry {
    let mut reg = Registry::new();
    anychip_port_cpu::register(&mut reg);
    anychip_port_ref::register(&mut reg);
    reg
}

/// Instantiate the named port with `threads` worker threads.
pub fn open(name: &str, threads: Option<usize>) -> anyhow::Result<Arc<dyn Port>> {
    Ok(registry().create(name, &PortOptions { threads })?)
}
