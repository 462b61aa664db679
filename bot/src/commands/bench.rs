//! `bankbot bench`: speed and accuracy figures for BENCHMARKS.md.
//!
//! `latency` times the real serving path (inference engine thread, dynamic
//! batching) on the held-out utterances: every request is a fresh encoder
//! pass, nothing is cached. `clinc150` trains the default trainer on
//! CLINC150's train split, chooses thresholds on val + oos_val only, and
//! reports test accuracy and out-of-scope recall.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bankbot_models::engine::{Engine, EngineConfig};
use bankbot_models::finetune::{self, FineTuneConfig};
use bankbot_models::metrics::OUT_OF_SCOPE;
use bankbot_models::train::{self, LabelledText, TrainConfig};
use serde_json::json;

use crate::cli::{BenchCommand, Clinc150Args, LatencyArgs};
use crate::evalset;
use crate::nlu;
use crate::paths::Paths;

pub fn run(paths: &Paths, cmd: BenchCommand) -> anyhow::Result<bool> {
    match cmd {
        BenchCommand::Latency(args) => latency(paths, &args),
        BenchCommand::Clinc150(args) => clinc150(paths, &args),
        BenchCommand::Grpc(args) => super::loadgen::run(&args),
        BenchCommand::Connector(args) => super::connector_bench::run(&args),
        BenchCommand::Queue(args) => super::queue_bench::run(&args),
    }
}

/// (resident, peak) memory of this process in MiB, from /proc.
pub fn rss_mib() -> (f64, f64) {
    rss_mib_of("self")
}

