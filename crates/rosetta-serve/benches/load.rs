//! Load test for `rosetta serve` (a bench, not a CI test): N concurrent clients for S seconds on
//! loopback, against a server process started here, once with dynamic batching and once with a
//! batch of one (LibreTranslate's own approach), same model and load.
//!
//! ```text
//! cargo build --release -p rosetta-cli
//! ROSETTA_LOAD_MODEL=runs/quickstart cargo bench -p rosetta-serve --bench load
//! ROSETTA_LOAD_MODEL=runs/tf-de-en ROSETTA_LOAD_INPUT=../shared/data/multi30k/test_2016_flickr.de.gz \
//!   cargo bench -p rosetta-serve --bench load
//! ```
//! Settings (environment): ROSETTA_LOAD_MODEL (model directory, required), ROSETTA_LOAD_INPUT (source
//! lines, plain or .gz; default: dates in the quickstart's formats), ROSETTA_LOAD_CLIENTS (200),
//! ROSETTA_LOAD_SECONDS (60), ROSETTA_LOAD_WARMUP (5), ROSETTA_BIN (target/release/rosetta),
//! ROSETTA_LOAD_MODES ("batched,single"), ROSETTA_LOAD_ARGS (extra `rosetta serve` flags),
//! ROSETTA_LOAD_BEAM (the beam each request asks for; default: none, so the model's own `[decode]`
//! search, which the report names as `GET /v1/models` gives it), ROSETTA_LOAD_ROUNDS (1: how many
//! times the modes run, alternating; each round's ratio is reported, and their range, since a
//! shared machine's speed drifts by tens of percent between minutes).
//! Each client sends one line per request (the native API) on a kept-alive connection, waits for
//! the answer, and sends the next. The server's RSS is reported at the start and end of the
//! measured time and every 10 s in between.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn lines() -> Vec<String> {
    match std::env::var("ROSETTA_LOAD_INPUT") {
        Ok(path) => {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let mut text = String::new();
            if path.ends_with(".gz") {
                flate2::read::GzDecoder::new(file).read_to_string(&mut text)
            } else {
                std::io::BufReader::new(file).read_to_string(&mut text)
            }
            .unwrap_or_else(|e| panic!("{path}: {e}"));
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect()
        }
        Err(_) => {
            let months = ["January", "März", "June", "Oktober", "December"];
            (0..500)
                .map(|i| match i % 3 {
                    0 => format!("{}. {} {}", 1 + i % 28, months[i % 5], 1950 + i % 70),
                    1 => format!("{} {} {}", 1 + i % 28, months[(i + 2) % 5], 1960 + i % 60),
                    _ => format!("{:02}.{:02}.{:02}", 1 + i % 28, 1 + i % 12, i % 100),
                })
                .collect()
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

fn start_server(model: &str, batched: bool) -> ServerProcess {
    let bin = std::env::var("ROSETTA_BIN").unwrap_or_else(|_| "target/release/rosetta".into());
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = Command::new(&bin);
    cmd.args(["serve", "--device", "cpu", "--model"])
        .arg(format!("m={model}"))
        .args(["--addr", &addr.to_string(), "--queue", "100000"]);
    if !batched {
        cmd.args(["--max-batch-texts", "1"]);
    }
    if let Ok(extra) = std::env::var("ROSETTA_LOAD_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {bin} (build it with cargo build --release): {e}")
        });
    ServerProcess { child, addr }
}

#[derive(Default)]
struct Outcome {
    latencies: Vec<f64>,
    ok: u64,
    client_errors: u64,
    server_errors: u64,
    io_errors: u64,
}

