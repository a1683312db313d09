//! `tickdb loadtest`: simulated players against a database (`tickdb-loadtest`), with a
//! live progress line, the server's own CPU and commits sampled from `/metrics` once a
//! second, and a final report on the terminal, as JSON, or as an HTML page of charts
//! over time (`--report FILE`).

use std::io::{IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tickdb_loadtest::chart::{Chart, Series};
use tickdb_loadtest::scenarios::{Banker, Chatter, Interest, MMO_MOVE_MAX, Walker};
use tickdb_loadtest::{Bot, Live, Stamps, SwarmConfig, SwarmReport};

use crate::CliError;
use crate::api::Api;

/// What `tickdb loadtest` was asked for.
#[derive(Debug, clap::Args)]
pub struct Plan {
    /// The database.
    #[arg(value_name = "NAME")]
    pub database: String,
    /// The scenario: `chat` (each player names itself, subscribes to the messages
    /// and sends them), `mmo` (each player joins the world and walks, keeping an
    /// area of interest around itself) or `bank` (transfers between accounts, as
    /// fast as the server answers).
    #[arg(long, default_value = "chat")]
    pub scenario: String,
    #[arg(long, default_value_t = 100)]
    pub players: usize,
    /// Event-loop threads the players share.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// New players per second while ramping up.
    #[arg(long = "ramp", default_value_t = 500.0)]
    pub ramp_per_second: f64,
    /// Calls per player per second [default: chat 1, mmo 20].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds measured, after the ramp-up and warm-up.
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub duration: Duration,
    /// Seconds after the ramp-up before measuring.
    #[arg(long, default_value = "2", value_parser = seconds)]
    pub warmup: Duration,
    /// mmo: the players each player's area of interest holds on average, or `all`
    /// for everyone seeing everyone.
    #[arg(long, default_value = "30")]
    pub interest: String,
    /// mmo: only this many players subscribe (the others only move), for when the
    /// load generator cannot read every player's updates [default: all].
    #[arg(long, value_name = "N")]
    pub observers: Option<usize>,
    /// Players ask the server to compress its messages (LZ4); bytes received are
    /// counted compressed.
    #[arg(long)]
    pub lz4: bool,
    /// bank: calls each player keeps in flight.
    #[arg(long, default_value_t = 40)]
    pub in_flight: usize,
    /// Print the report as JSON (and no progress line).
    #[arg(long)]
    pub json: bool,
    /// Also write the report as an HTML page with charts over time.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("`{s}` is not a number of seconds"))
}

/// File descriptors each player takes, and those the process needs besides.
const FDS_PER_PLAYER: u64 = 1;
const FDS_SPARE: u64 = 64;
/// How fast an `mmo` player walks, in world units a second.
const WALK_SPEED: f32 = 8.0;

/// A scenario's players, made one by one.
type MakeBot = Box<dyn Fn(usize) -> Box<dyn Bot> + Sync>;

/// The scenario's reducers and its bot maker.
fn scenario(plan: &Plan) -> Result<(&'static [&'static str], MakeBot), CliError> {
    Ok(match plan.scenario.as_str() {
        "chat" => {
            let rate = plan.rate.unwrap_or(1.0);
            (&Chatter::REDUCERS, Box::new(move |id| Box::new(Chatter::new(id, rate))))
        }
        "mmo" => {
            let rate = plan.rate.unwrap_or(20.0);
            // The world refuses longer moves than MMO_MOVE_MAX.
            let rate_min = f64::from(WALK_SPEED / MMO_MOVE_MAX);
            if rate < rate_min {
                return Err(CliError::new(format!(
                    "the mmo players walk {WALK_SPEED} units a second and the world takes moves of \
                     {MMO_MOVE_MAX} at most: --rate must be at least {rate_min}"
                )));
            }
            let interest = match plan.interest.as_str() {
                "all" => Interest::All,
                n => match n.parse::<f64>() {
                    Ok(n) if n >= 1.0 => Interest::around(n, plan.players),
                    _ => {
                        return Err(CliError::new(format!(
                            "--interest is a number of players or `all`, not `{n}`"
                        )));
                    }
                },
            };
            let stamps = Arc::new(Stamps::default());
            let observers = plan.observers.unwrap_or(plan.players);
            let make = move |id| {
                let interest = if id < observers { interest } else { Interest::Blind };
                Box::new(Walker::new(id, rate, WALK_SPEED, interest, Arc::clone(&stamps))) as Box<dyn Bot>
            };
            (&Walker::REDUCERS, Box::new(make))
        }
        "bank" => {
            if plan.rate.is_some() {
                return Err(CliError::new(
                    "the bank scenario runs at saturation: set --in-flight, not --rate",
                ));
            }
            let in_flight = plan.in_flight;
            (&Banker::REDUCERS, Box::new(move |id| Box::new(Banker::new(id, in_flight))))
        }
        other => {
            return Err(CliError::new(format!("no scenario `{other}`; the scenarios are: chat, mmo, bank")));
        }
    })
}

