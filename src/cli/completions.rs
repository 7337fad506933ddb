//! `poolpilot completions SHELL`: prints the shell's completion script, generated from the
//! command-line definition itself, so that it never lists a command or a flag that is gone.
//! It only prints: it never writes into a shell's folders (README.md shows where each goes).

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Flags of `poolpilot completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub(crate) shell: Shell,
}

/// `poolpilot completions`: the script on stdout.
pub(crate) fn run(args: &CompletionsArgs) {
    let mut script = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut super::Cli::command(),
        "poolpilot",
        &mut script,
    );
    out!("{}", String::from_utf8_lossy(&script));
}
