//! Tensors, views and define-by-run autograd over any port.
//!
//! A [`Tensor`] is a typed, strided view of a port's buffer. Permute, slice, expand and
//! reshape change the layout only; arithmetic runs on the tensor's port through the port
//! contract. Every op that takes a tensor needing a gradient records one autograd node;
//! composites (softmax, norms, attention, cross-entropy...) record ONE node whose backward is
//! the composite's analytic `*Bwd`, never a trace of whatever the forward ran.

mod autograd;
mod error;
mod ops;
mod region;
mod shape;
mod tensor;

pub use anychip_port::{DType, Port};
pub use autograd::{is_grad_enabled, no_grad, Grads, NoGradGuard};
pub use error::{Error, Result};
pub use ops::all_to_all::all_to_all_rows;
pub use ops::attention::{attention, attention_autocast, attention_qkv, attention_qkv_autocast};
pub use ops::composite::{adamw_step, grad_norm};
pub use ops::composite::{cross_entropy, embedding, linear, linear_autocast, rope, AdamWParams};
pub use ops::glu::swiglu;
pub use ops::moe::{moe_combine, moe_experts, moe_router};
pub use region::{current_region, in_region};
pub use tensor::Tensor;
