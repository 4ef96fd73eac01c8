//! `anychip.ports()` and `anychip.conform()`: the registry the CLI uses (crates/ports).

use crate::errors::{detached, input, Result};
use anychip_conformance::Level;
use pyo3::prelude::*;
use serde_json::json;

/// Every registered port with its capabilities, or why it is unavailable here, as JSON.
#[pyfunction]
pub fn ports(py: Python<'_>) -> PyResult<String> {
    detached(py, || {
        let reg = anychip_ports::registry();
        let names = |v: &[anychip_port::DType]| v.iter().map(|d| d.name()).collect::<Vec<_>>();
        let rows: Vec<_> = reg
            .list()
            .into_iter()
            .map(|(name, about)| match reg.create(&name, &Default::default()) {
                Ok(p) => {
                    let c = p.capabilities();
                    json!({"name": name, "about": about, "available": true, "device": c.device,
                        "storage": names(&c.storage), "arithmetic": names(&c.arithmetic),
                        "fast_matmul": names(&c.fast_matmul), "fused": c.fused, "error": null})
                }
                Err(e) => json!({"name": name, "about": about, "available": false, "error": e.to_string()}),
            })
            .collect();
        Ok(serde_json::to_string(&rows).map_err(anyhow::Error::from)?)
    })
}

/// Run the conformance suite on `port` up to `level` against the `ref` oracle; the report as
/// JSON (that of `anychip conform --json`) with `passed` added.
#[pyfunction]
#[pyo3(signature = (port="cpu", level="L4", threads=None))]
pub fn conform(py: Python<'_>, port: &str, level: &str, threads: Option<usize>) -> PyResult<String> {
    detached(py, || -> Result<String> {
        let level: Level = level.parse().map_err(|e: String| input(e))?;
        let opened = anychip_ports::open(port, threads)?;
        let reference = anychip_ports::open("ref", None)?;
        let report = anychip_conformance::run(&opened, &reference, &level.up_to());
        let mut v = serde_json::to_value(&report).map_err(anyhow::Error::from)?;
        v["passed"] = json!(report.passed());
        Ok(v.to_string())
    })
}
