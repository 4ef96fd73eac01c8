//! An optional vendor BLAS for f32 products (Intel MKL or OpenBLAS), loaded at run time.
//!
//! The built-in f32 GEMM is the `gemm` crate. On x86 Intel's MKL is faster on training shapes
//! (it is what PyTorch's CPU build links statically), so where MKL is installed the port can
//! hand its f32 products to MKL's `cblas_sgemm` instead. Everything else (fused composites,
//! bf16 kernels, the allocator) stays the port's own.
//!
//! Why loaded at run time (libloading) rather than linked: MKL is a 200 MB optional download
//! (`pip install mkl`), so a default build must neither need it nor carry it, and one binary
//! must run both with and without it. The CBLAS entry point is a stable C ABI.
//!
//! `ANYCHIP_BLAS` chooses, once per port, when the port is created:
//! - `builtin` (or `off`, `gemm`): the gemm crate; the default;
//! - `auto`: MKL where found, else the gemm crate;
//! - `mkl`, `openblas`: that library, or an error that says how to install it;
//! - a path to a shared library exporting `cblas_sgemm`.
//!
//! A library is only as good as its conformance run: MKL passes `anychip conform --port cpu`;
//! Debian 12's OpenBLAS 0.3.21 fails one small doubly transposed product there.
//!
//! The library runs single-threaded: each port worker calls it on its own slice of the
//! output, so the port's pool stays the only set of threads (a second, spinning OpenMP pool
//! would steal the cores from the port's next elementwise op).

use anychip_port::{PortError, Result};
use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// CBLAS enum values (identical in MKL and OpenBLAS's cblas.h).
const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;

type Sgemm =
    unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, f32, *const f32, i32, *const f32, i32, f32, *mut f32, i32);

/// A loaded BLAS: its `cblas_sgemm` and a name for `anychip ports`.
pub struct Blas {
    /// e.g. "MKL 2026.2 (/root/.local/lib/libmkl_rt.so.3)".
    pub about: String,
    sgemm: Sgemm,
    _lib: libloading::Library,
}

thread_local! {
    /// The BLAS of the port whose worker this thread is (set by the pool's start handler), so
    /// that two ports in one process may choose differently.
    static CURRENT: Cell<Option<&'static Blas>> = const { Cell::new(None) };
}

/// The BLAS this thread's port multiplies f32 on, if any.
pub fn current() -> Option<&'static Blas> {
    CURRENT.with(Cell::get)
}

/// Make `b` this thread's BLAS (called once on each worker of a port's pool).
pub fn set_current(b: Option<&'static Blas>) {
    CURRENT.with(|c| c.set(b));
}

/// Which f32 GEMM the `ANYCHIP_BLAS` setting asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    Builtin,
    Auto,
    Mkl,
    OpenBlas,
    Path(PathBuf),
}

impl Choice {
    /// Parse a setting (`ANYCHIP_BLAS`); None or empty is the default, `builtin`.
    pub fn parse(s: Option<&str>) -> Choice {
        match s.map(str::trim).unwrap_or("") {
            "" | "builtin" | "off" | "gemm" | "none" => Choice::Builtin,
            "auto" => Choice::Auto,
            "mkl" => Choice::Mkl,
            "openblas" => Choice::OpenBlas,
            p => Choice::Path(PathBuf::from(p)),
        }
    }

    /// The choice in the environment.
    pub fn from_env() -> Choice {
        Choice::parse(std::env::var("ANYCHIP_BLAS").ok().as_deref())
    }
}

/// The library `choice` names (None: the built-in gemm), loading it on first use.
pub fn resolve(choice: &Choice) -> Result<Option<&'static Blas>> {
    let fail = |what: &str, fix: &str| {
        Err(PortError::Device(format!("ANYCHIP_BLAS={what}: {fix}; or unset ANYCHIP_BLAS to use the built-in GEMM")))
    };
    match choice {
        Choice::Builtin => Ok(None),
        Choice::Auto => Ok(find(Kind::Mkl)),
        Choice::Mkl => match find(Kind::Mkl) {
            Some(b) => Ok(Some(b)),
            None => fail("mkl", "no libmkl_rt found (searched the loader path, $VIRTUAL_ENV, $CONDA_PREFIX, ~/.local, /usr/local, /opt/intel); install it with `pip install mkl` or set LD_LIBRARY_PATH"),
        },
        Choice::OpenBlas => match find(Kind::OpenBlas) {
            Some(b) => Ok(Some(b)),
            None => fail("openblas", "no libopenblas found on the loader path; install it (e.g. `apt install libopenblas0-pthread`)"),
        },
        Choice::Path(p) => match load(p, kind_of(p)) {
            Ok(b) => Ok(Some(b)),
            Err(e) => fail(&p.display().to_string(), &format!("cannot load it as a CBLAS library: {e}")),
        },
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Mkl,
    OpenBlas,
    Other,
}

