//! `bankbot eval`: a model against labelled utterances (or k-fold
//! cross-validation of a catalogue), with reports and CI gates.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use anyhow::{Context, bail};
use bankbot_models::artifact::Artifact;
use bankbot_models::base::sha256_hex;
use bankbot_models::classifier::IntentModel;
use bankbot_models::encoder::Encoder;
use bankbot_models::entities::eval::EntityReport;
use bankbot_models::entities::{self, Date};
use bankbot_models::metrics::{self, OUT_OF_SCOPE};
use bankbot_models::rng::SplitMix64;
use bankbot_models::train::{self, LabelledText, TrainConfig};

use crate::catalogue::{self, Source};
use crate::cli::{EvalArgs, Format};
use crate::evalset;
use crate::nlu;
use crate::paths::Paths;
use crate::report::{self, Baseline, DataRef, EvalReport, Gates, Miss, ModelRef};

pub fn run(paths: &Paths, args: &EvalArgs) -> anyhow::Result<bool> {
    let gates = gates(args)?;
    let report = match (args.folds, &args.data) {
        (Some(k), _) => cross_validate(paths, &args.intents, k)?,
        (None, Some(data)) => {
            let (rows, setting) = match evalset::load_with_setting(data) {
                Ok(loaded) => loaded,
                Err(d) => bail!("{d}"),
            };
            let (encoder, artifact) = nlu::load_model_and_encoder(paths, &args.model, true)?;
            let labelled: Vec<LabelledText> = rows.iter().map(evalset::EvalRow::labelled).collect();
            let sources: Vec<Source> = rows.iter().map(|r| r.source.clone()).collect();
            let bytes =
                std::fs::read(data).with_context(|| format!("reading {}", data.display()))?;
            let data_ref = DataRef {
                path: data.display().to_string(),
                rows: rows.len(),
                hash: sha256_hex(&bytes),
            };
            let mut report = evaluate(
                &encoder,
                &artifact,
                &args.model.display().to_string(),
                &labelled,
                &sources,
                data_ref,
            )?;
            report.rows_seen_in_training = seen_in_training(&args.intents, &artifact, &labelled);
            report.entities = entity_report(&rows, setting, args.reference_date.as_deref())?;
            report
        }
        (None, None) => bail!("give --data FILE, or --folds K for cross-validation"),
    };
    match args.format {
        Format::Table => print!("{}", report::table(&report)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Junit => print!("{}", report::junit(&report, &gates)),
        Format::Markdown => print!("{}", report::markdown(&report)),
    }
    if let Some(dir) = &args.report_dir {
        report::write_dir(dir, &report)
            .with_context(|| format!("writing the report to {}", dir.display()))?;
    }
    if let Some(b) = gates.baseline.as_ref().and_then(|b| b.data.as_ref())
        && b.hash != report.data.hash
    {
        eprintln!(
            "note: the baseline was measured on other data (sha256 {}…); the comparison is only indicative",
            b.hash.chars().take(12).collect::<String>()
        );
    }
    match gates.check(&report) {
        Ok(()) => Ok(true),
        Err(reason) => {
            eprintln!("eval gate failed: {reason}");
            Ok(false)
        }
    }
}

fn gates(args: &EvalArgs) -> anyhow::Result<Gates> {
    for (name, v) in [
        ("--min-accuracy", args.min_accuracy),
        ("--min-macro-f1", args.min_macro_f1),
        ("--min-oos-recall", args.min_oos_recall),
        ("--min-entity-f1", args.min_entity_f1),
        ("--max-drop", Some(args.max_drop)),
    ] {
        if let Some(v) = v
            && !(0.0..=1.0).contains(&v)
        {
            bail!("{name} must be a fraction between 0 and 1, got {v}");
        }
    }
    let baseline = match &args.baseline {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the baseline {}", p.display()))?;
            Some(
                serde_json::from_str::<Baseline>(&text)
                    .with_context(|| format!("{} is not an eval JSON report", p.display()))?,
            )
        }
        None => None,
    };
    Ok(Gates {
        min_accuracy: args.min_accuracy,
        min_macro_f1: args.min_macro_f1,
        min_oos_recall: args.min_oos_recall,
        min_entity_f1: args.min_entity_f1,
        baseline,
        max_drop: args.max_drop,
    })
}

