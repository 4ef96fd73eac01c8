use std::fmt;

/// Errors a port reports; messages are meant for people, naming the problem and the fix.
#[derive(Debug, Clone, PartialEq)]
pub enum PortError {
    /// The device ran out of memory for an allocation of this many bytes.
    OutOfMemory { bytes: usize, detail: String },
    /// The port cannot run this op with these dtypes or parameters (reported as "unsupported").
    Unsupported(String),
    /// Arguments violate the contract (shapes, dtypes, bounds).
    Invalid(String),
    /// The device or driver failed.
    Device(String),
}

/// Result of a port call.
pub type Result<T> = std::result::Result<T, PortError>;

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortError::OutOfMemory { bytes, detail } => write!(
                f,
                "out of device memory allocating {} MiB ({detail}); reduce --batch or --ctx, or pick a smaller --preset",
                bytes / (1 << 20)
            ),
            PortError::Unsupported(m) => write!(f, "unsupported: {m}"),
            PortError::Invalid(m) => write!(f, "invalid arguments: {m}"),
            PortError::Device(m) => write!(f, "device error: {m}"),
        }
    }
}

impl std::error::Error for PortError {}

/// Shorthand for a contract violation.
pub fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(PortError::Invalid(msg.into()))
}
