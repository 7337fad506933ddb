//! The `poolpilot` binary: everything is in the library; see `poolpilot::cli`.

fn main() -> std::process::ExitCode {
    poolpilot::cli::main()
}
