//! `stockflow config check FILE [--mode M]`: prints the configuration a `--config` file resolves
//! to (secrets masked), or why it would be refused.

use std::io::Write;

use anyhow::Result;

use crate::cli::{ConfigAction, ConfigArgs};

/// Runs `stockflow config ...`; `cli` is the command line's definition, whose flags are the
/// file's keys.
pub fn run(args: ConfigArgs, cli: &clap::Command) -> Result<()> {
    let ConfigAction::Check(check) = args.action;
    let resolved = crate::config::check::check(&check.file, check.mode.as_deref(), cli)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(resolved.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
