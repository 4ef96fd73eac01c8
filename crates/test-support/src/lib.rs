//! Shared test plumbing for the ports' own tests and the conformance suite, so that every
//! test puts values on a port and reads them back the same way.
//!
//! - [`transfer`]: uploads and read-backs through any layout, returning the port's errors
//!   (the conformance suite turns them into named failures; it never panics);
//! - the functions at the crate root: the same transfers for `#[test]` code, where a failed
//!   upload is a failed test, so they panic with the port's error;
//! - [`data`]: deterministic inputs (Philox streams, a xorshift generator, special values);
//! - [`check`]: element-wise comparisons with named tolerances;
//! - [`cli`]: the command line's failure contract (exit 2, one `error:` line, no panic);
//! - [`scratch`]: test directories removed when the test passes, kept when it fails;
//! - [`port_or_skip`]: open an optional port, or fail when the environment demands it.

pub mod check;
pub mod cli;
pub mod data;
pub mod scratch;
pub mod transfer;

pub use check::{assert_close, assert_invalid, assert_same, tol_for, Tol};
pub use data::{philox_values, with_specials, Gen, SPECIALS};
pub use scratch::{scratch, token_cache, Scratch};

use anychip_port::{DType, Layout, Port, View};
use std::fmt::Display;

fn must<T>(what: &str, r: anychip_port::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A buffer holding `storage` (as `dtype`) seen through `layout`.
pub fn put(port: &dyn Port, storage: &[f32], dtype: DType, layout: Layout) -> View {
    must("upload", transfer::upload(port, storage, dtype, layout))
}

/// A contiguous tensor of `shape` holding `values`.
pub fn tensor(port: &dyn Port, values: &[f32], dtype: DType, shape: &[usize]) -> View {
    assert_eq!(values.len(), shape.iter().product::<usize>(), "values do not fill shape {shape:?}");
    put(port, values, dtype, Layout::contiguous(shape))
}

/// A contiguous BF16 tensor from raw bit patterns.
pub fn bf16_bits(port: &dyn Port, bits: &[u16], shape: &[usize]) -> View {
    must("upload", transfer::upload_bf16_bits(port, bits, shape))
}

/// A contiguous I32 tensor.
pub fn ints(port: &dyn Port, values: &[i32], shape: &[usize]) -> View {
    must("upload", transfer::upload_ints(port, values, shape))
}

/// An output filled with the sentinel -777 so that elements a call leaves unwritten show.
pub fn output(port: &dyn Port, dtype: DType, shape: &[usize]) -> View {
    must("upload", transfer::filled(port, transfer::SENTINEL, dtype, shape))
}

/// The same buffer seen through another layout.
pub fn restride(v: &View, shape: &[usize], strides: &[usize], offset: usize) -> View {
    View { buf: v.buf.clone(), dtype: v.dtype, layout: Layout { shape: shape.into(), strides: strides.into(), offset } }
}

/// The logical values of `v` in row-major order (bits kept: -0, NaN payloads, bf16 widened
/// exactly; I32 converted to f32).
pub fn get(port: &dyn Port, v: &View) -> Vec<f32> {
    must("read back", transfer::download_f32(port, v))
}

/// The logical values of `v` in row-major order as f64.
pub fn get_f64(port: &dyn Port, v: &View) -> Vec<f64> {
    must("read back", transfer::download(port, v))
}

/// The element bits of `v` in row-major order (bf16 in the low half).
pub fn get_bits(port: &dyn Port, v: &View) -> Vec<u32> {
    must("read back", transfer::download_bits(port, v))
}

/// The values of an I32 view in row-major order.
pub fn get_i32(port: &dyn Port, v: &View) -> Vec<i32> {
    get_bits(port, v).into_iter().map(|b| b as i32).collect()
}

/// The whole buffer behind `v`, decoded (to check that nothing outside the view changed).
pub fn get_all(port: &dyn Port, v: &View) -> Vec<f32> {
    must("read back", transfer::download_storage(port, v))
}

/// Same storage and layout on another port.
pub fn mirror(from: &dyn Port, v: &View, to: &dyn Port) -> View {
    must("mirror", transfer::mirror(from, v, to))
}

/// Layout variants of a logical shape, each over a storage buffer of the returned length:
/// contiguous, offset by 3, and (rank >= 2) transposed storage of the last two axes.
pub fn layouts(shape: &[usize]) -> Vec<(&'static str, Layout, usize)> {
    let n: usize = shape.iter().product();
    let mut v = vec![("contiguous", Layout::contiguous(shape), n)];
    let mut off = Layout::contiguous(shape);
    off.offset = 3;
    v.push(("offset", off, n + 3));
    if shape.len() >= 2 {
        // Store the last two axes swapped, then view them back: strides (.., 1, rows).
        let r = shape.len();
        let mut st = shape.to_vec();
        st.swap(r - 1, r - 2);
        let mut strides = Layout::contiguous(&st).strides;
        strides.swap(r - 1, r - 2);
        v.push(("transposed", Layout { shape: shape.to_vec(), strides, offset: 0 }, n));
    }
    v
}

/// The port `opened`, or `None` (the test then passes without running, printing SKIPPED)
/// when it could not be opened on this machine. When the environment variable
/// `ANYCHIP_TEST_<NAME>` is `1` (CI sets it where the device must exist), a port that does not
/// open fails the test instead, so that a CI run cannot pass without running.
pub fn port_or_skip<P, E: Display>(name: &str, opened: Result<P, E>) -> Option<P> {
    let var = format!("ANYCHIP_TEST_{}", name.to_ascii_uppercase());
    match opened {
        Ok(p) => Some(p),
        Err(e) if std::env::var(&var).is_ok_and(|v| v == "1") => {
            panic!("{var}=1 demands the {name} port, but it did not open: {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: the {name} port did not open on this machine ({e}); set {var}=1 to make this a failure"
            );
            None
        }
    }
}