fn kind_of(p: &Path) -> Kind {
    let name = p.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.contains("mkl") {
        Kind::Mkl
    } else if name.contains("openblas") {
        Kind::OpenBlas
    } else {
        Kind::Other
    }
}

/// The first library of `kind` that loads, by bare name (the loader's own search) and then in
/// the places pip, conda and Intel's installer put it.
fn find(kind: Kind) -> Option<&'static Blas> {
    let names: &[&str] = match kind {
        Kind::Mkl => &["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so", "mkl_rt.2.dll", "mkl_rt.dll"],
        Kind::OpenBlas => &["libopenblas.so.0", "libopenblas.so", "libopenblas.dll"],
        Kind::Other => &[],
    };
    let mut dirs: Vec<PathBuf> = vec![PathBuf::new()];
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(v) = std::env::var_os(var) {
            dirs.push(PathBuf::from(v).join("lib"));
        }
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".local/lib"));
    }
    dirs.extend(
        ["/usr/local/lib", "/opt/intel/oneapi/mkl/latest/lib", "/opt/intel/oneapi/mkl/latest/lib/intel64"]
            .map(PathBuf::from),
    );
    for d in &dirs {
        for n in names {
            let p = if d.as_os_str().is_empty() { PathBuf::from(n) } else { d.join(n) };
            if !d.as_os_str().is_empty() && !p.exists() {
                continue;
            }
            if let Ok(b) = load(&p, kind) {
                return Some(b);
            }
        }
    }
    None
}

/// Load `path` once per process (libraries are process-wide) and set it single-threaded.
fn load(path: &Path, kind: Kind) -> std::result::Result<&'static Blas, String> {
    static LOADED: Mutex<Option<HashMap<PathBuf, &'static Blas>>> = Mutex::new(None);
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    let map = loaded.get_or_insert_with(HashMap::new);
    if let Some(b) = map.get(path) {
        return Ok(b);
    }
    // SAFETY: loading runs the library's initialisers; MKL and OpenBLAS have no unsound ones.
    // The symbols are read with their documented C signatures.
    let blas = unsafe {
        let lib = libloading::Library::new(path).map_err(|e| e.to_string())?;
        let version = match kind {
            Kind::Mkl => {
                // Before any other MKL call: sequential threading, 32-bit integers (LP64).
                if let Ok(f) = lib.get::<unsafe extern "C" fn(i32) -> i32>(b"MKL_Set_Threading_Layer\0") {
                    f(1);
                }
                if let Ok(f) = lib.get::<unsafe extern "C" fn(i32) -> i32>(b"MKL_Set_Interface_Layer\0") {
                    f(0);
                }
                let mut buf = [0u8; 198];
                if let Ok(f) = lib.get::<unsafe extern "C" fn(*mut u8, i32)>(b"MKL_Get_Version_String\0") {
                    f(buf.as_mut_ptr(), buf.len() as i32);
                }
                let s = String::from_utf8_lossy(&buf[..buf.iter().position(|&c| c == 0).unwrap_or(0)]).into_owned();
                // "Intel(R) oneAPI Math Kernel Library Version 2026.2-Product Build ..." -> "MKL 2026.2"
                let v = s.split("Version ").nth(1).and_then(|r| r.split(['-', ' ']).next()).unwrap_or("").to_string();
                format!("MKL {v}").trim().to_string()
            }
            Kind::OpenBlas => {
                if let Ok(f) = lib.get::<unsafe extern "C" fn(i32)>(b"openblas_set_num_threads\0") {
                    f(1);
                }
                "OpenBLAS".to_string()
            }
            Kind::Other => "CBLAS".to_string(),
        };
        let sgemm = *lib.get::<Sgemm>(b"cblas_sgemm\0").map_err(|e| e.to_string())?;
        // One known product before trusting it: a 64-bit-integer (ILP64) build would read our
        // 32-bit sizes wrongly.
        let (a, b, mut c) = ([1f32, 2.0, 3.0, 4.0], [5f32, 6.0, 7.0, 8.0], [f32::NAN; 4]);
        sgemm(ROW_MAJOR, NO_TRANS, TRANS, 2, 2, 2, 1.0, a.as_ptr(), 2, b.as_ptr(), 2, 0.0, c.as_mut_ptr(), 2);
        if c != [17.0, 23.0, 39.0, 53.0] {
            return Err(format!("its cblas_sgemm computed {c:?} for a known 2x2 product (an ILP64 build?)"));
        }
        Blas { about: format!("{version} ({})", path.display()), sgemm, _lib: lib }
    };
    let b: &'static Blas = Box::leak(Box::new(blas));
    map.insert(path.to_path_buf(), b);
    Ok(b)
}

