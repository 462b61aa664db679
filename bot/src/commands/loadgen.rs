//! `bankbot bench grpc`: the end-to-end load generator. It starts a
//! `bankbot serve` child (a fresh SQLite directory, or the given PostgreSQL
//! database), times cold start to SERVING, then for each N holds N
//! concurrent conversations (one customer each) and records per-turn latency
//! in an HDR histogram.
//!
//! - N = 1 runs closed-loop: the next turn goes as soon as the last is
//!   answered, so its latency is the unloaded turn latency.
//! - N > 1 offers `--rate` turns/s in total, each conversation on its own
//!   schedule (staggered). Latency is measured from the scheduled send time,
//!   so a slow server cannot hide queueing by delaying the next request
//!   (no coordinated omission).
//! - A final closed-loop run at the largest N shows the capacity.
//!
//! Prints turns/s, p50/p99/p999, errors and the server's RSS.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bankbot_proto::v1 as pb;
use bankbot_proto::v1::conversation_service_client::ConversationServiceClient;
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::transport::Channel;

use crate::cli::GrpcBenchArgs;
use crate::evalset;

pub fn run(args: &GrpcBenchArgs) -> anyhow::Result<bool> {
    let texts: Vec<String> = match evalset::load(&args.data) {
        Ok(rows) => rows.into_iter().map(|r| r.text).collect(),
        Err(d) => bail!("{d}"),
    };
    let work = tempfile::tempdir().context("temporary data directory")?;
    let secret = work.path().join("secret");
    std::fs::write(&secret, hex_secret()).context("writing the benchmark secret")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let (mut child, addr) = spawn_server(args, work.path(), &secret)?;
    let result = runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        wait_serving(channel.clone()).await?;
        let cold_start = started.elapsed();
        println!(
            "backend: {}; cold start to SERVING: {:.0} ms",
            if args.database_url.is_some() {
                "postgres"
            } else {
                "sqlite"
            },
            cold_start.as_secs_f64() * 1000.0
        );
        let secret_bytes = std::fs::read(&secret)?;
        let mut runs = Vec::new();
        println!(
            "{:>5} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "N", "offered", "turns", "turns/s", "p50 ms", "p99 ms", "p999 ms", "errors"
        );
        let mut plan: Vec<(usize, f64)> = args
            .conversations
            .iter()
            .map(|&n| (n, if n == 1 { 0.0 } else { args.rate }))
            .collect();
        if let Some(&max) = args.conversations.iter().max() {
            plan.push((max, 0.0));
        }
        for (n, rate) in plan {
            let r = load(
                channel.clone(),
                &secret_bytes,
                &texts,
                n,
                rate,
                args.seconds,
            )
            .await?;
            println!(
                "{:>5} {:>10} {:>8} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                n,
                if rate > 0.0 {
                    format!("{rate:.0}/s")
                } else {
                    "closed".into()
                },
                r.turns,
                r.per_second,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.errors
            );
            runs.push(r);
        }
        anyhow::Ok((cold_start, runs))
    });
    let (rss, peak) = super::bench::rss_mib_of(&child.id().to_string());
    let _ = child.kill();
    let _ = child.wait();
    let (cold_start, runs) = result?;
    println!("server RSS: {rss:.0} MiB (peak {peak:.0} MiB)");
    if let Some(path) = &args.json {
        let doc = json!({
            "backend": if args.database_url.is_some() { "postgres" } else { "sqlite" },
            "cold_start_ms": cold_start.as_secs_f64() * 1000.0,
            "server_rss_mib": rss,
            "server_peak_rss_mib": peak,
            "runs": runs.iter().map(|r| json!({
                "conversations": r.conversations,
                "offered_per_second": r.offered,
                "turns": r.turns,
                "turns_per_second": r.per_second,
                "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms,
                "p999_ms": r.p999_ms,
                "errors": r.errors,
            })).collect::<Vec<_>>(),
        });
        crate::atomic::write(path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(runs.iter().all(|r| r.errors == 0))
}

#[derive(Debug)]
struct Run {
    conversations: usize,
    /// Offered turns/s (0: closed loop).
    offered: f64,
    turns: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
}

fn hex_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

fn spawn_server(
    args: &GrpcBenchArgs,
    data_dir: &std::path::Path,
    secret: &std::path::Path,
) -> anyhow::Result<(Child, std::net::SocketAddr)> {
    let exe = std::env::current_exe().context("locating the bankbot binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", ""])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--jwt-hs256-secret-file")
        .arg(secret)
        .args(["--jwt-issuer", "bench", "--jwt-audience", "bench"])
        .env("BANKBOT_CUSTOMER_RATE_PER_SECOND", "100000")
        .env("BANKBOT_CUSTOMER_BURST", "100000")
        .env("BANKBOT_SQLITE_SYNCHRONOUS", &args.sqlite_synchronous)
        .env("BANKBOT_LOG_LEVEL", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("BANKBOT_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(m) = &args.model {
        cmd.arg("--model").arg(m);
    }
    if let Some(url) = &args.database_url {
        cmd.env("DATABASE_URL", url);
    }
    let mut child = cmd.spawn().context("starting bankbot serve")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(a) = line.strip_prefix("bankbot: listening on ") {
                    break a.parse()?;
                }
            }
            _ => bail!("the server exited before listening"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((child, addr))
}

async fn wait_serving(channel: Channel) -> anyhow::Result<()> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Ok(r) = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            && r.into_inner().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("the server did not become SERVING")
}

