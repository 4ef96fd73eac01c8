//! fill, cast and copy_strided: the primitives that move or convert values without math.

use crate::memory::{check_shape, check_view, encode, load, load_bits, store, store_bits};
use anychip_port::{Result, View};

/// out[i] = value, rounded once to out's dtype (I32 truncates toward zero).
pub fn fill(out: &View, value: f64) -> Result<()> {
    check_view("fill out", out)?;
    store_bits("fill out", out, &vec![encode(out.dtype, value); out.numel()])
}

/// out[i] = x[i] converted. The same dtype copies bits (NaN payloads survive); otherwise the
/// exact value goes through [`crate::memory::encode`]: one rounding, float to I32 truncates.
pub fn cast(x: &View, out: &View) -> Result<()> {
    check_view("cast x", x)?;
    check_shape("cast out", out, x.shape())?;
    if x.dtype == out.dtype {
        return copy_strided(x, out);
    }
    let vals = load("cast x", x)?;
    store("cast out", out, &vals)
}

/// out[i] = x[i] bit for bit, for views of equal shape and dtype.
pub fn copy_strided(x: &View, out: &View) -> Result<()> {
    check_view("copy_strided x", x)?;
    check_shape("copy_strided out", out, x.shape())?;
    if x.dtype != out.dtype {
        return anychip_port::invalid(format!(
            "copy_strided: x is {} but out is {}; use cast to convert dtypes",
            x.dtype, out.dtype
        ));
    }
    let bits = load_bits("copy_strided x", x)?;
    store_bits("copy_strided out", out, &bits)
}
