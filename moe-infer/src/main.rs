//! `moe-infer`: run Mixtral-architecture checkpoints from the command line.

mod cli;

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