/// Predictions and metrics of one model on labelled rows.
fn evaluate(
    encoder: &Encoder,
    artifact: &Artifact,
    model_path: &str,
    rows: &[LabelledText],
    sources: &[Source],
    data: DataRef,
) -> anyhow::Result<EvalReport> {
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let feats = encoder.embed_all(&texts, &artifact.model.features, 2048, |_| {})?;
    let (probs, signals) = artifact.model.signals(&feats);
    let preds: Vec<_> = probs
        .iter()
        .zip(&signals)
        .map(|(p, s)| artifact.model.decide(p, s, 1))
        .collect();
    let report = build_report(
        &artifact.model,
        rows,
        sources,
        &preds,
        data,
        model_ref(artifact, model_path),
    );
    Ok(report)
}

/// How many rows are (after normalisation) examples of the catalogue in
/// `intents`, out-of-scope ones included. `None`, with a note, when that
/// catalogue is not the one the model was trained on: then nothing is known.
fn seen_in_training(intents: &Path, artifact: &Artifact, rows: &[LabelledText]) -> Option<usize> {
    let cat = catalogue::load_dir(intents).ok().map(|(cat, _)| cat);
    match cat.filter(|c| c.data_hash() == artifact.card.training_data.hash) {
        Some(cat) => {
            let trained: HashSet<String> = cat
                .labelled()
                .iter()
                .map(|(text, _)| catalogue::normalise(text))
                .collect();
            Some(
                rows.iter()
                    .filter(|r| trained.contains(&catalogue::normalise(&r.text)))
                    .count(),
            )
        }
        None => {
            eprintln!(
                "note: {} is not the catalogue this model was trained on (pass it with \
                 --intents); rows were not checked against the training examples",
                intents.display()
            );
            None
        }
    }
}

fn model_ref(a: &Artifact, path: &str) -> ModelRef {
    ModelRef {
        path: path.to_owned(),
        trainer: a.card.trainer.clone(),
        base_model: a.card.base_model.name.clone(),
        base_model_id: a.card.base_model.hashes.id(),
        training_data_hash: a.card.training_data.hash.clone(),
    }
}

fn build_report(
    model: &IntentModel,
    rows: &[LabelledText],
    sources: &[Source],
    preds: &[bankbot_models::classifier::Prediction],
    data: DataRef,
    model_ref: ModelRef,
) -> EvalReport {
    let outcomes = train::outcomes(rows, preds);
    let known: BTreeSet<&str> = model
        .labels
        .iter()
        .map(String::as_str)
        .chain([OUT_OF_SCOPE])
        .collect();
    let unknown: BTreeSet<String> = rows
        .iter()
        .filter(|r| !known.contains(r.label.as_str()))
        .map(|r| r.label.clone())
        .collect();
    let misses = rows
        .iter()
        .zip(preds)
        .zip(sources)
        .filter(|((r, p), _)| r.label != p.intent.name)
        .map(|((r, p), s)| Miss {
            text: r.text.clone(),
            expected: r.label.clone(),
            predicted: p.intent.name.clone(),
            confidence: p.intent.confidence,
            location: s.to_string(),
        })
        .collect();
    EvalReport {
        metrics: metrics::compute(&outcomes, 20, 3),
        model: model_ref,
        data,
        unknown_intents: unknown.into_iter().collect(),
        rows_seen_in_training: None,
        entities: None,
        misses,
    }
}

