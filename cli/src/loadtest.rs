//! `tickdb loadtest`: simulated players against a database (`tickdb-loadtest`), with a
//! live progress line and a final report on the terminal or as JSON.

use std::io::{IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tickdb_loadtest::scenarios::Chatter;
use tickdb_loadtest::{Bot, Live, SwarmConfig, SwarmReport};

use crate::CliError;
use crate::api::Api;

/// What `tickdb loadtest` was asked for.
#[derive(Debug)]
pub struct Plan {
    pub scenario: String,
    pub database: String,
    pub players: usize,
    pub threads: usize,
    pub ramp_per_second: f64,
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
    pub json: bool,
}

/// File descriptors each player takes, and those the process needs besides.
const FDS_PER_PLAYER: u64 = 1;
const FDS_SPARE: u64 = 64;

pub fn run(api: &Api, plan: &Plan) -> Result<(), CliError> {
    let reducers: &[&str] = match plan.scenario.as_str() {
        "chat" => &Chatter::REDUCERS,
        other => {
            return Err(CliError::new(format!("no scenario `{other}`; the scenarios are: chat")));
        }
    };
    check_fd_limit(plan.players)?;
    let def = crate::commands::module_def(api, &plan.database)?;
    for reducer in reducers {
        if !def.reducers.iter().any(|r| r.name == *reducer) {
            return Err(CliError::new(format!(
                "the `{}` scenario calls `{reducer}`, which database `{}` does not have: publish examples/{} there",
                plan.scenario, plan.database, plan.scenario
            )));
        }
    }
    let host = api.server.trim_start_matches("http://").to_string();
    let addr = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| CliError::new(format!("cannot resolve the server's address {host}")))?;
    let config = SwarmConfig {
        addr,
        database: plan.database.clone(),
        players: plan.players,
        threads: plan.threads,
        ramp_per_second: plan.ramp_per_second,
        duration: plan.duration,
        warmup: plan.warmup,
    };
    let (stop, live) = (AtomicBool::new(false), Live::default());
    let rate = plan.rate;
    let make = |id: usize| Box::new(Chatter::new(id, rate)) as Box<dyn Bot>;
    let report = std::thread::scope(|scope| {
        let swarm = scope.spawn(|| tickdb_loadtest::run(&config, &make, &stop, &live));
        // The live line is for people watching: not with --json, nor into a file.
        progress(&swarm, &live, plan.json || !std::io::stderr().is_terminal());
        swarm.join().map_err(|_| CliError::new("the load test panicked"))
    })?
    .map_err(|e| CliError::new(format!("the load test failed: {e}")))?;
    match plan.json {
        true => println!("{}", report_json(plan, &report)),
        false => print!("{}", report_text(plan, &report)),
    }
    Ok(())
}

/// Refuses more players than the open-file limit allows, saying how to raise it.
fn check_fd_limit(players: usize) -> Result<(), CliError> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which lives
    // for the call.
    #[allow(unsafe_code)]
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if status != 0 {
        return Ok(());
    }
    let needed = players as u64 * FDS_PER_PLAYER + FDS_SPARE;
    if needed > limit.rlim_cur {
        return Err(CliError::new(format!(
            "{players} players need about {needed} open files, more than this process may have \
             (RLIMIT_NOFILE: {} now, at most {}); raise it with `ulimit -n {needed}` in this shell",
            limit.rlim_cur, limit.rlim_max
        )));
    }
    Ok(())
}

/// A live progress line on stderr, once a second, until the swarm ends.
fn progress<T>(swarm: &std::thread::ScopedJoinHandle<'_, T>, live: &Live, quiet: bool) {
    let started = Instant::now();
    let mut last = (0u64, Instant::now());
    while !swarm.is_finished() {
        std::thread::park_timeout(Duration::from_millis(200));
        if quiet || last.1.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let results = live.results.load(Ordering::Relaxed);
        let per_second = (results - last.0) as f64 / last.1.elapsed().as_secs_f64();
        last = (results, Instant::now());
        eprint!(
            "\r{:>5.0} s: {} connected, {} calls, {:.0} results/s, {} updates, {} disconnects   ",
            started.elapsed().as_secs_f64(),
            live.connected.load(Ordering::Relaxed),
            live.calls.load(Ordering::Relaxed),
            per_second,
            live.updates.load(Ordering::Relaxed),
            live.disconnects.load(Ordering::Relaxed),
        );
        let _ = std::io::stderr().flush();
    }
    if !quiet {
        eprintln!();
    }
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> serde_json::Value {
    let q = |q: f64| h.value_at_quantile(q);
    json!({ "count": h.len(), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": h.max() })
}

fn report_json(plan: &Plan, r: &SwarmReport) -> serde_json::Value {
    let seconds = r.measured.as_secs_f64().max(1e-9);
    json!({
        "scenario": plan.scenario,
        "players": plan.players,
        "connected": r.connected,
        "measured_s": seconds,
        "calls": r.calls,
        "results": r.results,
        "errors": r.errors,
        "results_per_s": r.results as f64 / seconds,
        "round_trip_us": percentiles(&r.round_trip_us),
        "connect_us": percentiles(&r.connect_us),
        "updates_per_player_s": r.updates as f64 / seconds / plan.players.max(1) as f64,
        "bytes_per_player_s": r.bytes_received as f64 / seconds / plan.players.max(1) as f64,
        "disconnects": r.disconnects,
    })
}

fn report_text(plan: &Plan, r: &SwarmReport) -> String {
    let seconds = r.measured.as_secs_f64().max(1e-9);
    let players = plan.players.max(1) as f64;
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut out = format!(
        "scenario {}: {} of {} players connected, measured for {seconds:.1} s\n\
         calls: {} sent, {} answered ({:.0}/s), {} errors\n\
         round trip: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
         connect: p50 {:.2} ms, p99 {:.2} ms\n\
         received per player: {:.1} updates/s, {:.0} bytes/s\n",
        plan.scenario,
        r.connected,
        plan.players,
        r.calls,
        r.results,
        r.results as f64 / seconds,
        r.errors,
        ms(&r.round_trip_us, 0.5),
        ms(&r.round_trip_us, 0.99),
        r.round_trip_us.max() as f64 / 1000.0,
        ms(&r.connect_us, 0.5),
        ms(&r.connect_us, 0.99),
        r.updates as f64 / seconds / players,
        r.bytes_received as f64 / seconds / players,
    );
    for (why, n) in &r.disconnects {
        out.push_str(&format!("disconnected: {n} × {why}\n"));
    }
    out
}
