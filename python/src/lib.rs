//! `anychip._native`: the engine's entry points for the `anychip` Python package. The Python
//! side (python/anychip) validates arguments, shapes results (NumPy, pandas) and documents the
//! API; this side runs the engine with the GIL released and turns every error and panic into
//! an `anychip.AnychipError` carrying the CLI's one-line message.

mod errors;
mod model;
mod planner;
mod ports;
mod train;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(train::train, m)?)?;
    m.add_function(wrap_pyfunction!(train::presets, m)?)?;
    m.add_class::<model::NativeModel>()?;
    m.add_function(wrap_pyfunction!(planner::chips, m)?)?;
    m.add_function(wrap_pyfunction!(planner::plan, m)?)?;
    m.add_function(wrap_pyfunction!(planner::compare, m)?)?;
    m.add_function(wrap_pyfunction!(planner::fleet, m)?)?;
    m.add_function(wrap_pyfunction!(planner::check, m)?)?;
    m.add_function(wrap_pyfunction!(ports::ports, m)?)?;
    m.add_function(wrap_pyfunction!(ports::conform, m)?)?;
    m.add_function(wrap_pyfunction!(errors::panic_for_test, m)?)?;
    Ok(())
}