async fn client(
    addr: SocketAddr,
    lines: Arc<Vec<String>>,
    start: usize,
    beam: Option<usize>,
    stop: Arc<AtomicBool>,
    record: Arc<AtomicBool>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut conn: Option<support::Connection> = None;
    let mut i = start;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match support::Connection::open(addr).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    out.io_errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let mut body = serde_json::json!({ "text": lines[i % lines.len()] });
        if let Some(beam) = beam {
            body["beam"] = beam.into();
        }
        let body = body.to_string();
        i += 7;
        let t = Instant::now();
        let reply = c.post_json("/v1/translate", body.as_bytes()).await;
        let seconds = t.elapsed().as_secs_f64();
        let counting = record.load(Ordering::Relaxed);
        match reply {
            Ok(r) if counting => match r.status {
                200 => {
                    out.ok += 1;
                    out.latencies.push(seconds);
                }
                400..=499 => out.client_errors += 1,
                _ => out.server_errors += 1,
            },
            Ok(_) => {}
            Err(_) => {
                if counting {
                    out.io_errors += 1;
                }
                conn = None;
            }
        }
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run_mode(model: &str, batched: bool, lines: Arc<Vec<String>>) -> f64 {
    let clients: usize = env_or("ROSETTA_LOAD_CLIENTS", 200);
    let seconds: f64 = env_or("ROSETTA_LOAD_SECONDS", 60.0);
    let warmup: f64 = env_or("ROSETTA_LOAD_WARMUP", 5.0);
    let beam: Option<usize> = std::env::var("ROSETTA_LOAD_BEAM")
        .ok()
        .and_then(|b| b.parse().ok());
    let mut server = start_server(model, batched);
    let pid = server.child.id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = server.addr;
    let result = runtime.block_on(async move {
        // Wait for readiness (model loading).
        let ready_by = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = support::send(addr, "GET", "/ready", &[], b"").await
                && r.status == 200
            {
                break;
            }
            assert!(Instant::now() < ready_by, "the server did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let search = match beam {
            Some(b) => format!("beam {b} (ROSETTA_LOAD_BEAM)"),
            None => {
                let models = support::send(addr, "GET", "/v1/models", &[], b"")
                    .await
                    .map(|r| r.json())
                    .unwrap_or_default();
                format!(
                    "the model's own: beam {}, length penalty {}",
                    models[0]["beam"], models[0]["length_penalty"]
                )
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                tokio::spawn(client(
                    addr,
                    Arc::clone(&lines),
                    c,
                    beam,
                    Arc::clone(&stop),
                    Arc::clone(&record),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
        let rss_start = rss_kib(pid);
        record.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let mut rss_max = rss_start;
        let mut rss_trace = vec![rss_start];
        while started.elapsed().as_secs_f64() < seconds {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rss = rss_kib(pid);
            rss_max = rss_max.max(rss);
            if started.elapsed().as_secs_f64() >= 10.0 * rss_trace.len() as f64 {
                rss_trace.push(rss);
            }
        }
        let rss_end = rss_kib(pid);
        record.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let mut all = Outcome::default();
        for t in tasks {
            let o = t.await.unwrap();
            all.latencies.extend(o.latencies);
            all.ok += o.ok;
            all.client_errors += o.client_errors;
            all.server_errors += o.server_errors;
            all.io_errors += o.io_errors;
        }
        (all, elapsed, rss_start, rss_end, rss_max, rss_trace, search)
    });
    let (mut all, elapsed, rss_start, rss_end, rss_max, rss_trace, search) = result;
    // Graceful shutdown: SIGTERM, then the exit status.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = server.child.wait().map(|s| s.code());
    all.latencies.sort_by(f64::total_cmp);
    let per_second = all.ok as f64 / elapsed;
    println!(
        "{:>8}: {clients} clients, {elapsed:.1} s: {} ok ({per_second:.1} sentences/s), 4xx {}, 5xx {}, I/O errors {}; \
         latency p50 {:.1} ms, p99 {:.1} ms; server RSS start {:.1} MiB, end {:.1} MiB, max {:.1} MiB; exit {:?}",
        if batched { "batched" } else { "single" },
        all.ok,
        all.client_errors,
        all.server_errors,
        all.io_errors,
        percentile(&all.latencies, 0.5) * 1e3,
        percentile(&all.latencies, 0.99) * 1e3,
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        status.ok().flatten(),
    );
    let trace: Vec<String> = rss_trace
        .iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect();
    println!(
        "          search: {search}; server RSS every 10 s (MiB): {}",
        trace.join(" ")
    );
    per_second
}

fn main() {
    // `cargo bench` runs benches in the package directory; paths are relative to the workspace root.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Err(e) = std::env::set_current_dir(&root) {
        eprintln!("load: cannot enter {}: {e}", root.display());
        return;
    }
    // `cargo bench` passes --bench; nothing else is read from the command line.
    let Ok(model) = std::env::var("ROSETTA_LOAD_MODEL") else {
        eprintln!(
            "load: set ROSETTA_LOAD_MODEL to a model directory (e.g. runs/quickstart); skipped"
        );
        return;
    };
    let lines = Arc::new(lines());
    let modes = std::env::var("ROSETTA_LOAD_MODES").unwrap_or_else(|_| "batched,single".into());
    println!(
        "load test: model {model}, {} distinct input lines",
        lines.len()
    );
    let rounds: usize = env_or("ROSETTA_LOAD_ROUNDS", 1).max(1);
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        if rounds > 1 {
            println!("round {round} of {rounds}");
        }
        let mut rates = Vec::new();
        for mode in modes.split(',') {
            rates.push((
                mode == "batched",
                run_mode(&model, mode == "batched", Arc::clone(&lines)),
            ));
        }
        if let (Some(b), Some(s)) = (
            rates.iter().find(|r| r.0).map(|r| r.1),
            rates.iter().find(|r| !r.0).map(|r| r.1),
        ) {
            println!("throughput, batched / single: {:.2}×", b / s);
            ratios.push(b / s);
        }
    }
    if ratios.len() > 1 {
        let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let high = ratios.iter().copied().fold(0.0, f64::max);
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        println!(
            "throughput, batched / single, {} rounds: mean {mean:.2}×, range {low:.2}–{high:.2}×",
            ratios.len()
        );
    }
}
