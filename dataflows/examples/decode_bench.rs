//! Micro-benchmark of the decoder alone (SPEC §1): decodes every non-blank line of the given
//! fixture files (e.g. `stockflow gen` output) and reports the CPU time per line.
//!
//! Usage: `decode_bench [--passes N] [--digest] PATH...` (a path may be a directory: its
//! `*.jsonl` files, in name order). The lines are read into memory first, so the timed loop is
//! `decode` and nothing else; each pass decodes every line once, and the figures are the
//! fastest pass (the one least disturbed by a shared machine). CPU time is this thread's own
//! (`/proc/thread-self/schedstat`, nanoseconds; wall time where that is missing).
//!
//! Prints one line of `key=value` pairs on stdout, for `scripts/bench-decode.sh`:
//! `lines= accepted= rejected= passes= ns_per_line= lines_per_s= wall_ns_per_line=`, and with
//! `--digest` a 64-bit FNV-1a hash of every result's `Debug` form (`digest=`), computed outside
//! the timed loop, so that two builds can be shown to decode the corpus identically.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dataflows::decode::decode;

fn main() {
    let mut passes = 5usize;
    let mut digest = false;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--passes" => {
                passes = args.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or_else(|| {
                    usage("--passes needs a positive count");
                })
            }
            "--digest" => digest = true,
            "-h" | "--help" => usage(""),
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    if paths.is_empty() {
        usage("no input given");
    }
    let lines = read_lines(&paths);
    if lines.is_empty() {
        usage("the inputs hold no non-blank line");
    }

    let mut best: Option<(u64, u64)> = None;
    let mut accepted = 0usize;
    for _ in 0..passes {
        let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
        accepted = 0;
        for line in &lines {
            accepted += usize::from(black_box(decode(black_box(line))).is_ok());
        }
        let cpu = thread_cpu_ns().zip(cpu0).map(|(b, a)| b - a);
        let wall = wall0.elapsed().as_nanos() as u64;
        let cpu = cpu.unwrap_or(wall);
        if best.is_none_or(|(c, _)| cpu < c) {
            best = Some((cpu, wall));
        }
    }
    let (cpu, wall) = best.unwrap_or_default();
    let n = lines.len() as f64;
    print!(
        "lines={} accepted={accepted} rejected={} passes={passes} ns_per_line={:.1} lines_per_s={:.0} wall_ns_per_line={:.1}",
        lines.len(),
        lines.len() - accepted,
        cpu as f64 / n,
        n * 1e9 / cpu.max(1) as f64,
        wall as f64 / n,
    );
    if digest {
        print!(" digest={:016x}", results_digest(&lines));
    }
    println!();
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("decode_bench: {problem}");
    }
    eprintln!("usage: decode_bench [--passes N] [--digest] PATH...  (files, or directories of *.jsonl)");
    std::process::exit(2)
}

/// Every non-blank line of the inputs (SPEC §1: blank is spaces, tabs and CRs only), without
/// its line ending, as the file source hands them to the decoder.
fn read_lines(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .unwrap_or_else(|e| fail(path, e))
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    let mut lines = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_else(|e| fail(&file, e));
        for line in bytes.split(|&c| c == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r')) {
                lines.push(line.to_vec());
            }
        }
    }
    lines
}

fn fail(path: &Path, e: std::io::Error) -> ! {
    eprintln!("decode_bench: {}: {e}", path.display());
    std::process::exit(1)
}

/// This thread's CPU time in nanoseconds, from the scheduler's own accounting (Linux).
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// FNV-1a over the `Debug` form of every line's result, one line each.
fn results_digest(lines: &[Vec<u8>]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for line in lines {
        let text = format!("{:?}\n", decode(line));
        for &b in text.as_bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
