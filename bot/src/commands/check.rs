//! `bankbot check`: validate a catalogue. Errors and warnings are printed as
//! `path:line:col: severity: message`; with the base model present, examples
//! of different intents that mean nearly the same are reported too.

use bankbot_models::encoder::{Encoder, FeatureSpec};
use bankbot_models::train::{features, to_tensor};

use crate::catalogue::{self, Catalogue, Example, normalise};
use crate::cli::CheckArgs;
use crate::diag::{self, Diagnostic};
use crate::nlu;
use crate::paths::Paths;

pub fn run(paths: &Paths, args: &CheckArgs) -> anyhow::Result<bool> {
    if !(args.near_duplicate > 0.0 && args.near_duplicate <= 1.0) {
        anyhow::bail!(
            "--near-duplicate must be a cosine similarity in (0, 1], got {}",
            args.near_duplicate
        );
    }
    let (cat, mut diags) = match catalogue::load_dir(&args.dir) {
        Ok(ok) => ok,
        Err(d) => {
            for x in &d.0 {
                println!("{x}");
            }
            println!(
                "{}: {} error(s), {} warning(s)",
                args.dir.display(),
                d.errors(),
                d.warnings()
            );
            return Ok(false);
        }
    };
    // A check that could not run must not let --deny-warnings pass.
    let mut check_failed = false;
    match near_duplicates(paths, &cat, args.near_duplicate) {
        Ok(Some(found)) => diags.extend(found),
        Ok(None) => eprintln!(
            "note: base model not installed at {}; near-duplicate check skipped (`bankbot model fetch` enables it)",
            paths.base_model.display()
        ),
        Err(e) => {
            check_failed = true;
            eprintln!("warning: the near-duplicate check failed: {e:#}");
        }
    }
    diag::sort(&mut diags);
    for d in &diags {
        println!("{d}");
    }
    let warnings = diags.iter().filter(|d| !d.is_error()).count();
    println!(
        "{}: {} intents, {} examples{}: 0 errors, {warnings} warning(s)",
        args.dir.display(),
        cat.intents.len(),
        cat.example_count(),
        cat.out_of_scope.as_ref().map_or(String::new(), |o| format!(
            " ({} out of scope)",
            o.examples.len()
        )),
    );
    Ok(!(args.deny_warnings && (warnings > 0 || check_failed)))
}

/// Pairs of examples from different intents whose sentence embeddings are at
/// least `threshold` similar. `None` when the base model is not installed.
fn near_duplicates(
    paths: &Paths,
    cat: &Catalogue,
    threshold: f32,
) -> anyhow::Result<Option<Vec<Diagnostic>>> {
    if !paths.base_model.join("model.safetensors").is_file() {
        return Ok(None);
    }
    let precision = nlu::default_precision();
    let encoder = Encoder::load(
        &paths.base_model,
        &bankbot_models::candle_device(),
        precision,
    )?;
    let all: Vec<(&str, &Example)> = cat
        .intents
        .iter()
        .chain(cat.out_of_scope.as_ref())
        .flat_map(|i| i.examples.iter().map(move |e| (i.name.as_str(), e)))
        .collect();
    let texts: Vec<&str> = all.iter().map(|(_, e)| e.text()).collect();
    let spec = FeatureSpec::last(encoder.num_layers(), precision);
    let mut cache = nlu::feature_cache(paths, &encoder, &spec);
    let feats = features(&encoder, &texts, &spec, cache.as_mut(), 2048, |_| {})?;
    let x = to_tensor(&feats)?;
    let sims = x.matmul(&x.t()?)?.to_vec2::<f32>()?;
    let norm: Vec<String> = all.iter().map(|(_, e)| normalise(e.text())).collect();
    let mut out = Vec::new();
    for (j, (intent_j, ej)) in all.iter().enumerate() {
        // Report each later example once, against its most similar earlier one
        // (exact repeats are reported by the loader already).
        let best = (0..j)
            .filter(|&i| all[i].0 != *intent_j && norm[i] != norm[j])
            .max_by(|&a, &b| sims[j][a].total_cmp(&sims[j][b]));
        if let Some(i) = best.filter(|&i| sims[j][i] >= threshold) {
            let (intent_i, ei) = all[i];
            out.push(Diagnostic::warning(
                &ej.source.path,
                ej.source.pos,
                format!(
                    "near-duplicate of intent `{intent_i}` example {:?} at {} (similarity {:.3}): the model may confuse `{intent_i}` and `{intent_j}`",
                    ei.text(),
                    ei.source,
                    sims[j][i]
                ),
            ));
        }
    }
    Ok(Some(out))
}
