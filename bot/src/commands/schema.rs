//! `bankbot schema`: the JSON Schemas editors validate YAML files against,
//! generated from the Rust types the loader uses.

use std::path::Path;

use crate::catalogue::files::{EvaluationFile, IntentFile, schema_json};
use crate::cli::SchemaArgs;

pub const INTENT_SCHEMA: &str = "intent.schema.json";
pub const EVALUATION_SCHEMA: &str = "evaluation.schema.json";

pub fn run(args: &SchemaArgs) -> anyhow::Result<bool> {
    let files = [
        (
            args.intents.join(INTENT_SCHEMA),
            schema_json::<IntentFile>(),
        ),
        (
            args.training_data.join(EVALUATION_SCHEMA),
            schema_json::<EvaluationFile>(),
        ),
    ];
    let mut fresh = true;
    for (path, content) in files {
        if args.check {
            if !is_current(&path, &content) {
                eprintln!(
                    "{} is out of date: run `bankbot schema` and commit the result",
                    path.display()
                );
                fresh = false;
            }
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            crate::atomic::write(&path, content.as_bytes())?;
            println!("wrote {}", path.display());
        }
    }
    Ok(fresh)
}

fn is_current(path: &Path, content: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|c| c == content)
}
