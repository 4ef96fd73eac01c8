use anychip_port::PortError;

/// Errors from tensor operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The port failed or rejected the call (transparent: `{:#}` would otherwise print the
    /// port's message twice, once as this error and once as its source).
    #[error(transparent)]
    Port(#[from] PortError),
    /// Shapes do not agree; the message names both.
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    /// Dtypes do not agree or are not allowed here.
    #[error("dtype mismatch in {op}: {detail}")]
    DType { op: &'static str, detail: String },
    /// Two tensors live on different ports.
    #[error("{op}: tensors live on different ports ({a} and {b}); move one with .to_port()")]
    Port2 { op: &'static str, a: String, b: String },
    /// backward() called on something that cannot start a backward pass.
    #[error("backward: {0}")]
    Backward(String),
}

/// Result of a tensor operation.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn shape_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Shape { op, detail: detail.into() })
}
