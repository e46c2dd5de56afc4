use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hxjobs::cli::Cli::parse();
    hxjobs::telemetry::init(cli.log_format, cli.color, &cli.log_level);
    hxjobs::cli::main(cli)
}
