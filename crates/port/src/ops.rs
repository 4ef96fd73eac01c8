//! Operator selectors for the primitive entry points.

/// Elementwise functions of one float argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    /// 1/x
    Recip,
    Tanh,
    /// Error function; needed by exact GELU, cheap on every chip's math library.
    Erf,
    Abs,
}

/// Elementwise functions of two float arguments (same shape; broadcast by stride 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// IEEE maximum, except NaN in either operand gives NaN.
    Max,
    /// IEEE minimum, except NaN in either operand gives NaN.
    Min,
}

/// Comparisons; the result is 1.0 where true and 0.0 where false, in the output's float dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Lt,
}

/// Reductions; `Sum` accumulates in f32 or wider, `Max` propagates NaN, and an empty `Max` is -inf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
}

/// Distributions for the counter-based random primitive (see [`crate::philox`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Uniform on [0, 1): bit-identical across ports.
    Uniform,
    /// Standard normal (Box-Muller on two uniforms): identical up to the ports' log/cos rounding.
    Normal,
}

impl UnaryOp {
    /// Every unary op, for sweeps.
    pub const ALL: [UnaryOp; 8] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Recip,
        UnaryOp::Tanh,
        UnaryOp::Erf,
        UnaryOp::Abs,
    ];
}

impl BinaryOp {
    /// Every binary op, for sweeps.
    pub const ALL: [BinaryOp; 6] =
        [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min];
}
