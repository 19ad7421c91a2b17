//! The engine's ceiling for benchmarks: the least a timely/differential job must do with the
//! same input — read each worker's files, decode every line, exchange by key, count per key —
//! so that stockflow's throughput can be reported as a ratio of it.
//!
//! Usage: `ceiling INPUT_DIR [--tick-ms MS] [-w N]` (timely's flags). Prints events/s on stderr.
//!
//! By default the input advances once per 4096 lines. With `--tick-ms`, each worker merges its
//! files by `ts` and every record's timestamp is its tick, as in stockflow: the same number of
//! logical times, which shows how much of the gap to the default ceiling is the tick itself.

use std::io::BufRead;
use std::time::{Duration, Instant};

use differential_dataflow::input::Input;
use differential_dataflow::operators::CountTotal;
use timely::dataflow::operators::Probe;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lines sent per epoch, like stockflow's batches.
const BATCH: usize = 4096;

/// A waiting worker parks (at most this long) instead of spinning, as stockflow's harness does,
/// so that the two jobs compare alike on a machine with as many workers as cores.
const PARK: Duration = Duration::from_millis(1);

type Key = (dataflows::model::Name, dataflows::model::Name);
type KeyInput = differential_dataflow::input::InputSession<u64, Key, isize>;
type KeyProbe = timely::dataflow::ProbeHandle<u64>;
type Worker = timely::worker::Worker;

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: ceiling INPUT_DIR [-w N]");
        std::process::exit(2);
    }
    let dir = args.remove(1);
    let tick_ms: Option<u64> = args.iter().position(|a| a == "--tick-ms").map(|i| {
        let value = args.get(i + 1).and_then(|v| v.parse().ok()).filter(|&t: &u64| t > 0);
        let value = value.unwrap_or_else(|| {
            eprintln!("--tick-ms needs a positive number of milliseconds");
            std::process::exit(2)
        });
        args.drain(i..i + 2);
        value
    });
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let started = Instant::now();
    let guards = timely::execute_from_args(args.into_iter(), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, keys) = scope.new_collection::<Key, isize>();
            let probe = keys.count_total().inner.probe().0;
            (input, probe)
        });
        let mine: Vec<_> = files.iter().skip(index).step_by(peers).collect();
        let read = match tick_ms {
            Some(tick) => read_in_tick_order(worker, &mine, tick, &mut input, &probe),
            None => read_in_batches(worker, &mine, &mut input, &probe),
        };
        input.close();
        worker.step_or_park_while(Some(PARK), || !probe.done());
        read
    })
    .expect("timely starts");
    let read: u64 = guards.join().into_iter().map(|r| r.expect("worker finished")).sum();
    let secs = started.elapsed().as_secs_f64();
    eprintln!("ceiling: {read} lines in {secs:.2} s ({:.0} lines/s)", read as f64 / secs);
}

fn reader(path: &std::path::Path) -> std::io::BufReader<std::fs::File> {
    std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).unwrap())
}

/// Merges this worker's files by ts (each file is in ts order), one timestamp per tick.
fn read_in_tick_order(worker: &mut Worker, files: &[&std::path::PathBuf], tick: u64, input: &mut KeyInput, probe: &KeyProbe) -> u64 {
    let mut lines: Vec<_> = files
        .iter()
        .map(|path| {
            reader(path)
                .split(b'\n')
                .filter_map(|line| dataflows::decode::decode(&line.unwrap()).ok())
                .map(|m| (m.ts, (m.sku, m.loc)))
                .peekable()
        })
        .collect();
    let (mut read, mut previous) = (0u64, 0u64);
    loop {
        let earliest = lines.iter_mut().enumerate().filter_map(|(i, l)| l.peek().map(|(ts, _)| (*ts, i))).min();
        let Some((_, i)) = earliest else { break };
        let (ts, key) = lines[i].next().expect("peeked");
        let time = ts.div_ceil(tick) * tick;
        if time > *input.time() {
            input.advance_to(time);
        }
        input.insert(key);
        read += 1;
        if read % BATCH as u64 == 0 {
            input.flush();
            worker.step_or_park_while(Some(PARK), || probe.less_than(&previous));
            previous = *input.time();
        }
    }
    read
}

/// Reads this worker's files in order, one timestamp per `BATCH` lines.
fn read_in_batches(worker: &mut Worker, files: &[&std::path::PathBuf], input: &mut KeyInput, probe: &KeyProbe) -> u64 {
    let (mut read, mut epoch) = (0u64, 0u64);
    for path in files {
        for line in reader(path).split(b'\n') {
            let line = line.unwrap();
            if let Ok(m) = dataflows::decode::decode(&line) {
                input.insert((m.sku, m.loc));
            }
            read += 1;
            if read % BATCH as u64 == 0 {
                epoch += 1;
                input.advance_to(epoch);
                input.flush();
                worker.step_or_park_while(Some(PARK), || probe.less_than(&(epoch - 1)));
            }
        }
    }
    read
}
