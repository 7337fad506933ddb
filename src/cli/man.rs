//! `poolpilot man`: the manual pages, generated from the command-line definition itself.
//! Without `--dir`, the page `poolpilot(1)` goes to stdout; with `--dir`, `poolpilot.1` and one
//! page per command (`poolpilot-run.1`, `poolpilot-config-print.1`, ...) are written into that
//! folder, which must exist. It writes nowhere else.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};

/// Flags of `poolpilot man`.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write poolpilot.1 and one page per command into this folder instead of printing.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

/// `poolpilot man`: the top page on stdout, or every page into `--dir`.
pub(crate) fn run(args: &ManArgs) -> anyhow::Result<()> {
    match &args.dir {
        None => print_page(),
        Some(dir) => write_pages(dir),
    }
}

/// The page of `poolpilot` itself, which lists every command, on stdout.
fn print_page() -> anyhow::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(super::Cli::command())
        .render(&mut page)
        .context("cannot render the manual page")?;
    out!("{}", String::from_utf8_lossy(&page));
    Ok(())
}

/// Every page into `dir`, then the list of files written.
fn write_pages(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        anyhow::bail!(
            "--dir {}: not a folder; give an existing folder to write the pages into",
            dir.display()
        );
    }
    let mut cli = super::Cli::command().disable_help_subcommand(true);
    cli.build();
    let mut written = Vec::new();
    write_tree(cli, dir, &mut written)
        .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
    written.sort();
    for p in written {
        outln!("{}", p.display());
    }
    Ok(())
}

/// The page of `cmd` and of each command below it that is not hidden, as `clap_mangen`'s
/// `generate_to` does, keeping the path of each file written.
fn write_tree(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub.clone(), dir, written)?;
    }
    written.push(clap_mangen::Man::new(cmd).generate_to(dir)?);
    Ok(())
}