/// Runs the entity extractors over annotated rows, against the file's
/// reference date and payees (the flag's date wins; default today).
fn entity_report(
    rows: &[evalset::EvalRow],
    setting: evalset::EntitySetting,
    reference_date: Option<&str>,
) -> anyhow::Result<Option<EntityReport>> {
    if rows.iter().all(|r| r.entities.is_empty()) {
        return Ok(None);
    }
    let date = match reference_date {
        Some(s) => Date::parse_iso(s).map_err(|e| anyhow::anyhow!("--reference-date: {e}"))?,
        None => setting.reference_date.unwrap_or_else(Date::today_utc),
    };
    let mut ctx = entities::Context::new(date);
    ctx.payees = setting.payees;
    let predicted: Vec<Vec<entities::Entity>> = rows
        .iter()
        .map(|r| entities::extract(&r.text, &ctx))
        .collect();
    Ok(Some(entities::eval::evaluate(
        rows.iter()
            .zip(&predicted)
            .map(|(r, p)| (r.text.as_str(), r.entities.as_slice(), p.as_slice())),
    )))
}

/// Stratified k-fold cross-validation of the catalogue with the default trainer.
fn cross_validate(paths: &Paths, intents: &Path, k: usize) -> anyhow::Result<EvalReport> {
    if !(2..=20).contains(&k) {
        bail!("--folds must be between 2 and 20");
    }
    let cat = match catalogue::load_dir(intents) {
        Ok((c, _)) => c,
        Err(d) => bail!("{d}"),
    };
    let rows: Vec<LabelledText> = cat
        .labelled()
        .into_iter()
        .map(|(t, l)| LabelledText::new(t, l))
        .collect();
    let sources: Vec<Source> = cat
        .intents
        .iter()
        .chain(cat.out_of_scope.as_ref())
        .flat_map(|i| i.examples.iter().map(|e| e.source.clone()))
        .collect();
    let encoder = nlu::load_encoder(paths, true, nlu::default_precision())?;
    let cfg = TrainConfig::default();
    let spec = train::default_features(encoder.num_layers(), encoder.precision());
    let mut cache = nlu::feature_cache(paths, &encoder, &spec);
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let pb = nlu::progress_bar();
    let feats = train::features(
        &encoder,
        &texts,
        &spec,
        cache.as_mut(),
        cfg.token_budget,
        nlu::on_train_event(&pb),
    )?;
    // Stratified assignment: each label's rows are shuffled and dealt round-robin.
    let mut fold = vec![0usize; rows.len()];
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_label.entry(&r.label).or_default().push(i);
    }
    let mut rng = SplitMix64::new(cfg.seed);
    for idx in by_label.values_mut() {
        rng.shuffle(idx);
        for (n, &i) in idx.iter().enumerate() {
            fold[i] = n % k;
        }
    }
    let mut preds = vec![None; rows.len()];
    let mut last = None;
    for f in 0..k {
        let (train_i, test_i): (Vec<usize>, Vec<usize>) =
            (0..rows.len()).partition(|&i| fold[i] != f);
        let tr: Vec<LabelledText> = train_i.iter().map(|&i| rows[i].clone()).collect();
        let tr_f: Vec<Vec<f32>> = train_i.iter().map(|&i| feats[i].clone()).collect();
        pb.set_message(format!("fold {}/{k}", f + 1));
        let a = train::train_on_features(&tr, &tr_f, None, &cfg, encoder.hashes(), &spec, |_| {})?;
        let te_f: Vec<Vec<f32>> = test_i.iter().map(|&i| feats[i].clone()).collect();
        for (&i, p) in test_i.iter().zip(a.model.predict(&te_f, 1)) {
            preds[i] = Some(p);
        }
        last = Some(a);
    }
    pb.finish_and_clear();
    let preds: Vec<_> = preds
        .into_iter()
        .map(|p| p.expect("every row is in exactly one fold"))
        .collect();
    let Some(a) = last else { bail!("no folds ran") };
    let data = DataRef {
        path: format!("{} ({k}-fold cross-validation)", intents.display()),
        rows: rows.len(),
        hash: cat.data_hash(),
    };
    Ok(build_report(
        &a.model,
        &rows,
        &sources,
        &preds,
        data,
        model_ref(&a, "(cross-validation)"),
    ))
}
