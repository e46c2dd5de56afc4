use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hxjobs::cli::Cli::parse();
    if !cli.is_service() {
        // A command whose output goes to a closed pipe (`hxjobs runs | head`)
        // ends quietly, as Unix tools do. Services keep Rust's default
        // (ignored, so a write to a closed socket is an error, not a kill).
        // SAFETY: setting a signal's disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    hxjobs::telemetry::init(cli.log_format, cli.color, &cli.log_filter());
    // A panic is logged like any error (with its place), not printed raw.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panicked");
    }));
    hxjobs::cli::main(cli)
}
