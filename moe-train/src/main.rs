//! `moe-train`: train a sparse MoE transformer from scratch.

fn main() -> std::process::ExitCode {
    moe_core::alloc::keep_freed_memory_mapped();
    // The library's progress reports (evaluations, warnings) go to stderr as plain lines;
    // RUST_LOG=warn quiets them.
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .parse_default_env()
        .format(|out, record| {
            use std::io::Write;
            match record.level() {
                log::Level::Info => writeln!(out, "{}", record.args()),
                level => writeln!(out, "{}: {}", level.as_str().to_lowercase(), record.args()),
            }
        })
        .init();
    match moe_train::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