/// An r x c operand with strides (rs, cs) as CBLAS row-major: (transposed, leading dimension),
/// or None when neither stride is unit.
fn as_cblas(r: usize, c: usize, rs: usize, cs: usize) -> Option<(bool, usize)> {
    if (cs == 1 || c == 1) && (r == 1 || rs >= c) {
        return Some((false, if r == 1 { c } else { rs }));
    }
    if (rs == 1 || r == 1) && (c == 1 || cs >= r) {
        return Some((true, if c == 1 { r } else { cs }));
    }
    None
}

impl Blas {
    /// c = alpha a b + beta c on one thread, or false (nothing done) when the strides are not
    /// CBLAS's (no unit stride in some operand) or a size exceeds its 32-bit integers.
    ///
    /// # Safety
    /// Pointers and strides must describe in-bounds matrices of the stated shapes.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn sgemm(
        &self,
        (m, n, k): (usize, usize, usize),
        (a, ars, acs): (*const f32, usize, usize),
        (b, brs, bcs): (*const f32, usize, usize),
        (c, crs, ccs): (*mut f32, usize, usize),
        alpha: f32,
        beta: f32,
    ) -> bool {
        // A column-major c is the row-major c^T = b^T a^T.
        let ((m, n), (a, ars, acs), (b, brs, bcs), (crs, ccs)) = if ccs == 1 || n == 1 {
            ((m, n), (a, ars, acs), (b, brs, bcs), (crs, ccs))
        } else {
            ((n, m), (b, bcs, brs), (a, acs, ars), (ccs, crs))
        };
        let Some((ta, lda)) = as_cblas(m, k, ars, acs) else { return false };
        let Some((tb, ldb)) = as_cblas(k, n, brs, bcs) else { return false };
        // After the swap above c has unit columns, so only a non-transposed c is expected here.
        let Some((false, ldc)) = as_cblas(m, n, crs, ccs) else { return false };
        let int = |x: usize| i32::try_from(x.max(1)).ok();
        let (Some(mi), Some(ni), Some(ki), Some(la), Some(lb), Some(lc)) =
            (int(m), int(n), int(k), int(lda), int(ldb), int(ldc))
        else {
            return false;
        };
        let t = |x: bool| if x { TRANS } else { NO_TRANS };
        (self.sgemm)(ROW_MAJOR, t(ta), t(tb), mi, ni, ki, alpha, a, la, b, lb, beta, c, lc);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        assert_eq!(Choice::parse(None), Choice::Builtin);
        assert_eq!(Choice::parse(Some(" off ")), Choice::Builtin);
        assert_eq!(Choice::parse(Some("auto")), Choice::Auto);
        assert_eq!(Choice::parse(Some("mkl")), Choice::Mkl);
        assert_eq!(Choice::parse(Some("/x/libfoo.so")), Choice::Path("/x/libfoo.so".into()));
    }

    #[test]
    fn strides_map_to_cblas() {
        assert_eq!(as_cblas(3, 4, 4, 1), Some((false, 4)));
        assert_eq!(as_cblas(3, 4, 1, 3), Some((true, 3)));
        assert_eq!(as_cblas(3, 4, 8, 1), Some((false, 8)));
        assert_eq!(as_cblas(1, 4, 0, 1), Some((false, 4)));
        assert_eq!(as_cblas(3, 4, 2, 2), None);
        // A leading dimension shorter than a row would make rows overlap.
        assert_eq!(as_cblas(3, 4, 2, 1), None);
    }

    #[test]
    fn a_missing_library_is_one_clear_error() {
        let e = resolve(&Choice::Path("/nonexistent/libnothing.so".into())).err().unwrap().to_string();
        assert!(e.contains("ANYCHIP_BLAS=/nonexistent/libnothing.so") && e.contains("unset ANYCHIP_BLAS"), "{e}");
    }
}
