//! fill, cast, copy_strided, unary, binary, compare, select: one element per thread.

use crate::gpu::Gpu;
use crate::launch::{check_float, check_shape, check_view, grid, merge, run, Params};
use crate::memory::GpuMemory;
use crate::shader::{Slot, ELEMENTWISE};
use anychip_port::{f32_to_bf16, invalid, BinaryOp, CompareOp, DType, Result, UnaryOp, View};

/// Run the elementwise kernel: `out` in view slot 0, `ins` in slots 1.. (named a, b, c).
fn launch(g: &Gpu, tag: &str, body: &str, out: &View, ins: &[&View], scalar: Option<u32>) -> Result<()> {
    const NAMES: [&str; 3] = ["a", "b", "c"];
    let n = out.numel();
    let om = check_view(&format!("{tag} out"), out)?;
    let mut mems: Vec<&GpuMemory> = vec![om];
    let mut slots = vec![Slot::write("out", out.dtype)];
    for (i, v) in ins.iter().enumerate() {
        mems.push(check_view(&format!("{tag} {}", NAMES[i]), v)?);
        check_shape(&format!("{tag} {}", NAMES[i]), v, out.shape())?;
        slots.push(Slot::read(NAMES[i], v.dtype));
    }
    if n == 0 {
        return Ok(());
    }
    let views: Vec<&View> = std::iter::once(out).chain(ins.iter().copied()).collect();
    let strides: Vec<&[usize]> = views.iter().map(|v| v.layout.strides.as_slice()).collect();
    let (shape, st) = merge(out.shape(), &strides)?;
    let walk: Vec<(usize, &[usize])> = views.iter().zip(&st).map(|(v, s)| (v.layout.offset, s.as_slice())).collect();
    let mut p = Params::new(n);
    p.walk(&shape, &walk);
    if let Some(s) = scalar {
        p.set(2, s);
    }
    run(g, tag, ELEMENTWISE, "main", &slots, &[("BODY", body)], &mems, false, &p, grid(n)?)
}

/// out[i] = value rounded to out's dtype (bits computed on the host, exactly as `ref`).
pub fn fill(g: &Gpu, out: &View, value: f64) -> Result<()> {
    let bits = match out.dtype {
        DType::F32 => (value as f32).to_bits(),
        DType::BF16 => f32_to_bf16(value as f32) as u32,
        DType::I32 => value as i32 as u32,
    };
    launch(g, "fill", "out_store_bits(o.x, pw(2u));", out, &[], Some(bits))
}

/// out[i] = x[i] bit for bit.
pub fn copy_strided(g: &Gpu, x: &View, out: &View) -> Result<()> {
    if x.dtype != out.dtype {
        return invalid(format!("copy_strided: x is {} but out is {}; use cast to convert dtypes", x.dtype, out.dtype));
    }
    launch(g, "copy", "out_store_bits(o.x, a_bits(o.y));", out, &[x], None)
}

/// out[i] = x[i] converted through f32, float to I32 truncating toward zero; i32 to bf16
/// rounds to f32 first, as `ref` does. The same dtype copies bits.
pub fn cast(g: &Gpu, x: &View, out: &View) -> Result<()> {
    if x.dtype == out.dtype {
        return copy_strided(g, x, out);
    }
    launch(g, "cast", "out_store(o.x, a_load(o.y));", out, &[x], None)
}

fn unary_expr(op: UnaryOp) -> &'static str {
    match op {
        UnaryOp::Neg => "-x",
        UnaryOp::Exp => "exp_f32(x)",
        UnaryOp::Log => "log_f32(x)",
        UnaryOp::Sqrt => "sqrt(x)",
        UnaryOp::Recip => "1.0 / x",
        UnaryOp::Tanh => "tanh_f32(x)",
        UnaryOp::Erf => "erf_f32(x)",
        UnaryOp::Abs => "abs(x)",
    }
}

/// out[i] = op(x[i]) in f32.
pub fn unary(g: &Gpu, op: UnaryOp, x: &View, out: &View) -> Result<()> {
    check_float("unary x", x)?;
    check_float("unary out", out)?;
    let body = format!("let x = a_load(o.y); out_store(o.x, {});", unary_expr(op));
    launch(g, "unary", &body, out, &[x], None)
}

/// out[i] = op(a[i], b[i]) in f32.
pub fn binary(g: &Gpu, op: BinaryOp, a: &View, b: &View, out: &View) -> Result<()> {
    for (n, v) in [("binary a", a), ("binary b", b), ("binary out", out)] {
        check_float(n, v)?;
    }
    let e = match op {
        BinaryOp::Add => "x + y",
        BinaryOp::Sub => "x - y",
        BinaryOp::Mul => "x * y",
        BinaryOp::Div => "x / y",
        BinaryOp::Max => "maximum(x, y)",
        BinaryOp::Min => "minimum(x, y)",
    };
    let body = format!("let x = a_load(o.y); let y = b_load(o.z); out_store(o.x, {e});");
    launch(g, "binary", &body, out, &[a, b], None)
}

/// out[i] = op(a[i], b[i]) ? 1 : 0, false whenever either is NaN.
pub fn compare(g: &Gpu, op: CompareOp, a: &View, b: &View, out: &View) -> Result<()> {
    for (n, v) in [("compare a", a), ("compare b", b), ("compare out", out)] {
        check_float(n, v)?;
    }
    let c = match op {
        CompareOp::Eq => "x == y",
        CompareOp::Lt => "x < y",
    };
    let body = format!(
        "let x = a_load(o.y); let y = b_load(o.z); \
         out_store(o.x, select(0.0, 1.0, ({c}) && !is_nan(x) && !is_nan(y)));"
    );
    launch(g, "compare", &body, out, &[a, b], None)
}

/// out[i] = cond[i] != 0 ? a[i] : b[i]; the test is on the bits, so NaN picks a and -0 picks b.
pub fn select(g: &Gpu, cond: &View, a: &View, b: &View, out: &View) -> Result<()> {
    for (n, v) in [("select cond", cond), ("select a", a), ("select b", b), ("select out", out)] {
        check_float(n, v)?;
    }
    let body = "let c = bitcast<u32>(c_load(o.w)) & 0x7fffffffu; \
                out_store(o.x, select(b_load(o.z), a_load(o.y), c != 0u));";
    launch(g, "select", body, out, &[a, b, cond], None)
}