fn token(secret: &[u8], sub: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    Ok(crate::auth::mint_hs256(
        secret.trim_ascii_end(),
        &json!({"iss": "bench", "aud": "bench", "sub": sub, "exp": now + 3600}),
    )?)
}

fn request<T>(token: &str, msg: T) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(r)
}

/// N conversations for `seconds` (after a one-second warm-up), offering
/// `rate` turns/s in total (0: closed loop).
async fn load(
    channel: Channel,
    secret: &[u8],
    texts: &[String],
    n: usize,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<Run> {
    // Each conversation's interval between turns, and its offset in it.
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(n as f64 / rate));
    let texts: Arc<Vec<String>> = Arc::new(texts.to_vec());
    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs_f64(seconds);
    let mut tasks = Vec::with_capacity(n);
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let begin = Instant::now() + Duration::from_millis(200);
    for i in 0..n {
        let mut client = ConversationServiceClient::new(channel.clone());
        let who = format!("bench-{run_id}-{i}");
        let tok = token(secret, &who)?;
        let texts = texts.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            let id = client
                .start_conversation(request(
                    &tok,
                    pb::StartConversationRequest {
                        channel: "bench".into(),
                        locale: String::new(),
                        metadata: Default::default(),
                    },
                )?)
                .await?
                .into_inner()
                .conversation_id;
            tokio::time::sleep_until(begin.into()).await;
            let measure_from = begin + warmup;
            let end = measure_from + measure;
            let mut k = i * 7;
            let mut scheduled = match interval {
                Some(iv) => begin + iv.mul_f64(i as f64 / n as f64),
                None => begin,
            };
            loop {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(scheduled.into()).await;
                    scheduled += iv;
                }
                let now = Instant::now();
                if now >= end {
                    break;
                }
                k += 1;
                let text = texts[k % texts.len()].clone();
                // Paced: from the time the turn was due. Closed loop: now.
                let t = match interval {
                    Some(iv) => scheduled - iv,
                    None => Instant::now(),
                };
                let r = client
                    .send_message(request(
                        &tok,
                        pb::SendMessageRequest {
                            conversation_id: id.clone(),
                            client_message_id: format!("m{k}"),
                            text,
                        },
                    )?)
                    .await;
                let took = t.elapsed();
                if t >= measure_from {
                    match r {
                        Ok(_) => {
                            hist.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1))?
                        }
                        Err(_) => errors += 1,
                    }
                }
            }
            anyhow::Ok((hist, errors))
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await??;
        hist.add(&h)?;
        errors += e;
    }
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    Ok(Run {
        conversations: n,
        offered: rate,
        turns: hist.len(),
        per_second: hist.len() as f64 / measure.as_secs_f64(),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        errors,
    })
}
