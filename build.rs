//! Build script: records what the binary was built from for `stockflow_build_info` (the git
//! commit, from `STOCKFLOW_COMMIT` when set, else `git rev-parse` of the source tree; and the
//! compiler's version). A build without git or outside a checkout says `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=STOCKFLOW_COMMIT");
    let commit = std::env::var("STOCKFLOW_COMMIT").ok().filter(|c| !c.is_empty()).or_else(git_commit);
    if let Some(commit) = commit {
        println!("cargo:rustc-env=STOCKFLOW_COMMIT={commit}");
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Some(version) = output(Command::new(rustc).arg("--version")) {
        println!("cargo:rustc-env=STOCKFLOW_RUSTC={}", version.trim_start_matches("rustc "));
    }
}

/// The checked-out commit (12 hex digits), watching the files that change when it does.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| output(Command::new("git").args(args));
    let git_dir = git(&["rev-parse", "--git-dir"])?;
    let common_dir = git(&["rev-parse", "--git-common-dir"]).unwrap_or_else(|| git_dir.clone());
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    let watched = [Path::new(&git_dir).join("HEAD"), Path::new(&common_dir).join("packed-refs")];
    let watched = watched.into_iter().chain(branch.map(|b| Path::new(&common_dir).join(b)));
    // A path that does not exist would rerun the script on every build.
    for path in watched.filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}

/// The command's trimmed stdout, when it ran and succeeded.
fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}
