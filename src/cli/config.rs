//! `poolpilot config print`: the configuration `run` would use, as YAML, each setting
//! commented with where it came from. It prints where secrets are read from, never a secret.

use clap::Subcommand;

use super::run::{CONFIG_HELP, ConfigArgs};

/// `poolpilot config ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the effective configuration, secrets redacted.
    ///
    /// The output is YAML that loads back as a config file; each setting is commented with
    /// where it came from (flag, environment, file, default). Takes `run`'s flags.
    #[command(after_help = CONFIG_HELP)]
    Print(ConfigArgs),
}

/// `poolpilot config print`: prints what it can, then fails as `run` would when a secret
/// `run` needs cannot be read.
pub(crate) fn run(command: &ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Print(args) => {
            let eff = args.resolve()?;
            out!("{}", eff.to_yaml());
            eff.require_secrets()?;
            Ok(())
        }
    }
}
