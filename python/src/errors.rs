//! The boundary between the engine's errors and Python's exceptions. The exception classes are
//! defined in Python (anychip/_errors.py) so that they can also derive from the built-in class
//! a Python user would catch (`ValueError`, `FileNotFoundError`, `NotImplementedError`).

use anychip_port::PortError;
use pyo3::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Which `anychip` exception a failure raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `AnychipError`: anything else.
    Error,
    /// `InputError`: a bad argument (unknown preset, wrong dtype or shape, ...).
    Input,
    /// `DataError`: a file or directory that is missing or unreadable.
    Data,
    /// `UnsupportedError`: a feature the port or build does not have.
    Unsupported,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::Error => "AnychipError",
            Kind::Input => "InputError",
            Kind::Data => "DataError",
            Kind::Unsupported => "UnsupportedError",
        }
    }
}

/// An error on its way to Python: its kind, the CLI's one-line message and, for a pinned layout
/// the memory model prices over usable memory, that layout's plan as JSON (the exception's
/// `plan` attribute, as `anychip plan --layout` prints the plan before its error line).
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
    pub plan: Option<String>,
}

/// A bad argument, as `InputError`.
pub fn input(message: impl Into<String>) -> Failure {
    Failure { kind: Kind::Input, message: message.into(), plan: None }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        // One line, the cause chain joined, exactly as `anychip` prints after "error: ".
        let message = format!("{e:#}").replace('\n', " ");
        Failure { kind: classify(&e), message, plan: None }
    }
}

/// The kind of an engine error, from the types in its cause chain.
fn classify(e: &anyhow::Error) -> Kind {
    for cause in e.chain() {
        if let Some(PortError::Unsupported(_)) = cause.downcast_ref::<PortError>() {
            return Kind::Unsupported;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied) {
                return Kind::Data;
            }
        }
    }
    Kind::Error
}

impl Failure {
    /// The Python exception: an instance of the class anychip/_errors.py defines for the kind.
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let made = py
            .import("anychip._errors")
            .and_then(|m| m.getattr(self.kind.class_name()))
            .and_then(|cls| cls.call1((self.message.clone(),)))
            .and_then(|exc| {
                if let Some(plan) = &self.plan {
                    exc.setattr("plan", py.import("json")?.call_method1("loads", (plan,))?)?;
                }
                Ok(exc)
            });
        match made {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// Run engine work `f` with the GIL released, catching any panic: a bug in the engine becomes
/// an `AnychipError` naming it instead of aborting the interpreter.
pub fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    settle(py, outcome)
}

/// [`detached`] while holding the GIL (for work that calls back into Python on this thread).
pub fn attached<T>(py: Python<'_>, f: impl FnOnce() -> Result<T>) -> PyResult<T> {
    settle(py, catch_unwind(AssertUnwindSafe(f)))
}

fn settle<T>(py: Python<'_>, outcome: std::thread::Result<Result<T>>) -> PyResult<T> {
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(f)) => Err(f.into_pyerr(py)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let message =
                format!("internal error: {what} (a bug in anychip; please report it with the call that caused it)");
            Err(Failure { kind: Kind::Error, message, plan: None }.into_pyerr(py))
        }
    }
}

/// Panics inside the boundary, so the tests can show that a panic becomes `AnychipError`.
#[pyfunction]
pub fn panic_for_test(py: Python<'_>) -> PyResult<()> {
    detached(py, || -> Result<()> { panic!("deliberate panic for the boundary test") })
}
