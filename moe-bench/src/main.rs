//! `moe-bench`: speed of the sparse MoE layer against its baselines, and of decoding.

mod bandwidth;
mod cli;
mod decode;
mod layer;
mod random_gguf;
mod timing;

fn main() -> std::process::ExitCode {
    moe_core::alloc::keep_freed_memory_mapped();
    match cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