pub fn run(api: &Api, plan: &Plan) -> Result<(), CliError> {
    let (reducers, make) = scenario(plan)?;
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
        lz4: plan.lz4,
    };
    let (stop, live) = (AtomicBool::new(false), Live::default());
    let started = Instant::now();
    let (report, server) = std::thread::scope(|scope| {
        let swarm = scope.spawn(|| tickdb_loadtest::run(&config, &*make, &stop, &live));
        // The live line is for people watching: not with --json, nor into a file.
        let quiet = plan.json || !std::io::stderr().is_terminal();
        let measure_from =
            Duration::from_secs_f64(plan.players as f64 / plan.ramp_per_second.max(1e-3)) + plan.warmup;
        let server = watch(api, &plan.database, (started, measure_from), &swarm, &live, quiet);
        let report = swarm.join().map_err(|_| CliError::new("the load test panicked"))?;
        Ok::<_, CliError>((report, server))
    })?;
    let report = report.map_err(|e| CliError::new(format!("the load test failed: {e}")))?;
    let server = ServerUse::over(&server, &report);
    if let Some(path) = &plan.report {
        let page = report_page(plan, &report, &server);
        std::fs::write(path, page).map_err(|e| CliError::new(format!("writing {}: {e}", path.display())))?;
    }
    match plan.json {
        true => println!("{}", report_json(plan, &report, server.as_ref())),
        false => print!("{}", report_text(plan, &report, server.as_ref())),
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

/// The server's counters at one moment, from `GET /metrics`.
#[derive(Debug, Clone, Copy)]
struct ServerSample {
    /// Seconds since the run started.
    at: f64,
    cpu_seconds: f64,
    ticks: f64,
    committed: f64,
    /// The database's tick durations (reducers and commit) and the time its hub took
    /// per tick to compute the clients' updates: p50 and p99 in µs, since it started.
    tick_us: (f64, f64),
    updates_us: (f64, f64),
}

fn sample(api: &Api, database: &str, started: Instant) -> Option<ServerSample> {
    let reply = api.maybe_authed("GET", "/metrics", b"").ok()?;
    let text = String::from_utf8(reply.body).ok()?;
    let value =
        |name: &str| text.lines().find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok());
    let quantiles = |metric: &str| {
        let q = |q: &str| value(&format!("{metric}{{database=\"{database}\",quantile=\"{q}\"}}"));
        Some((q("0.5")?, q("0.99")?))
    };
    Some(ServerSample {
        at: started.elapsed().as_secs_f64(),
        cpu_seconds: value("process_cpu_seconds_total ")?,
        ticks: value(&format!("tickdb_tick_duration_us_count{{database=\"{database}\"}}"))?,
        committed: value(&format!("tickdb_transactions_committed_total{{database=\"{database}\"}}"))?,
        tick_us: quantiles("tickdb_tick_duration_us")?,
        updates_us: quantiles("tickdb_subscription_eval_us")?,
    })
}

