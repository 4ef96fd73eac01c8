//! Compile the AVX512-BF16 matmul kernel only with a compiler that has its intrinsics as stable
//! (Rust 1.89); the workspace itself keeps to 1.80, where the widening bf16 path runs instead.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(anychip_avx512bf16)");
    println!("cargo::rerun-if-env-changed=RUSTC");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(1).and_then(|ver| ver.split('.').nth(1).map(str::to_owned)))
        .and_then(|m| m.parse::<u32>().ok());
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch == "x86_64" && minor.is_some_and(|m| m >= 89) {
        println!("cargo::rustc-cfg=anychip_avx512bf16");
    }
}
