//! The crash test: a database process under write load, snapshotting itself often, is
//! killed with SIGKILL at random points and restarted, again and again. After every restart, every
//! acknowledged transaction must be there, no transaction half there (each writes two
//! rows), and the state must be exactly a prefix of the calls made, in order: what
//! replaying a model of the calls gives.
//!
//! `TICKDB_CRASH_CYCLES` sets the number of kill/restart cycles (default 200).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use tickdb_engine::{Entropy, SplitMix64};

struct Running {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Running {
    fn start(wasm: &Path, data: &Path) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tickdb-crash-child"))
            .arg(wasm)
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the crash child starts");
        let out = BufReader::new(child.stdout.take().expect("piped"));
        Running { child, out }
    }

    /// The next whole line, or `None` at the end of the output.
    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.out.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) if line.ends_with('\n') => Some(line.trim_end().to_string()),
            // Cut off by the kill: not a whole line, so not an acknowledgement.
            Ok(_) => None,
        }
    }
}

/// Checks the recovered items against the acknowledged calls and returns the number of
/// calls whose rows are there (1..=that, and nothing else).
fn check(recovered: &str, acked: &BTreeSet<u64>, cycle: usize) -> u64 {
    let values: Vec<u64> = recovered
        .strip_prefix("recovered")
        .unwrap_or_else(|| panic!("cycle {cycle}: unexpected first line {recovered:?}"))
        .split_whitespace()
        .map(|v| v.parse().expect("a value"))
        .collect();
    assert!(values.len().is_multiple_of(2), "cycle {cycle}: an odd number of rows: a call is half there");
    let calls = values.len() as u64 / 2;
    let model: Vec<u64> = (2..2 * calls + 2).collect();
    assert_eq!(values, model, "cycle {cycle}: the state is not the first {calls} calls, whole and in order");
    if let Some(&last) = acked.last() {
        assert!(last <= calls, "cycle {cycle}: call {last} was acknowledged, but only {calls} survived");
    }
    calls
}

#[test]
fn killed_databases_lose_no_acknowledged_transaction() {
    let cycles: usize = std::env::var("TICKDB_CRASH_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(200);
    let wasm = tickdb_test_modules::wasm_path("tickdb-test-bench");
    let data = std::env::temp_dir().join(format!("tickdb-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let mut rng = SplitMix64::new(2026);
    let mut acked = BTreeSet::new();
    let mut survived = 0;
    for cycle in 0..cycles {
        let mut running = Running::start(&wasm, &data);
        let recovered =
            running.line().unwrap_or_else(|| panic!("cycle {cycle}: the child died before recovering"));
        let calls = check(&recovered, &acked, cycle);
        assert!(calls >= survived, "cycle {cycle}: {calls} calls survived, {survived} had before");
        survived = calls;
        // Kill after a random number of acknowledgements (sometimes at once).
        let wait_for = rng.next_u64() % 48;
        let mut seen = 0;
        while seen < wait_for {
            match running.line() {
                Some(line) => {
                    let value = line.strip_prefix("ack ").expect("an ack").parse::<u64>().expect("a value");
                    acked.insert(value);
                    seen += 1;
                }
                None => panic!("cycle {cycle}: the child stopped by itself"),
            }
        }
        running.child.kill().expect("SIGKILL");
        running.child.wait().expect("reaped");
        // Acknowledgements already printed before the kill count too.
        while let Some(line) = running.line() {
            if let Some(value) = line.strip_prefix("ack ") {
                acked.insert(value.parse().expect("a value"));
            }
        }
    }
    let mut last = Running::start(&wasm, &data);
    let recovered = last.line().expect("the final recovery");
    let calls = check(&recovered, &acked, cycles);
    last.child.kill().expect("SIGKILL");
    last.child.wait().expect("reaped");
    assert!(calls > 0 && !acked.is_empty(), "the load made progress: {calls} calls");
    // How far snapshots and pruning got depends on where the kills landed; say so
    // rather than assert it (`--nocapture` shows it).
    let snapshots = tickdb_engine::snapshot::list_snapshots(&data.join("snapshots")).unwrap();
    let segments = tickdb_engine::commitlog::segments::list_segments(&data.join("log")).unwrap();
    eprintln!(
        "{cycles} kills: {} acknowledged calls, {calls} survived; snapshots at ticks {:?}; oldest log segment from tick {}",
        acked.len(),
        snapshots.iter().map(|s| s.0).collect::<Vec<_>>(),
        segments.first().map_or(0, |s| s.0)
    );
    std::fs::remove_dir_all(&data).unwrap();
}
