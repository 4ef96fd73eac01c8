//! The port contract: the runtime and primitives a chip implements so anychip can train on it.
//!
//! A port is an object implementing [`Port`]. It owns device memory ([`Buffer`]) and runs
//! twelve primitives on strided [`View`]s. Composite operations ([`Composite`]) have default
//! decompositions (crate `anychip-decomp`) written only against the primitives; a port may
//! claim any composite with a fused kernel by handling it in [`Port::composite`].
//!
//! Ports register at run time in a [`Registry`]; the engine never names a chip.
//! See `docs/porting.md` for the order in which to implement and how to prove it.

pub mod check;
mod collective;
mod composite;
mod dtype;
pub mod error;
mod forward;
mod layout;
mod ops;
pub mod philox;
mod registry;
mod runtime;

pub use collective::Collectives;
pub use composite::{Composite, GeluKind, Handled};
pub use dtype::{bf16_to_f32, f32_to_bf16, DType};
pub use error::{invalid, PortError, Result};
pub use forward::{Forward, Primitive};
pub use layout::Layout;
pub use ops::{BinaryOp, CompareOp, Distribution, ReduceOp, UnaryOp};
pub use registry::{PortFactory, PortOptions, Registry};
pub use runtime::{Buffer, Capabilities, DeviceMemory, Port, View};
