//! `moe-train`: train a sparse MoE transformer from scratch.

fn main() -> std::process::ExitCode {
    match moe_train::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