/// Until the swarm ends: samples the server once a second, and when measuring
/// starts, and unless `quiet` shows a live progress line on stderr.
fn watch<T>(
    api: &Api,
    database: &str,
    (started, measure_from): (Instant, Duration),
    swarm: &std::thread::ScopedJoinHandle<'_, T>,
    live: &Live,
    quiet: bool,
) -> Vec<ServerSample> {
    let mut samples: Vec<ServerSample> = sample(api, database, started).into_iter().collect();
    let mut last = (0u64, Instant::now());
    let mut measuring = false;
    while !swarm.is_finished() {
        std::thread::park_timeout(Duration::from_millis(50));
        if !measuring && started.elapsed() >= measure_from {
            measuring = true;
            samples.extend(sample(api, database, started));
        }
        if last.1.elapsed() < Duration::from_secs(1) {
            continue;
        }
        samples.extend(sample(api, database, started));
        let results = live.results.load(Ordering::Relaxed);
        let per_second = (results - last.0) as f64 / last.1.elapsed().as_secs_f64();
        last = (results, Instant::now());
        if quiet {
            continue;
        }
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
    samples.extend(sample(api, database, started));
    if !quiet {
        eprintln!();
    }
    samples
}

/// What the server spent over the measured time, from its samples.
#[derive(Debug, Clone, Default)]
struct ServerUse {
    /// CPU seconds per second: 1.0 is one core busy.
    cores: f64,
    ticks_per_second: f64,
    committed_per_second: f64,
    /// Tick and update-computing durations, p50 and p99 in µs, at the end.
    tick_us: (f64, f64),
    updates_us: (f64, f64),
    /// CPU per second, second by second (at the end of each sampled second).
    over_time: Vec<(f64, f64, f64)>,
}

impl ServerUse {
    fn over(samples: &[ServerSample], report: &SwarmReport) -> Option<ServerUse> {
        let from = report.measured_from.as_secs_f64();
        let first = samples.iter().find(|s| s.at >= from)?;
        let last = samples.last()?;
        let seconds = last.at - first.at;
        if seconds < 0.5 {
            return None;
        }
        let over_time = samples
            .windows(2)
            .map(|w| {
                let dt = (w[1].at - w[0].at).max(1e-9);
                (w[1].at, (w[1].cpu_seconds - w[0].cpu_seconds) / dt, (w[1].committed - w[0].committed) / dt)
            })
            .collect();
        Some(ServerUse {
            cores: (last.cpu_seconds - first.cpu_seconds) / seconds,
            ticks_per_second: (last.ticks - first.ticks) / seconds,
            committed_per_second: (last.committed - first.committed) / seconds,
            tick_us: last.tick_us,
            updates_us: last.updates_us,
            over_time,
        })
    }

    /// CPU per 50 ms, the period of a 20 Hz game tick, in ms.
    fn ms_per_20hz_tick(&self) -> f64 {
        self.cores * 50.0
    }
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> serde_json::Value {
    let q = |q: f64| h.value_at_quantile(q);
    json!({ "count": h.len(), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": h.max() })
}

fn report_json(plan: &Plan, r: &SwarmReport, server: Option<&ServerUse>) -> serde_json::Value {
    let seconds = r.measured.as_secs_f64().max(1e-9);
    let server = server.map(|s| {
        json!({
            "cpu_cores": s.cores,
            "cpu_ms_per_20hz_tick": s.ms_per_20hz_tick(),
            "ticks_per_s": s.ticks_per_second,
            "committed_per_s": s.committed_per_second,
            "tick_us": { "p50": s.tick_us.0, "p99": s.tick_us.1 },
            "updates_us": { "p50": s.updates_us.0, "p99": s.updates_us.1 },
        })
    });
    json!({
        "scenario": plan.scenario,
        "players": plan.players,
        "connected": r.connected,
        "measured_s": seconds,
        "calls": r.totals.calls,
        "results": r.totals.results,
        "errors": r.totals.errors,
        "results_per_s": r.totals.results as f64 / seconds,
        "committed_per_s": (r.totals.results - r.totals.errors) as f64 / seconds,
        "round_trip_us": percentiles(&r.totals.round_trip_us),
        "update_latency_us": percentiles(&r.totals.update_latency_us),
        "connect_us": percentiles(&r.connect_us),
        "observers": receivers(plan),
        "updates_per_player_s": r.totals.updates as f64 / seconds / receivers(plan),
        "update_bytes_per_player_s": r.totals.update_bytes as f64 / seconds / receivers(plan),
        "bytes_per_player_s": r.totals.bytes as f64 / seconds / plan.players.max(1) as f64,
        "subscriptions_refused": r.subscription_errors,
        "disconnects": r.disconnects,
        "server": server,
    })
}

/// The players that subscribe: the figures received per player are theirs.
fn receivers(plan: &Plan) -> f64 {
    plan.observers.unwrap_or(plan.players).min(plan.players).max(1) as f64
}

fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn report_text(plan: &Plan, r: &SwarmReport, server: Option<&ServerUse>) -> String {
    let seconds = r.measured.as_secs_f64().max(1e-9);
    let mut out = format!(
        "scenario {}: {} of {} players connected, measured for {seconds:.1} s\n\
         calls: {} sent, {} answered ({:.0}/s), {} errors\n\
         round trip: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
        plan.scenario,
        r.connected,
        plan.players,
        r.totals.calls,
        r.totals.results,
        r.totals.results as f64 / seconds,
        r.totals.errors,
        ms(&r.totals.round_trip_us, 0.5),
        ms(&r.totals.round_trip_us, 0.99),
        r.totals.round_trip_us.max() as f64 / 1000.0,
    );
    if !r.totals.update_latency_us.is_empty() {
        out.push_str(&format!(
            "update latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} seen)\n",
            ms(&r.totals.update_latency_us, 0.5),
            ms(&r.totals.update_latency_us, 0.99),
            r.totals.update_latency_us.max() as f64 / 1000.0,
            r.totals.update_latency_us.len()
        ));
    }
    out.push_str(&format!(
        "connect: p50 {:.2} ms, p99 {:.2} ms\n\
         updates per {}: {:.1}/s, {:.0} bytes/s ({:.0} bytes/s received per player in all)\n",
        ms(&r.connect_us, 0.5),
        ms(&r.connect_us, 0.99),
        if plan.observers.is_some() { "observing player" } else { "player" },
        r.totals.updates as f64 / seconds / receivers(plan),
        r.totals.update_bytes as f64 / seconds / receivers(plan),
        r.totals.bytes as f64 / seconds / plan.players.max(1) as f64,
    ));
    if r.subscription_errors > 0 {
        out.push_str(&format!("subscriptions refused: {}\n", r.subscription_errors));
    }
    if let Some(s) = server {
        out.push_str(&format!(
            "server: {:.0}% of a core ({:.2} ms CPU per 20 Hz tick), {:.0} ticks/s, {:.0} commits/s\n",
            s.cores * 100.0,
            s.ms_per_20hz_tick(),
            s.ticks_per_second,
            s.committed_per_second,
        ));
        out.push_str(&format!(
            "server per tick: reducers and commit p50 {:.2} ms, p99 {:.2} ms; updates computed p50 {:.2} ms, p99 {:.2} ms\n",
            s.tick_us.0 / 1000.0,
            s.tick_us.1 / 1000.0,
            s.updates_us.0 / 1000.0,
            s.updates_us.1 / 1000.0,
        ));
    }
    for (why, n) in &r.disconnects {
        out.push_str(&format!("disconnected: {n} × {why}\n"));
    }
    out
}

/// The report as an HTML page: the summary, then latency, throughput, traffic and the
/// server's CPU second by second.
fn report_page(plan: &Plan, r: &SwarmReport, server: &Option<ServerUse>) -> String {
    let seconds = r.measured.as_secs_f64();
    let measured = (r.measured_from.as_secs_f64(), r.measured_from.as_secs_f64() + seconds);
    let per_second = |name: &str, f: &dyn Fn(&tickdb_loadtest::Counts) -> Option<f64>| Series {
        name: name.into(),
        // A second's figures are plotted at its end.
        points: r
            .seconds
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as f64 + 1.0, f(&s.counts)?)))
            .collect(),
    };
    let quantile = |h: &hdrhistogram::Histogram<u64>, q: f64| (!h.is_empty()).then(|| ms(h, q));
    let mut latency = vec![
        per_second("round trip p50", &|s| quantile(&s.round_trip_us, 0.5)),
        per_second("round trip p99", &|s| quantile(&s.round_trip_us, 0.99)),
    ];
    if !r.totals.update_latency_us.is_empty() {
        latency.push(per_second("update latency p50", &|s| quantile(&s.update_latency_us, 0.5)));
        latency.push(per_second("update latency p99", &|s| quantile(&s.update_latency_us, 0.99)));
    }
    let mut throughput = vec![
        per_second("calls sent", &|s| Some(s.calls as f64)),
        per_second("results", &|s| Some(s.results as f64)),
        per_second("errors", &|s| Some(s.errors as f64)),
    ];
    let mut online = 0i64;
    let players = Series {
        name: "players connected".into(),
        points: r
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                online += s.connects as i64 - s.disconnects as i64;
                (i as f64 + 1.0, online as f64)
            })
            .collect(),
    };
    // Per player connected that subscribes: the first ones connect first.
    let receiving = |i: usize| players.points.get(i).map_or(1.0, |p| p.1.min(receivers(plan)).max(1.0));
    let traffic = vec![Series {
        name: "KB of updates per player".into(),
        points: r
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64 + 1.0, s.counts.update_bytes as f64 / 1024.0 / receiving(i)))
            .collect(),
    }];
    let mut cpu = vec![];
    if let Some(s) = server {
        throughput.push(Series {
            name: "committed by the server".into(),
            points: s.over_time.iter().map(|&(t, _, c)| (t, c)).collect(),
        });
        cpu.push(Series {
            name: "server CPU".into(),
            points: s.over_time.iter().map(|&(t, c, _)| (t, c * 100.0)).collect(),
        });
    }
    let charts = [
        Chart { title: "Latency".into(), unit: "ms".into(), series: latency },
        Chart { title: "Throughput".into(), unit: "per second".into(), series: throughput },
        Chart { title: "Traffic".into(), unit: "KB per player per second".into(), series: traffic },
        Chart { title: "Players".into(), unit: "connected".into(), series: vec![players] },
        Chart { title: "Server CPU".into(), unit: "% of a core".into(), series: cpu },
    ];
    let summary: Vec<(String, String)> = report_text(plan, r, server.as_ref())
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let title = format!("tickdb loadtest: {} × {} on {}", plan.players, plan.scenario, plan.database);
    tickdb_loadtest::chart::html_page(&title, &summary, &charts, measured)
}
