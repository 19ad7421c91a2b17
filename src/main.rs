//! The `stockflow` binary: parses the command line into a validated run configuration and
//! dispatches on the mode.

mod cli;
mod cmd;
mod config;
mod io;
mod runtime;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};

use cli::{CheckpointAction, Cli, Command};
use config::file as config_file;
use runtime::{checkpoint, progress};

fn main() -> Result<()> {
    #[cfg(not(feature = "system-alloc"))]
    purge_freed_memory_promptly();
    match run_command() {
        // `stockflow consume … | head`: the reader has what it wanted; not an error.
        Err(e) if closed_pipe(&e) => Ok(()),
        result => result,
    }
}

/// Whether `error` is stdout's reader having gone away.
fn closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

fn run_command() -> Result<()> {
    progress::init_logs();
    io::fs::report_file_size_limit();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    cli::reject_old_hostfile_flag(&argv)?;
    let command = config_file::with_config_flag(Cli::command());
    let argv = config_file::merged_args(argv, command.clone())?;
    let matches = command.clone().get_matches_from(argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command.clone()).exit());
    match cli.command {
        Command::Replay(args) => cmd::replay::run(args.config()?, args.report, &args.metrics),
        Command::Explain(args) => cmd::explain::run(args.config()?),
        Command::Gen(args) => cmd::gen::run(args),
        Command::Run(args) => cmd::run::run(args.stream.config(None, &args.cluster)?, &args.metrics),
        Command::Batch(batch) => {
            let args = batch.job;
            cmd::run::run(args.stream.config(Some(batch.until), &args.cluster)?, &args.metrics)
        }
        Command::Produce(args) => cmd::produce::produce(args),
        Command::Consume(args) => cmd::produce::consume(args),
        Command::Config(args) => cmd::config::run(args, &command),
        Command::Checkpoint(CheckpointAction::Show(args)) => checkpoint::show(&args),
    }
}

// glibc's malloc took a third of a profile of many small keys; mimalloc's thread-local size
// classes suit differential's batch churn better (replay of 400k events on 100k keys: 43 s -> 19 s).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its option enum's 16th member in the v3 sources that
/// libmimalloc-sys 0.1.49 builds; the crate names no constant for it).
#[cfg(not(feature = "system-alloc"))]
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// How long freed memory stays committed before mimalloc returns it to the OS.
#[cfg(not(feature = "system-alloc"))]
const PURGE_DELAY_MS: std::ffi::c_long = 100;

#[cfg(not(feature = "system-alloc"))]
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// Freed memory goes back to the OS 100 ms after it is freed, not mimalloc v3's 1000 ms: the
/// setup tick frees each stage's buffers (the ledger's stash, the row operator's bases, the
/// ATP changes as they are formatted) just before the next stage fills its own, and a second's
/// delay kept both resident. At 10M events / 1M keys, peak RSS 715 -> 668 MB; 10 ms gave 655
/// MB but cost ~8% more CPU in page faults, 100 ms costs none this box can tell
/// (docs/benchmarks.md). The environment's `MIMALLOC_PURGE_DELAY`, where set, wins.
#[cfg(not(feature = "system-alloc"))]
fn purge_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: plain C calls on an option index of the linked mimalloc; options may be set
        // at any time.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

#[cfg(all(test, not(feature = "system-alloc")))]
mod tests {
    /// The option index names the purge delay: its default (1000 ms in mimalloc v3) before,
    /// [`PURGE_DELAY_MS`] after.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: as in `purge_freed_memory_promptly`.
        let before = unsafe { super::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        super::purge_freed_memory_promptly();
        let after = unsafe { super::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!((before, after), (1000, super::PURGE_DELAY_MS));
        }
    }
}
