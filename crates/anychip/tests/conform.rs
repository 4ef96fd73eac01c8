//! `anychip conform`'s exit code, the contract scripts and CI rely on: 0 when the port passes,
//! 2 with one `error:` line when a check fails or the port cannot be opened.

use anychip_test_support::cli::assert_clean_failure;
use anychip_test_support::{scratch, Scratch};
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

fn conform(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anychip"));
    c.arg("conform").args(args).env_remove("ANYCHIP_BLAS").env_remove("ANYCHIP_SHADOW");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn a_passing_port_exits_0() {
    let o = conform(&["--port", "cpu", "--threads", "2", "--level", "L1"], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn an_unknown_port_or_level_exits_2() {
    assert_clean_failure(&conform(&["--port", "no-such-chip"], &[]), "no-such-chip");
    assert_clean_failure(&conform(&["--port", "ref", "--level", "L9"], &[]), "L9");
}

/// A CBLAS `cblas_sgemm` (row-major) that computes the loader's 2 x 2 probe exactly and every
/// other product 1% too large: a subtly broken vendor library, which is what `conform` is for.
const BROKEN_CBLAS: &str = r#"
void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    (void)order;
    float bias = (m == 2 && n == 2 && k == 2) ? 1.0f : 1.01f;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++)
                s += (double)(ta == 111 ? a[i * lda + p] : a[p * lda + i]) *
                     (tb == 111 ? b[p * ldb + j] : b[j * ldb + p]);
            float r = alpha * (float)s * bias;
            c[i * ldc + j] = beta == 0.0f ? r : r + beta * c[i * ldc + j];
        }
}
"#;

/// Build [`BROKEN_CBLAS`] with the C compiler Rust links with on Unix: the library's path and
/// the directory holding it, which must outlive its use.
fn broken_cblas() -> (PathBuf, Scratch) {
    let dir = scratch("cblas");
    let (src, lib) = (dir.join("broken_cblas.c"), dir.join("libbroken_cblas.so"));
    fs::write(&src, BROKEN_CBLAS).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc).args(["-shared", "-fPIC", "-O1", "-o"]).arg(&lib).arg(&src).status();
    assert!(built.is_ok_and(|s| s.success()), "{cc} could not build {}", src.display());
    (lib, dir)
}

#[cfg(target_os = "linux")]
#[test]
fn a_port_with_a_broken_blas_fails_by_name_and_exits_2() {
    let (lib, _dir) = broken_cblas();
    let lib = lib.to_str().unwrap();
    let o = conform(&["--port", "cpu", "--threads", "2", "--level", "L1"], &[("ANYCHIP_BLAS", lib)]);
    assert_clean_failure(&o, "failed");
    let out = String::from_utf8_lossy(&o.stdout);
    let failed: Vec<&str> = out.lines().filter(|l| l.contains(" FAIL ")).collect();
    assert!(failed.iter().any(|l| l.starts_with("L1  matmul") && l.contains(" f32 ")), "{out}");
    assert!(failed.iter().all(|l| l.starts_with("L1  matmul")), "an honest op was blamed: {failed:#?}");
}