/// (resident, peak) memory in MiB of the process `pid` (or `self`), from /proc.
pub fn rss_mib_of(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The `p` quantile (0..=1) of sorted durations, nearest rank.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn latency(paths: &Paths, args: &LatencyArgs) -> anyhow::Result<bool> {
    let texts: Vec<String> = match evalset::load(&args.data) {
        Ok(rows) => rows.into_iter().map(|r| r.text).collect(),
        Err(d) => bail!("{d}"),
    };
    // Make sure a trained model exists before timing the load.
    if args.source.model.is_none() {
        nlu::ensure_default_model(
            paths,
            &args.source.intents,
            std::path::Path::new(crate::paths::DEFAULT_MODEL_DIR),
        )?;
    }
    let model_dir = args
        .source
        .model
        .clone()
        .unwrap_or_else(|| crate::paths::DEFAULT_MODEL_DIR.into());
    let t0 = Instant::now();
    let (encoder, artifact) = nlu::load_model_and_encoder(paths, &model_dir, false)?;
    let precision = encoder.precision();
    let engine = Arc::new(Engine::start(
        encoder,
        artifact.model,
        EngineConfig::default(),
    )?);
    let load = t0.elapsed();
    engine.classify_blocking("warm up the threads")?;

    // Single utterances, one at a time.
    let mut single = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let t = Instant::now();
        engine.classify_blocking(&texts[i % texts.len()])?;
        single.push(t.elapsed());
    }
    single.sort();
    println!(
        "encoder: {} ({})",
        precision.as_str(),
        match precision {
            bankbot_models::encoder::Precision::Int8 =>
                format!("{:?} kernels", bankbot_models::fast::Isa::detect()),
            bankbot_models::encoder::Precision::F32 => "candle".to_owned(),
        }
    );
    let tokens: f64 = texts
        .iter()
        .map(|t| t.split_whitespace().count() as f64)
        .sum::<f64>()
        / texts.len() as f64;
    println!(
        "model load (encoder + head + engine start): {:.0} ms",
        ms(load)
    );
    println!(
        "single utterance ({} requests, mean {tokens:.1} words): p50 {:.2} ms, p99 {:.2} ms",
        args.requests,
        ms(percentile(&single, 0.5)),
        ms(percentile(&single, 0.99))
    );
    let mut runs = Vec::new();
    for &callers in &args.concurrency {
        let callers = callers.max(1);
        let per_caller = (texts.len() * 2 / callers).max(20);
        let t = Instant::now();
        let handles: Vec<_> = (0..callers)
            .map(|c| {
                let engine = Arc::clone(&engine);
                let texts = texts.clone();
                std::thread::spawn(move || -> anyhow::Result<Vec<(Duration, usize)>> {
                    let mut lat = Vec::with_capacity(per_caller);
                    for i in 0..per_caller {
                        let s = Instant::now();
                        let r = engine.classify_blocking(&texts[(c * 7919 + i) % texts.len()])?;
                        lat.push((s.elapsed(), r.batch_size));
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut lat = Vec::new();
        for h in handles {
            lat.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a bench thread panicked"))??,
            );
        }
        let wall = t.elapsed();
        let mean_batch = lat.iter().map(|(_, b)| *b as f64).sum::<f64>() / lat.len() as f64;
        let mut d: Vec<Duration> = lat.into_iter().map(|(d, _)| d).collect();
        d.sort();
        let rate = d.len() as f64 / wall.as_secs_f64();
        println!(
            "{callers:>3} concurrent callers: {rate:7.1} utterances/s, p50 {:.2} ms, p99 {:.2} ms, mean batch {mean_batch:.1}",
            ms(percentile(&d, 0.5)),
            ms(percentile(&d, 0.99))
        );
        runs.push(json!({ "callers": callers, "utterances_per_s": rate, "p50_ms": ms(percentile(&d, 0.5)), "p99_ms": ms(percentile(&d, 0.99)), "mean_batch": mean_batch }));
    }
    let (rss, peak) = rss_mib();
    println!("memory: RSS {rss:.0} MiB (peak {peak:.0} MiB)");
    if let Some(path) = &args.json {
        let report = json!({
            "encoder": precision.as_str(),
            "kernels": format!("{:?}", bankbot_models::fast::Isa::detect()),
            "load_ms": ms(load),
            "single": { "requests": args.requests, "p50_ms": ms(percentile(&single, 0.5)), "p99_ms": ms(percentile(&single, 0.99)) },
            "concurrent": runs,
            "rss_mib": rss,
            "peak_rss_mib": peak,
        });
        crate::atomic::write(
            path,
            (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
        )?;
    }
    Ok(true)
}

fn clinc150(paths: &Paths, args: &Clinc150Args) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&args.data)
        .with_context(|| format!("reading {} (CLINC150 data_full.json)", args.data.display()))?;
    let data: serde_json::Value =
        serde_json::from_str(&text).context("data_full.json is not JSON")?;
    let domains: Option<BTreeSet<String>> = if args.banking_only {
        let path = args.data.with_file_name("domains.json");
        let d: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?;
        Some(
            ["banking", "credit_cards"]
                .iter()
                .flat_map(|k| d[k].as_array().cloned().unwrap_or_default())
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        )
    } else {
        None
    };
    let split = |keys: &[&str]| -> anyhow::Result<Vec<LabelledText>> {
        let mut out = Vec::new();
        for k in keys {
            let rows = data[k]
                .as_array()
                .with_context(|| format!("data_full.json has no `{k}` list"))?;
            for r in rows {
                let (Some(t), Some(l)) = (r[0].as_str(), r[1].as_str()) else {
                    bail!("malformed row in `{k}`")
                };
                let label = if l == "oos" { OUT_OF_SCOPE } else { l };
                if label != OUT_OF_SCOPE && domains.as_ref().is_some_and(|d| !d.contains(label)) {
                    continue;
                }
                out.push(LabelledText::new(t, label));
            }
        }
        Ok(out)
    };
    let train_rows = split(&["train", "oos_train"])?;
    let cal_rows = split(&["val", "oos_val"])?;
    let test_rows = split(&["test", "oos_test"])?;
    let precision = args.precision.unwrap_or_else(nlu::default_precision);
    let t_tune = Instant::now();
    let (encoder, tuned) = if args.fine_tune {
        let dir = nlu::ensure_base_model(paths, true)?;
        let base = bankbot_models::base::BaseModelDir::open(&dir)?;
        let ft = FineTuneConfig {
            layers: args.tune_layers,
            epochs: args.tune_epochs,
            seed: args.seed,
            ..FineTuneConfig::default()
        };
        let spec = train::default_features(base.config.num_hidden_layers, precision);
        let pb = nlu::progress_bar();
        let device = bankbot_models::candle_device();
        let weights = finetune::fine_tune(
            &base,
            &train_rows,
            &spec.layers,
            &ft,
            &device,
            nlu::on_train_event(&pb),
        )?;
        pb.finish_and_clear();
        eprintln!("fine-tuning loss per epoch: {:?}", weights.epoch_losses);
        (
            bankbot_models::encoder::Encoder::load_tuned(&dir, &device, precision, Some(&weights))?,
            true,
        )
    } else {
        (nlu::load_encoder(paths, true, precision)?, false)
    };
    let tune_s = t_tune.elapsed().as_secs_f64();
    let cfg = TrainConfig {
        seed: args.seed,
        ..TrainConfig::default()
    };
    let spec = train::default_features(encoder.num_layers(), encoder.precision());
    // Features of a fine-tuned encoder must not come from (or go into) the base model's cache.
    let mut cache = if tuned {
        None
    } else {
        nlu::feature_cache(paths, &encoder, &spec)
    };
    let pb = nlu::progress_bar();
    let t = Instant::now();
    let mut feats = |rows: &[LabelledText]| {
        let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        train::features(
            &encoder,
            &texts,
            &spec,
            cache.as_mut(),
            cfg.token_budget,
            nlu::on_train_event(&pb),
        )
    };
    let (tr_f, cal_f, te_f) = (feats(&train_rows)?, feats(&cal_rows)?, feats(&test_rows)?);
    let encode_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let artifact = train::train_on_features(
        &train_rows,
        &tr_f,
        Some((&cal_rows, &cal_f)),
        &cfg,
        encoder.hashes(),
        &spec,
        nlu::on_train_event(&pb),
    )?;
    let train_s = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let preds = artifact.model.predict(&te_f, 1);
    let (mut in_ok, mut in_n, mut raw_ok, mut oos_ok, mut oos_n, mut flagged, mut flagged_ok) =
        (0, 0, 0, 0, 0, 0, 0);
    for (r, p) in test_rows.iter().zip(&preds) {
        if p.out_of_scope {
            flagged += 1;
        }
        if r.label == OUT_OF_SCOPE {
            oos_n += 1;
            if p.out_of_scope {
                oos_ok += 1;
                flagged_ok += 1;
            }
        } else {
            in_n += 1;
            in_ok += usize::from(!p.out_of_scope && p.intent.name == r.label);
            raw_ok += usize::from(p.ranking[0].name == r.label);
        }
    }
    let f = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let result = json!({
        "subset": if args.banking_only { "banking+credit_cards" } else { "all 150 intents" },
        "train_rows": train_rows.len(),
        "calibration_rows": cal_rows.len(),
        "test_in_scope": in_n,
        "test_out_of_scope": oos_n,
        "in_scope_accuracy": f(in_ok, in_n),
        "in_scope_accuracy_without_rejection": f(raw_ok, in_n),
        "oos_recall": f(oos_ok, oos_n),
        "oos_precision": f(flagged_ok, flagged),
        "fine_tune": args.fine_tune.then(|| json!({ "layers": args.tune_layers, "epochs": args.tune_epochs, "seconds": tune_s })),
        "encode_seconds": encode_s,
        "train_seconds": train_s,
        "head": artifact.card.head,
        "temperature": artifact.calibration.temperature,
    });
    println!(
        "CLINC150 ({}): in-scope accuracy {:.2}% (without rejection {:.2}%), out-of-scope recall {:.2}%, precision {:.2}%",
        result["subset"].as_str().unwrap_or_default(),
        f(in_ok, in_n) * 100.0,
        f(raw_ok, in_n) * 100.0,
        f(oos_ok, oos_n) * 100.0,
        f(flagged_ok, flagged) * 100.0
    );
    println!(
        "train {} rows, thresholds on {} val rows; encode {encode_s:.1}s, train {train_s:.1}s",
        train_rows.len(),
        cal_rows.len()
    );
    if let Some(path) = &args.json {
        crate::atomic::write(
            path,
            (serde_json::to_string_pretty(&result)? + "\n").as_bytes(),
        )?;
    }
    Ok(true)
}
