//! The documentation checks itself:
//! - every command in the README's `sh` blocks works: `stockflow ...` and
//!   `cargo run --release -- ...` run the built binary in a scratch directory that sees the
//!   repository's files; `cargo test`/`cargo build` lines are the ones `.ci/run` runs; the
//!   `apt-get install` line names every package `.ci/run` installs for the build;
//! - docs/format.md's worked example (its `jsonl input` blocks) is replayed with the page's own
//!   command, and every output line the page shows (`jsonl out/FILE` blocks) is in that file;
//! - every relative link of README.md and docs/*.md names a file that exists, and a `#part`
//!   a heading of that file.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Longest a documented command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A fenced code block: its info string (after the backticks) and its lines.
struct Block {
    info: String,
    lines: Vec<String>,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for line in markdown.lines() {
        match (&mut open, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => open = Some(Block { info: info.trim().to_string(), lines: Vec::new() }),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some(block), None) => block.lines.push(line.to_string()),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    blocks
}

/// A shell line without its trailing `# comment` (a `#` outside quotes, after a blank).
fn without_comment(line: &str) -> &str {
    let (mut single, mut double, mut previous) = (false, false, ' ');
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return line[..i].trim_end(),
            _ => {}
        }
        previous = c;
    }
    line.trim_end()
}

/// The commands of the `sh` blocks: comments cut, `\`-continued lines joined.
fn commands(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    for block in blocks(markdown).iter().filter(|b| b.info == "sh") {
        let mut pending = String::new();
        for line in &block.lines {
            let line = without_comment(line);
            match line.strip_suffix('\\') {
                Some(part) => pending.push_str(part),
                None => {
                    pending.push_str(line);
                    if !pending.trim().is_empty() {
                        commands.push(pending.trim().to_string());
                    }
                    pending.clear();
                }
            }
        }
    }
    commands
}

/// A scratch directory that sees the repository's sources, fixtures and docs through symlinks
/// (so commands that write `out/` write there), with `stockflow` on the PATH.
struct Scratch {
    dir: tempfile::TempDir,
    path: String,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempdir();
        for entry in ["fixtures", "docs", "scripts", "src", "dataflows", "tests", "Cargo.toml", "README.md"] {
            std::os::unix::fs::symlink(repo_root().join(entry), dir.path().join(entry)).unwrap();
        }
        let bin_dir = dir.path().join(".bin");
        std::fs::create_dir(&bin_dir).unwrap();
        std::os::unix::fs::symlink(bin(), bin_dir.join("stockflow")).unwrap();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        Scratch { dir, path }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `command` with `sh -c` here; panics, saying what the command printed, unless it
    /// exits 0 within the time limit.
    fn run(&self, command: &str, page: &str) {
        let out = self.root().join(".cmd.out");
        let mut child = Command::new("sh")
            .args(["-c", command])
            .current_dir(self.root())
            .env("PATH", &self.path)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > COMMAND_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{page}: `{command}` did not finish within {COMMAND_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
        assert!(status.success(), "{page}: `{command}` failed ({status}):\n{}", tail(&stderr, 20, 4000));
    }
}

/// The lines of .ci/run, trimmed.
fn ci_lines() -> Vec<String> {
    let ci = std::fs::read_to_string(repo_root().join(".ci").join("run")).unwrap();
    ci.lines().map(|l| l.trim().to_string()).collect()
}

/// Checks or runs one documented command; says how.
fn check_command(scratch: &Scratch, command: &str, page: &str) -> &'static str {
    let words: Vec<&str> = command.split_whitespace().collect();
    if let Some(at) = words.iter().position(|w| *w == "apt-get") {
        assert_eq!(words.get(at + 1), Some(&"install"), "{page}: {command}");
        let listed: BTreeSet<&str> = words[at + 2..].iter().copied().filter(|w| !w.starts_with('-')).collect();
        let lines = ci_lines();
        let ci = lines.iter().find(|l| l.starts_with("for pkg in ")).expect(".ci/run's package loop");
        let needed: Vec<&str> = ci["for pkg in ".len()..ci.find(';').unwrap()].split_whitespace().collect();
        let missing: Vec<&&str> = needed.iter().filter(|p| !listed.contains(**p)).collect();
        assert!(missing.is_empty(), "{page}: `{command}` lacks {missing:?}, which .ci/run installs for the build");
        return "packages match .ci/run";
    }
    if words.first() == Some(&"cargo") && matches!(words.get(1), Some(&"test") | Some(&"build")) {
        assert!(ci_lines().iter().any(|l| l == command), "{page}: `{command}` is not what .ci/run runs");
        return "as .ci/run";
    }
    let command = match command.strip_prefix("cargo run --release -- ") {
        Some(rest) => format!("stockflow {rest}"),
        None => command.to_string(),
    };
    assert!(
        command.starts_with("stockflow "),
        "{page}: `{command}`: this test does not know how to check it (run the binary, or name .ci/run's commands)"
    );
    scratch.run(&command, page);
    "ran"
}

