//! fill, cast and copy_strided: the primitives that move or convert data without arithmetic.

use super::dense_out;
use crate::elem::{load, raw, store, Walk, BLOCK};
use anychip_port::{f32_to_bf16, invalid, DType, Result, View};

/// out[i] = value, rounded to out's dtype (I32 truncates toward zero).
pub fn fill(out: &View, value: f64) -> Result<()> {
    dense_out(out)?;
    let o = raw(out)?;
    let walk = Walk::new(&[&out.layout])?;
    walk.for_each(|b| {
        // SAFETY: blocks are disjoint and in bounds (checked by `raw`).
        unsafe {
            match o.dtype {
                DType::F32 => splat(o.ptr::<f32>().add(b.at[0]), b.stride[0], b.len, value as f32),
                DType::BF16 => splat(o.ptr::<u16>().add(b.at[0]), b.stride[0], b.len, f32_to_bf16(value as f32)),
                DType::I32 => splat(o.ptr::<i32>().add(b.at[0]), b.stride[0], b.len, value as i32),
            }
        }
    });
    Ok(())
}

unsafe fn splat<T: Copy>(p: *mut T, s: usize, n: usize, v: T) {
    if s == 1 {
        std::slice::from_raw_parts_mut(p, n).fill(v);
    } else {
        for i in 0..n {
            *p.add(i * s) = v;
        }
    }
}

/// out[i] = x[i] converted to out's dtype; float to I32 truncates toward zero (NaN gives 0).
pub fn cast(x: &View, out: &View) -> Result<()> {
    if x.dtype == out.dtype {
        return copy_strided(x, out);
    }
    dense_out(out)?;
    let (xr, o) = (raw(x)?, raw(out)?);
    let walk = Walk::new(&[&x.layout, &out.layout])?;
    walk.for_each_init(
        || [0f32; BLOCK],
        |t, b| {
            if x.dtype == DType::F32 && out.dtype == DType::BF16 && b.stride[0] == 1 && b.stride[1] == 1 {
                // The mixed-precision hot path: straight from one slice to the other.
                // SAFETY: in bounds; blocks disjoint in the output; distinct dtypes, so x and out
                // are different buffers (in-place is only allowed with one layout and dtype).
                unsafe {
                    let src = std::slice::from_raw_parts(xr.ptr::<f32>().add(b.at[0]), b.len);
                    let dst = std::slice::from_raw_parts_mut(o.ptr::<u16>().add(b.at[1]), b.len);
                    crate::math::f32_to_bf16_slice(src, dst);
                }
                return;
            }
            let t = &mut t[..b.len];
            // I32 -> float rounds once (i32 as f32); float -> I32 truncates in `store`.
            // SAFETY: in bounds; blocks disjoint in the output; x is read before out is written.
            unsafe {
                load(xr, b.at[0], b.stride[0], t);
                store(o, b.at[1], b.stride[1], t);
            }
        },
    );
    Ok(())
}

/// out[i] = x[i] for equal shapes and dtypes, any strides: the only data-movement primitive.
pub fn copy_strided(x: &View, out: &View) -> Result<()> {
    if x.dtype != out.dtype {
        return invalid(format!("copy_strided needs equal dtypes, got {} and {}; use cast", x.dtype, out.dtype));
    }
    dense_out(out)?;
    let (xr, o) = (raw(x)?, raw(out)?);
    let walk = Walk::new(&[&x.layout, &out.layout])?;
    walk.for_each(|b| {
        // SAFETY: in bounds; blocks disjoint in the output. `ptr::copy` tolerates overlap of an
        // in-place copy with equal layouts (the only aliasing the contract allows).
        unsafe {
            match x.dtype.size() {
                4 => move_elems(xr.ptr::<u32>(), o.ptr::<u32>(), &b),
                _ => move_elems(xr.ptr::<u16>(), o.ptr::<u16>(), &b),
            }
        }
    });
    Ok(())
}

unsafe fn move_elems<T: Copy>(src: *const T, dst: *mut T, b: &crate::elem::Block) {
    let (s, d) = (src.add(b.at[0]), dst.add(b.at[1]));
    if b.stride[0] == 1 && b.stride[1] == 1 {
        std::ptr::copy(s, d, b.len);
    } else {
        for i in 0..b.len {
            *d.add(i * b.stride[1]) = *s.add(i * b.stride[0]);
        }
    }
}
