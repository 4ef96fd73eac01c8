//! WGSL assembly: the shared prelude, the math library, one generated accessor block per
//! bound view, and one op-family file from `kernels/`.
//!
//! Every buffer is bound as `array<u32>` and typed by its accessors, so one WGSL file serves
//! f32, bf16 and i32: `NAME_bits(e)` (raw element bits), `NAME_load(e)` (value as f32),
//! `NAME_store_bits(e, bits)` and `NAME_store(e, f32)` (rounds to the view's dtype).
//! bf16 is emulated: two elements per u32 word, element e in half e & 1. A bf16 output is
//! bound as `array<atomic<u32>>` and each store replaces its half with atomicAnd + atomicOr,
//! so neighbouring threads writing the two halves of one word never lose each other's bits.

use anychip_port::DType;

/// The WGSL shared by every kernel.
pub const PRELUDE: &str = include_str!("kernels/prelude.wgsl");
/// exp, log, tanh, erf, cos in f32.
pub const MATH: &str = include_str!("kernels/math.wgsl");
/// One element per thread.
pub const ELEMENTWISE: &str = include_str!("kernels/elementwise.wgsl");
/// One workgroup per output element.
pub const REDUCE: &str = include_str!("kernels/reduce.wgsl");
/// Tiled matrix multiply.
pub const MATMUL: &str = include_str!("kernels/matmul.wgsl");
/// gather_rows / scatter_add_rows.
pub const ROWS: &str = include_str!("kernels/rows.wgsl");
/// Philox streams.
pub const RANDOM: &str = include_str!("kernels/random.wgsl");
/// Byte-granular copies.
pub const BYTES: &str = include_str!("kernels/bytes.wgsl");

/// A bound view: its accessor prefix, element type, and whether the kernel writes it.
#[derive(Clone, Copy)]
pub struct Slot {
    pub name: &'static str,
    pub dtype: DType,
    pub writes: bool,
}

impl Slot {
    /// A view the kernel only reads.
    pub fn read(name: &'static str, dtype: DType) -> Slot {
        Slot { name, dtype, writes: false }
    }
    /// A view the kernel writes (and may read).
    pub fn write(name: &'static str, dtype: DType) -> Slot {
        Slot { name, dtype, writes: true }
    }
    /// Cache-key fragment.
    pub fn key(&self) -> String {
        format!("{}:{}{}", self.name, self.dtype.name(), if self.writes { "w" } else { "" })
    }
}

/// The binding declaration and accessors of `slot` at `binding`.
fn accessors(binding: usize, s: &Slot) -> String {
    let n = s.name;
    let atomic = s.writes && s.dtype == DType::BF16;
    let elem = if atomic { "atomic<u32>" } else { "u32" };
    let mut w = format!("@group(0) @binding({binding}) var<storage, read_write> {n}_buf: array<{elem}>;\n");
    // Raw bits of element e.
    w += &match (s.dtype, atomic) {
        (DType::BF16, true) => format!(
            "fn {n}_bits(e: u32) -> u32 {{ return (atomicLoad(&{n}_buf[e >> 1u]) >> ((e & 1u) * 16u)) & 0xffffu; }}\n"
        ),
        (DType::BF16, false) => {
            format!("fn {n}_bits(e: u32) -> u32 {{ return ({n}_buf[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu; }}\n")
        }
        _ => format!("fn {n}_bits(e: u32) -> u32 {{ return {n}_buf[e]; }}\n"),
    };
    // Value as f32.
    w += &match s.dtype {
        DType::F32 => format!("fn {n}_load(e: u32) -> f32 {{ return bitcast<f32>({n}_bits(e)); }}\n"),
        DType::BF16 => format!("fn {n}_load(e: u32) -> f32 {{ return bitcast<f32>({n}_bits(e) << 16u); }}\n"),
        DType::I32 => format!("fn {n}_load(e: u32) -> f32 {{ return f32(bitcast<i32>({n}_bits(e))); }}\n"),
    };
    if s.writes {
        w += &if atomic {
            format!(
                "fn {n}_store_bits(e: u32, b: u32) {{\n    let sh = (e & 1u) * 16u;\n    \
                 atomicAnd(&{n}_buf[e >> 1u], ~(0xffffu << sh));\n    \
                 atomicOr(&{n}_buf[e >> 1u], (b & 0xffffu) << sh);\n}}\n"
            )
        } else {
            format!("fn {n}_store_bits(e: u32, b: u32) {{ {n}_buf[e] = b; }}\n")
        };
        let enc = match s.dtype {
            DType::F32 => "bitcast<u32>(v)",
            DType::BF16 => "f32_to_bf16(v)",
            DType::I32 => "bitcast<u32>(f32_to_i32(v))",
        };
        w += &format!("fn {n}_store(e: u32, v: f32) {{ {n}_store_bits(e, {enc}); }}\n");
    }
    w
}

/// Full WGSL for `family` with `slots` bound at 1, 2, ... and `{{NAME}}` holes filled.
pub fn source(family: &str, slots: &[Slot], fills: &[(&str, &str)]) -> String {
    let mut src = String::from(PRELUDE);
    src += MATH;
    for (i, s) in slots.iter().enumerate() {
        src += &accessors(i + 1, s);
    }
    let mut body = family.to_string();
    for (hole, text) in fills {
        body = body.replace(&format!("{{{{{hole}}}}}"), text);
    }
    src + &body
}

/// Cache key of a kernel: a family tag, its slots, and its holes' text.
pub fn key(tag: &str, slots: &[Slot], fills: &[(&str, &str)]) -> String {
    let mut k = tag.to_string();
    for s in slots {
        k += "|";
        k += &s.key();
    }
    for (_, t) in fills {
        k += "|";
        k += t;
    }
    k
}