#[test]
fn every_readme_command_works() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let commands = commands(&readme);
    assert!(commands.iter().any(|c| c == "cargo test --release"), "the README names the test command");
    assert!(commands.iter().any(|c| c.contains("apt-get install")), "the README names the system packages");
    let scratch = Scratch::new();
    let mut ran = 0;
    for command in &commands {
        let how = check_command(&scratch, command, "README.md");
        eprintln!("README.md: {how}: {command}");
        ran += usize::from(how == "ran");
    }
    assert!(ran >= 2, "the README's replay and explain commands ran");
    // The first command replays a fixture into out/: it wrote the outputs.
    assert!(scratch.root().join("out").join("summary.json").is_file(), "no out/summary.json");

    // The example messages are valid input.
    let examples: Vec<String> =
        blocks(&readme).into_iter().filter(|b| b.info == "jsonl").flat_map(|b| b.lines).collect();
    assert!(!examples.is_empty(), "the README shows example messages");
    std::fs::write(scratch.root().join("examples.jsonl"), examples.join("\n") + "\n").unwrap();
    scratch.run("stockflow replay examples.jsonl --out examples --quiet", "README.md");
    let summary = read_json(&scratch.root().join("examples").join("summary.json"));
    assert_eq!((summary["applied"].as_u64(), summary["rejected"].as_u64()), (Some(examples.len() as u64), Some(0)));
}

#[test]
fn the_format_pages_example_outputs_are_what_the_replay_writes() {
    let page = std::fs::read_to_string(repo_root().join("docs").join("format.md")).unwrap();
    let blocks = blocks(&page);
    let input: Vec<&String> = blocks.iter().filter(|b| b.info == "jsonl input").flat_map(|b| &b.lines).collect();
    let types: BTreeSet<String> = input
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["type"].as_str().map(str::to_string))
        .collect();
    let all = ["adjust", "count", "fulfill", "po", "policy", "receipt", "release", "reserve", "return", "sale"];
    assert_eq!(types, all.iter().map(|t| t.to_string()).collect(), "one example per message type");

    let scratch = Scratch::new();
    let lines: Vec<&str> = input.iter().map(|l| l.as_str()).collect();
    std::fs::write(scratch.root().join("example.jsonl"), lines.join("\n") + "\n").unwrap();
    for command in commands(&page) {
        check_command(&scratch, &command, "docs/format.md");
    }
    let mut shown = BTreeSet::new();
    for block in &blocks {
        let Some(file) = block.info.strip_prefix("jsonl out/").or(block.info.strip_prefix("json out/")) else {
            continue;
        };
        let written = std::fs::read_to_string(scratch.root().join("out").join(file))
            .unwrap_or_else(|e| panic!("docs/format.md shows out/{file}, which the replay did not write: {e}"));
        if block.info.starts_with("json ") {
            let shown: Value = serde_json::from_str(&block.lines.join("\n")).unwrap();
            assert_eq!(shown, serde_json::from_str::<Value>(&written).unwrap(), "out/{file}");
        } else {
            for line in &block.lines {
                assert!(written.lines().any(|w| w == line), "docs/format.md shows a line not in out/{file}: {line}");
            }
        }
        shown.insert(file.to_string());
    }
    for file in ["atp.jsonl", "low_stock.jsonl", "order_plan.jsonl", "network_atp.jsonl", "dead_letter.jsonl"] {
        assert!(shown.contains(file), "docs/format.md shows no {file} record");
    }
    // The page's stdout example is exactly what `--out -` prints.
    let stdout: Vec<&Block> = blocks.iter().filter(|b| b.info == "jsonl stdout").collect();
    assert_eq!(stdout.len(), 1, "docs/format.md shows --out - once");
    scratch.run("stockflow replay example.jsonl --out - --quiet > stdout.jsonl", "docs/format.md");
    let printed = std::fs::read_to_string(scratch.root().join("stdout.jsonl")).unwrap();
    assert_eq!(printed.lines().collect::<Vec<_>>(), stdout[0].lines, "docs/format.md's stdout example");
    assert!(shown.contains("summary.json") && shown.iter().any(|f| f.starts_with("snapshot/")));
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            anchors.insert(anchor(line.trim_start_matches('#')));
        }
    }
    anchors
}

#[test]
fn relative_links_name_files_and_headings_that_exist() {
    let mut pages: Vec<PathBuf> = vec![repo_root().join("README.md")];
    let docs = std::fs::read_dir(repo_root().join("docs")).unwrap();
    pages.extend(docs.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "md")));
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (at, _) in text.match_indices("](") {
            let target = &text[at + 2..at + 2 + text[at + 2..].find(')').unwrap()];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, part) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            assert!(file.exists(), "{}: the link {target} names no file", page.display());
            if !part.is_empty() {
                let headings = anchors(&std::fs::read_to_string(&file).unwrap());
                assert!(headings.contains(part), "{}: the link {target} names no heading of it", page.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links checked");
}

#[test]
fn comments_and_continuations_are_read_as_a_shell_does() {
    assert_eq!(without_comment("stockflow replay x --out out   # results in out/"), "stockflow replay x --out out");
    assert_eq!(without_comment("printf '# not a comment' > f"), "printf '# not a comment' > f");
    let page = "```sh\nstockflow a \\\n    --b c   # note\n\n# a comment line\ncargo test --release\n```\n";
    assert_eq!(commands(page), ["stockflow a     --b c", "cargo test --release"]);
}
