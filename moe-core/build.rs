//! Sets `cfg(x86_simd)` where the kernels' x86 SIMD code is compiled: on x86_64, unless the
//! `portable` feature asks for the build a CPU without x86 SIMD (ARM, say) gets. A cfg of its own
//! keeps that condition in one place instead of at each of the kernels' `#[cfg]`s.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(x86_simd)");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let portable = std::env::var_os("CARGO_FEATURE_PORTABLE").is_some();
    if arch == "x86_64" && !portable {
        println!("cargo::rustc-cfg=x86_simd");
    }
}
