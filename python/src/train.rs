//! `anychip.train` and `anychip.Run.resume`: the CLI's training loop, its settings given as
//! `TrainConfig` field names, each step shown to Python (callback, Ctrl-C) between steps.

use crate::errors::{attached, input, Failure, Result};
use anychip_model_config::ModelConfig;
use anychip_train::resume::Flags;
use anychip_train::signals::StopRequest;
use anychip_train::step_guard::OnNan;
use anychip_train::trainer::{train_observed, Flow, RunOptions, StepRecord};
use anychip_train::TrainConfig;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

/// The model presets, for error messages and `anychip.presets()`.
#[pyfunction]
pub fn presets() -> Vec<&'static str> {
    ModelConfig::preset_names()
}

fn preset(name: &str) -> Result<ModelConfig> {
    ModelConfig::preset(name).ok_or_else(|| {
        input(format!("unknown preset '{name}'; available presets: {}", ModelConfig::preset_names().join(", ")))
    })
}

/// The run's config: the preset's (or `init`'s) defaults with `settings` (a JSON object of
/// `TrainConfig` fields) laid over them, and the CLI's derived defaults (min_lr a tenth of lr,
/// warm-up at most a tenth of the steps unless given).
fn config(preset_name: &str, init: Option<PathBuf>, settings: &str) -> Result<TrainConfig> {
    let (name, model) = match &init {
        Some(dir) => (format!("hf:{}", dir.display()), anychip_hf::read_config(dir)?.1),
        None => (preset_name.to_string(), preset(preset_name)?),
    };
    let mut cfg = TrainConfig::default_for(&name, model);
    cfg.init = init;
    let given: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(settings).map_err(|e| input(format!("training settings: {e}")))?;
    let serde_json::Value::Object(mut merged) = serde_json::to_value(&cfg).map_err(anyhow::Error::from)? else {
        unreachable!("a struct serialises to an object")
    };
    for (k, v) in &given {
        if !merged.contains_key(k) || k == "model" || k == "preset" || k == "init" {
            let known: Vec<&str> =
                merged.keys().map(|k| k.as_str()).filter(|k| !["model", "preset", "init"].contains(k)).collect();
            return Err(input(format!("unknown training setting '{k}'; known settings: {}", known.join(", "))));
        }
        merged.insert(k.clone(), v.clone());
    }
    let mut out: TrainConfig = serde_json::from_value(serde_json::Value::Object(merged))
        .map_err(|e| input(format!("training settings: {e}")))?;
    if given.contains_key("lr") && !given.contains_key("min_lr") {
        out.min_lr = out.lr / 10.0;
    }
    if !given.contains_key("warmup") {
        out.warmup = out.warmup.min(out.steps / 10);
    }
    Ok(out)
}

/// One step's record as a Python dict (the fields of a metrics.jsonl line).
fn record_dict<'py>(py: Python<'py>, r: &StepRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("step", r.step)?;
    d.set_item("loss", r.loss)?;
    d.set_item("lr", r.lr)?;
    d.set_item("grad_norm", r.grad_norm)?;
    d.set_item("tokens", r.tokens)?;
    d.set_item("tokens_per_s", r.tokens_per_s)?;
    d.set_item("elapsed_s", r.elapsed_s)?;
    d.set_item("val_loss", r.val_loss)?;
    Ok(d)
}

/// What the observer saw that must reach Python after the loop returns.
enum Stopped {
    /// Ctrl-C (or another signal handler's exception), caught between steps.
    Signal(PyErr),
    /// `on_step` raised.
    Callback(PyErr),
}

/// Train (or, with `resume`, continue) a run; returns the summary as JSON. `settings` is a JSON
/// object of `TrainConfig` fields. Steps run with the GIL released; between steps `on_step` is
/// called with the step's record (returning False stops the run, checkpointed) and pending
/// signals are handled, so Ctrl-C stops after the current step with a resumable checkpoint.
#[pyfunction]
#[pyo3(signature = (preset, settings, out, port, threads=None, init=None, resume=None, steps=None, stop_after=None, on_step=None, quiet=false, on_nan="stop"))]
#[allow(clippy::too_many_arguments)]
pub fn train(
    py: Python<'_>,
    preset: &str,
    settings: &str,
    out: PathBuf,
    port: &str,
    threads: Option<usize>,
    init: Option<PathBuf>,
    resume: Option<PathBuf>,
    steps: Option<u64>,
    stop_after: Option<u64>,
    on_step: Option<Py<PyAny>>,
    quiet: bool,
    on_nan: &str,
) -> PyResult<String> {
    let on_nan: OnNan = on_nan.parse().map_err(|e: String| pyo3::exceptions::PyValueError::new_err(e))?;
    let mut stopped: Option<Stopped> = None;
    let summary = attached(py, || -> Result<String> {
        let mut cfg = config(preset, init, settings)?;
        cfg.port = port.to_string();
        cfg.threads = threads;
        let opened = anychip_ports::open(port, threads)?;
        // Signals are Python's to handle (the observer checks them between steps); `steps` is
        // the one flag a resumed run may change from here.
        let flags = Flags { steps, ..Flags::default() };
        let stop = StopRequest::never();
        let opts = RunOptions { out, resume, progress: false, quiet, flags, on_nan, stop, stop_after };
        let mut observe = |r: &StepRecord| -> Flow {
            Python::attach(|py| {
                if let Err(e) = py.check_signals() {
                    stopped = Some(Stopped::Signal(e));
                    return Flow::Stop;
                }
                let Some(cb) = &on_step else { return Flow::Continue };
                match record_dict(py, r).and_then(|d| cb.call1(py, (d,))) {
                    Err(e) => {
                        stopped = Some(Stopped::Callback(e));
                        Flow::Stop
                    }
                    Ok(v) if is_false(v.bind(py)) => Flow::Stop,
                    Ok(_) => Flow::Continue,
                }
            })
        };
        // The steps release the GIL; the observer takes it back between them.
        let s = py.detach(|| {
            let observe = &mut observe;
            train_observed(&cfg, &opts, None, &opened, observe)
        });
        let s = s.map_err(Failure::from)?;
        serde_json::to_string(&s).map_err(|e| Failure::from(anyhow::Error::from(e)))
    })?;
    match stopped {
        None => Ok(summary),
        Some(Stopped::Callback(e)) => Err(e),
        Some(Stopped::Signal(e)) => {
            let s: serde_json::Value = serde_json::from_str(&summary).unwrap_or_default();
            let dir = s["out"].as_str().unwrap_or("?").to_string();
            if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                return Err(pyo3::exceptions::PyKeyboardInterrupt::new_err(format!(
                    "stopped after step {} with a checkpoint in {dir}; anychip.Run.resume({dir:?}) continues the run",
                    s["steps"]
                )));
            }
            Err(e)
        }
    }
}

/// Whether a callback returned `False` itself (not None, not another falsy value).
fn is_false(v: &Bound<'_, PyAny>) -> bool {
    v.is_instance_of::<pyo3::types::PyBool>() && !v.is_truthy().unwrap_or(true)
}
