//! `bankbot train`: catalogue -> trained model directory.

use anyhow::bail;
use bankbot_models::encoder::FeatureSpec;
use bankbot_models::finetune::FineTuneConfig;
use bankbot_models::metrics::OUT_OF_SCOPE;
use bankbot_models::train::{LabelledText, TrainConfig};

use crate::catalogue;
use crate::cli::TrainArgs;
use crate::evalset;
use crate::nlu;
use crate::paths::Paths;

pub fn run(paths: &Paths, args: &TrainArgs) -> anyhow::Result<bool> {
    let (cat, warnings) = match catalogue::load_dir(&args.intents) {
        Ok(ok) => ok,
        Err(d) => bail!("{d}\nnothing was trained"),
    };
    if !warnings.is_empty() {
        eprintln!(
            "{} warning(s) in the catalogue; `bankbot check {}` lists them",
            warnings.len(),
            args.intents.display()
        );
    }
    let calibration: Option<Vec<LabelledText>> = match &args.calibration {
        Some(file) => match evalset::load(file) {
            Ok(rows) => {
                // A label the catalogue lacks would count every such row as a
                // miss and skew the threshold: refuse it by name and line.
                if let Some(r) = rows.iter().find(|r| {
                    r.label != OUT_OF_SCOPE && !cat.intents.iter().any(|i| i.name == r.label)
                }) {
                    bail!(
                        "{}: error: intent `{}` is not in the catalogue {}\nnothing was trained",
                        r.source,
                        r.label,
                        args.intents.display()
                    );
                }
                if !rows.iter().any(|r| r.label != OUT_OF_SCOPE) {
                    bail!(
                        "{}: error: no in-scope rows to calibrate on\nnothing was trained",
                        file.display()
                    );
                }
                Some(rows.iter().map(evalset::EvalRow::labelled).collect())
            }
            Err(d) => bail!("{d}\nnothing was trained"),
        },
        None => None,
    };
    if !(0.0..=10.0).contains(&args.oos_weight) {
        bail!("--oos-weight must be between 0 and 10");
    }
    let precision = args.precision.unwrap_or_else(nlu::default_precision);
    let fine_tune = args.fine_tune.then(|| FineTuneConfig {
        layers: args.tune_layers,
        epochs: args.tune_epochs,
        learning_rate: args.tune_learning_rate,
        seed: args.seed,
        ..FineTuneConfig::default()
    });
    if fine_tune
        .as_ref()
        .is_some_and(|f| f.epochs == 0 || !(f.learning_rate > 0.0 && f.learning_rate < 1.0))
    {
        bail!("--tune-epochs must be at least 1 and --tune-learning-rate between 0 and 1");
    }
    let features = match &args.layers {
        None => None,
        Some(layers) => {
            let mut layers = layers.clone();
            layers.sort_unstable();
            layers.dedup();
            if layers.is_empty() {
                bail!("--layers needs at least one layer number");
            }
            Some(FeatureSpec { layers, precision })
        }
    };
    let (encoder, tuned) = match fine_tune {
        None => (nlu::load_encoder(paths, true, precision)?, None),
        Some(ft) => {
            let (encoder, weights) =
                nlu::fine_tune_encoder(paths, &cat, &ft, features.as_ref(), precision)?;
            (encoder, Some((ft, weights)))
        }
    };
    let cfg = TrainConfig {
        seed: args.seed,
        oos_weight: args.oos_weight,
        features,
        ..TrainConfig::default()
    };
    let artifact = nlu::train_catalogue(
        &cat,
        &encoder,
        paths,
        &args.out,
        calibration.as_deref(),
        &cfg,
        tuned,
    )?;
    let v = &artifact.card.validation;
    eprintln!(
        "trained {} intents on {} examples in {:.1}s -> {}",
        artifact.card.training_data.intents,
        artifact.card.training_data.examples,
        artifact.card.training_seconds,
        args.out.display()
    );
    let oos = match (v.in_scope_accuracy, v.oos_recall) {
        (Some(a), Some(r)) => format!(
            ", in-scope accuracy {:.2}%, out-of-scope recall {:.2}%",
            a * 100.0,
            r * 100.0
        ),
        _ => String::new(),
    };
    eprintln!(
        "{} ({} rows): accuracy {:.2}%, macro-F1 {:.2}%{oos}, ECE {:.4}",
        artifact.calibration.source,
        v.rows,
        v.accuracy * 100.0,
        v.macro_f1 * 100.0,
        v.ece
    );
    Ok(true)
}
